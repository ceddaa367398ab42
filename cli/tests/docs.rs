//! Every shell command in the docs runs here, so the docs cannot drift from the binary.
//!
//! # The convention (for anyone writing docs)
//!
//! - **What runs.** Every fenced block whose info string starts with `sh` in `README.md` and
//!   `docs/*.md`, block after block in document order. Each file gets its own fresh temporary
//!   directory, and the files run in parallel.
//! - **Where.** The temporary directory starts with copies of the checkout's `deploy/`,
//!   `docs/examples/` and `data/banking77/`, so commands written for the root of a checkout
//!   (`cp deploy/node.example.toml …`, `amble node ingest … docs/examples/people.jsonl`) work
//!   and cannot change the checkout.
//! - **`amble`** is the binary under test: a link to it sits first on `PATH`. No `AMBLE_*`
//!   variable leaks in from the environment of the test.
//! - **A block** runs as one `bash -euo pipefail` script: every command must exit 0, except a
//!   command whose (last) line ends with the comment `# exit N` (optionally followed by words),
//!   which must exit with exactly N — e.g. 3 for a read that consent or policy denies.
//!   Exported variables and the working directory carry over to the next block of the same
//!   file, as they would in one terminal.
//! - **```sh server** marks a long-running service (`amble node serve`, `amble coordinator
//!   serve`): one command, started in the background. The harness waits for its first line on
//!   stdout (services print `listening on …` once they accept connections), goes on with the
//!   next block, and after the file's last block stops it with SIGTERM — the way systemd stops
//!   it — and requires a clean exit. The prose around such a block says to run it in its own
//!   terminal or under a service manager.
//! - **Ports.** Services listen on fixed loopback ports, as a reader would configure them, so each
//!   file uses its own (operator.md 7443 and 9090; federation-operator.md 7450–7452 and 9091;
//!   auditor.md 7460). A port already taken fails the server's start with its error shown.
//! - **Not run.** The few blocks and lines that cannot run in a test are listed in
//!   [`SKIP_BLOCKS`] and [`SKIP_LINES`] with the reason; [`MAPPED`] turns a command into a
//!   smaller equivalent. An entry that no longer matches anything fails the test, so the lists
//!   cannot rot. README's CLI tour is not run (it shows placeholders such as `…` and remote
//!   hosts), but every `amble` subcommand it names must be run by some doc block
//!   ([`TOUR_NOT_IN_DOCS`] lists the exceptions).
//!
//! `DOCS_ONLY=operator.md cargo test -p amble --test docs` runs one file; `DOCS_KEEP=1` keeps
//! the temporary directories and prints where they are.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Blocks not run: (file, a string the block contains, why).
const SKIP_BLOCKS: &[(&str, &str, &str)] = &[
    (
        "README.md",
        "amble node init --data-dir ./node1",
        "the CLI tour: placeholders (`…`, `[--since …]`) and remote hosts; each command in it runs \
         in docs/*.md (checked by `readme_tour_is_covered_by_the_docs`)",
    ),
    (
        "README.md",
        "cargo bench",
        "benchmarks take minutes and need Python with Flower",
    ),
    (
        "operator.md",
        "cargo build --release",
        "builds and installs the binary this test was built with (needs root for /usr/local/bin)",
    ),
    (
        "operator.md",
        "systemctl",
        "needs systemd and root; the units are in deploy/systemd/",
    ),
];

/// Lines not run: (file, the line's start, why).
const SKIP_LINES: &[(&str, &str, &str)] = &[(
    "README.md",
    "cargo test --workspace",
    "runs this very test (and every other one)",
)];

/// Commands replaced by a smaller equivalent: (file, from, to).
const MAPPED: &[(&str, &str, &str)] = &[(
    "README.md",
    "cargo run --release -- demo",
    "amble demo --rows-per-node 60 --rounds 2",
)];

/// `amble` subcommands of README's tour that no doc block runs, and why.
const TOUR_NOT_IN_DOCS: &[(&str, &str)] = &[(
    "amble train needs",
    "an evaluation tool on the Helpdesk log (tested in learn_cli.rs)",
)];

/// How long one block (or a server's start) may take.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(240);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

/// README.md and docs/*.md, by name.
fn doc_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[derive(Debug, Clone)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    server: bool,
    text: String,
}

/// The shell blocks of a Markdown file.
fn shell_blocks(md: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = md.lines().enumerate();
    while let Some((i, l)) = lines.next() {
        let t = l.trim_start();
        let Some(info) = t.strip_prefix("```") else {
            continue;
        };
        let indent = l.len() - t.len();
        let words: Vec<&str> = info
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push_str(l.get(indent..).unwrap_or(l.trim_start()));
            body.push('\n');
        }
        if matches!(words.first(), Some(&("sh" | "bash" | "shell"))) {
            out.push(Block {
                line: i + 1,
                server: words.contains(&"server"),
                text: body,
            });
        }
    }
    out
}

/// `# exit N` at the end of a line: N.
fn expected_exit(line: &str) -> Option<(usize, i32)> {
    let at = line.rfind("# exit ")?;
    let rest = &line[at + "# exit ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let after = &rest[digits.len()..];
    if digits.is_empty() || !(after.is_empty() || after.starts_with([' ', ':', ','])) {
        return None;
    }
    Some((at, digits.parse().ok()?))
}

/// The script a block runs as: `# exit N` lines check their exit code.
fn script(block: &str) -> String {
    let mut out = String::new();
    let mut start: Option<usize> = None; // where the current logical line began in `out`
    for line in block.lines() {
        if start.is_none() {
            start = Some(out.len());
        }
        if line.trim_end().ends_with('\\') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        match expected_exit(line) {
            Some((at, code)) => {
                let s = start.unwrap();
                out.insert_str(s, "__rc=0; ");
                out.push_str(line[..at].trim_end());
                out.push_str(&format!(
                    " || __rc=$?; if [ \"$__rc\" != {code} ]; then echo \"docs: expected exit {code}, got $__rc\" >&2; exit 1; fi\n"
                ));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
        start = None;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The starting environment: ours without `AMBLE_*`, with the binary first on PATH.
fn base_env(dir: &Path) -> BTreeMap<String, String> {
    let bin = dir.join(".docs/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_amble"), bin.join("amble")).unwrap();
    let mut env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("AMBLE_") && !k.starts_with("DOCS_"))
        .collect();
    let path = env.get("PATH").cloned().unwrap_or_default();
    env.insert("PATH".into(), format!("{}:{path}", bin.display()));
    env.insert("PWD".into(), dir.display().to_string());
    env
}

fn tail(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits for `child` up to `limit`; on timeout kills its process group.
fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if t0.elapsed() > limit {
            signal_group(child.id(), "KILL");
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signals the process group this test started for one block (its leader's id).
fn signal_group(pgid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), "--".into(), format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

struct Server {
    child: Child,
    line: usize,
    out: PathBuf,
    err: PathBuf,
}

/// Runs one doc file's blocks; Err names the first failure.
fn run_file(file: &Path) -> Result<(), String> {
    let name = name_of(file);
    let md = std::fs::read_to_string(file).unwrap();
    let blocks = shell_blocks(&md);
    if blocks.is_empty() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("amble-docs-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_owned();
    let r = root();
    copy_dir(&r.join("deploy"), &dir.join("deploy"));
    copy_dir(&r.join("docs/examples"), &dir.join("docs/examples"));
    copy_dir(&r.join("data/banking77"), &dir.join("data/banking77"));
    let mut env = base_env(&dir);
    let mut cwd = dir.clone();
    let mut servers: Vec<Server> = Vec::new();
    let result = (|| {
        for (n, b) in blocks.iter().enumerate() {
            if SKIP_BLOCKS
                .iter()
                .any(|(f, needle, _)| *f == name && b.text.contains(needle))
            {
                continue;
            }
            let mut text = String::new();
            for l in b.text.lines() {
                if SKIP_LINES
                    .iter()
                    .any(|(f, start, _)| *f == name && l.trim_start().starts_with(start))
                {
                    continue;
                }
                let mut l = l.to_owned();
                for (f, from, to) in MAPPED {
                    if *f == name {
                        l = l.replace(from, to);
                    }
                }
                text.push_str(&l);
                text.push('\n');
            }
            let logs = dir.join(".docs");
            let out = logs.join(format!("block-{n}.out"));
            let err = logs.join(format!("block-{n}.err"));
            let env_file = logs.join(format!("block-{n}.env"));
            let body = if b.server {
                let cmds: Vec<&str> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect();
                if cmds.len() != 1 {
                    return Err(format!(
                        "{name}:{}: a server block holds exactly one command",
                        b.line
                    ));
                }
                format!("set -euo pipefail\nexec {}\n", cmds[0])
            } else {
                format!(
                    "set -euo pipefail\ntrap 'env -0 > {:?}' EXIT\n{}",
                    env_file,
                    script(&text)
                )
            };
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(&body)
                .current_dir(&cwd)
                .env_clear()
                .envs(&env)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(&err).unwrap());
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut child = cmd.spawn().unwrap();
            let failure = |what: String| {
                format!(
                    "{name}:{}: {what}\n--- block ---\n{text}--- stdout ---\n{}\n--- stderr ---\n{}",
                    b.line,
                    tail(&out),
                    tail(&err)
                )
            };
            if b.server {
                let t0 = Instant::now();
                loop {
                    if std::fs::read_to_string(&out).is_ok_and(|s| s.contains('\n')) {
                        break;
                    }
                    if let Some(st) = child.try_wait().unwrap() {
                        return Err(failure(format!(
                            "the server exited before listening ({st})"
                        )));
                    }
                    if t0.elapsed() > BLOCK_TIMEOUT {
                        signal_group(child.id(), "KILL");
                        let _ = child.wait();
                        return Err(failure("the server did not start in time".into()));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                servers.push(Server {
                    child,
                    line: b.line,
                    out,
                    err,
                });
                continue;
            }
            match wait(&mut child, BLOCK_TIMEOUT) {
                None => return Err(failure(format!("timed out after {BLOCK_TIMEOUT:?}"))),
                Some(st) if !st.success() => return Err(failure(format!("failed ({st})"))),
                Some(_) => {}
            }
            // What the block exported, and where it `cd`-ed to, hold for the next block.
            let raw = std::fs::read(&env_file).unwrap_or_default();
            let mut next = BTreeMap::new();
            for kv in raw.split(|&c| c == 0).filter(|s| !s.is_empty()) {
                let kv = String::from_utf8_lossy(kv);
                if let Some((k, v)) = kv.split_once('=') {
                    next.insert(k.to_owned(), v.to_owned());
                }
            }
            if let Some(pwd) = next.get("PWD") {
                cwd = PathBuf::from(pwd);
            }
            if !next.is_empty() {
                env = next;
            }
        }
        Ok(())
    })();
    // Stop the services as a service manager would, and require a clean exit.
    let mut stopped = Ok(());
    for s in servers.iter_mut().rev() {
        signal_group(s.child.id(), "TERM");
        match wait(&mut s.child, Duration::from_secs(30)) {
            Some(st) if st.success() => {}
            other => {
                if stopped.is_ok() {
                    stopped = Err(format!(
                        "{name}:{}: the server did not stop cleanly on SIGTERM ({other:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        s.line,
                        tail(&s.out),
                        tail(&s.err)
                    ));
                }
            }
        }
    }
    if std::env::var_os("DOCS_KEEP").is_some() {
        eprintln!("{name}: kept {}", tmp.keep().display());
    }
    result.and(stopped)
}

#[test]
fn every_shell_block_in_the_docs_runs() {
    let only = std::env::var("DOCS_ONLY").ok();
    let files: Vec<PathBuf> = doc_files()
        .into_iter()
        .filter(|f| only.as_deref().is_none_or(|o| name_of(f) == o))
        .collect();
    assert!(!files.is_empty(), "no doc file named {only:?}");
    let handles: Vec<_> = files
        .into_iter()
        .map(|f| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = run_file(&f);
                eprintln!("{}: {:.1} s", name_of(&f), t0.elapsed().as_secs_f64());
                r
            })
        })
        .collect();
    let failures: Vec<String> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Every allow-list entry still matches something.
#[test]
fn the_lists_of_exceptions_match_the_docs() {
    let docs: BTreeMap<String, Vec<Block>> = doc_files()
        .iter()
        .map(|f| {
            (
                name_of(f),
                shell_blocks(&std::fs::read_to_string(f).unwrap()),
            )
        })
        .collect();
    let blocks = |f: &str| docs.get(f).cloned().unwrap_or_default();
    for (f, needle, _) in SKIP_BLOCKS {
        assert!(
            blocks(f).iter().any(|b| b.text.contains(needle)),
            "SKIP_BLOCKS: no block of {f} contains {needle:?}"
        );
    }
    for (f, start, _) in SKIP_LINES {
        assert!(
            blocks(f)
                .iter()
                .any(|b| b.text.lines().any(|l| l.trim_start().starts_with(start))),
            "SKIP_LINES: no line of {f} starts with {start:?}"
        );
    }
    for (f, from, _) in MAPPED {
        assert!(
            blocks(f).iter().any(|b| b.text.contains(from)),
            "MAPPED: {f} does not contain {from:?}"
        );
    }
    // Server blocks are single commands; `# exit N` parses.
    for (f, bs) in &docs {
        for b in bs.iter().filter(|b| b.server) {
            assert!(
                b.text.contains("serve"),
                "{f}:{}: a server block that runs no `serve`",
                b.line
            );
        }
    }
    assert_eq!(expected_exit("amble node read x # exit 3"), Some((18, 3)));
    assert_eq!(expected_exit("echo # exit codes"), None);
    assert!(script("a \\\n  b # exit 3\n").starts_with("__rc=0; a \\\n  b || __rc=$?;"));
}

/// The `amble …` commands a block runs (up to two subcommand words each).
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split(" #").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("amble ") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "amble ".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '/' || c == '_') {
                continue;
            }
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| *w != "--json")
                .take(2)
                .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
                .collect();
            if let Some(first) = words.first() {
                let n = if *first == "demo" { 1 } else { words.len() };
                out.push(format!("amble {}", words[..n].join(" ")));
            }
        }
    }
    out
}

#[test]
fn readme_tour_is_covered_by_the_docs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let tour = shell_blocks(&readme)
        .into_iter()
        .find(|b| b.text.contains(SKIP_BLOCKS[0].1))
        .expect("README's CLI tour");
    let run: Vec<String> = doc_files()
        .iter()
        .filter(|f| name_of(f) != "README.md")
        .flat_map(|f| shell_blocks(&std::fs::read_to_string(f).unwrap()))
        .flat_map(|b| commands(&b.text))
        .collect();
    let mut missing = Vec::new();
    for c in commands(&tour.text) {
        if !run.contains(&c) && !TOUR_NOT_IN_DOCS.iter().any(|(t, _)| *t == c) {
            missing.push(c);
        }
    }
    missing.dedup();
    assert!(
        missing.is_empty(),
        "README's tour shows commands no doc block runs: {missing:?}"
    );
    for (c, _) in TOUR_NOT_IN_DOCS {
        assert!(
            !run.contains(&c.to_string()),
            "TOUR_NOT_IN_DOCS: {c:?} is run by the docs now; remove it from the list"
        );
    }
}
