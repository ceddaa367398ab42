//! `amble node serve` as its own process: the CLI clients against it, and SIGTERM in the
//! middle of a stream of appends losing nothing that was acknowledged.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_node::server::client::ClientIdentity;
use amble_proto::v1 as pb;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

fn amble() -> Command {
    Command::new(env!("CARGO_BIN_EXE_amble"))
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Setup {
    _tmp: tempfile::TempDir,
    pki: PathBuf,
    data: PathBuf,
    config: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    let data = tmp.path().join("data");
    let p = pki.to_str().unwrap();
    ok(amble()
        .args([
            "pki",
            "init",
            "--dir",
            p,
            "--federation",
            "t",
            "--organisation",
            "org-1",
        ])
        .output()
        .unwrap());
    ok(amble()
        .args([
            "pki",
            "issue",
            "--dir",
            p,
            "--name",
            "node-1",
            "--role",
            "node",
            "--ip",
            "127.0.0.1",
        ])
        .output()
        .unwrap());
    for (name, role) in [
        ("crm", "app"),
        ("aud", "auditor"),
        ("portal", "subject-portal"),
    ] {
        ok(amble()
            .args(["pki", "issue", "--dir", p, "--name", name, "--role", role])
            .output()
            .unwrap());
    }
    let init = amble()
        .args(["node", "init", "--data-dir", data.to_str().unwrap()])
        .output()
        .unwrap();
    // `Node::init` reopens the database it just created; sled can still hold the lock for a
    // moment, which fails that reopen *after* everything was written. Tolerate only that.
    if !init.status.success() {
        let err = String::from_utf8_lossy(&init.stderr);
        assert!(err.contains("could not acquire lock"), "node init: {err}");
    }
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        r#"listen = "127.0.0.1:0"
data_dir = "data"
[tls]
cert = "pki/certs/node-1.pem"
key = "pki/certs/node-1.key"
client_ca = "pki/ca.pem"
crl = "pki/crl.pem"
"#,
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        pki,
        data,
        config,
    }
}

/// Starts `amble node serve` and returns it with its https:// address.
fn serve(s: &Setup) -> (Child, String) {
    let mut child = amble()
        .args(["node", "serve", "--config", s.config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, format!("https://{addr}"))
}

fn terminate(child: &mut Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

fn client_args(s: &Setup, url: &str, name: &str) -> Vec<String> {
    let certs = s.pki.join("certs");
    vec![
        "--node".into(),
        url.into(),
        "--cert".into(),
        certs.join(format!("{name}.pem")).display().to_string(),
        "--key".into(),
        certs.join(format!("{name}.key")).display().to_string(),
        "--ca".into(),
        s.pki.join("ca.pem").display().to_string(),
    ]
}

fn identity(pki: &Path, name: &str) -> ClientIdentity {
    let certs = pki.join("certs");
    ClientIdentity::load(
        &certs.join(format!("{name}.pem")),
        &certs.join(format!("{name}.key")),
        &pki.join("ca.pem"),
    )
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sigterm_during_a_stream_of_appends_loses_no_acknowledged_append() {
    let s = setup();
    let (mut child, url) = serve(&s);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let rt = runtime();
    rt.block_on(async {
        let ch = identity(&s.pki, "crm").connect(&url).await.unwrap();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let ch = ch.clone();
            let acked = Arc::clone(&acked);
            tasks.push(tokio::spawn(async move {
                let mut c = pb::archive_client::ArchiveClient::new(ch);
                for i in 0..100_000u32 {
                    let r = format!("phone:+1{t}{i:07}");
                    let res = c
                        .append(pb::AppendRequest {
                            records: vec![pb::NewRecord {
                                r#ref: r.clone(),
                                collection: "events".into(),
                                time: "2026-05-01T10:00:00Z".into(),
                                data_json: format!(r#"{{"kind":"login","n":{i}}}"#),
                            }],
                        })
                        .await;
                    match res {
                        Ok(_) => acked.lock().unwrap().push(r),
                        Err(_) => break,
                    }
                }
            }));
        }
        // Let the stream run, then stop the node in the middle of it.
        while acked.lock().unwrap().len() < 60 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        terminate(&mut child);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exited with {status}");

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 60);
    let node = amble_node::Node::open(&s.data, None, None).unwrap();
    for r in &acked {
        let subject = node
            .subject_of(&amble_crypto::ExternalRef::parse(r).unwrap())
            .unwrap_or_else(|e| panic!("acknowledged append for {r} is missing: {e}"));
        assert_eq!(node.count(&subject, None), 1, "{r}");
    }
}

#[test]
fn subject_and_audit_clients_work_against_a_served_node() {
    let s = setup();
    let (mut child, url) = serve(&s);
    let r = "email:ann@example.org";
    runtime().block_on(async {
        let ch = identity(&s.pki, "crm").connect(&url).await.unwrap();
        pb::archive_client::ArchiveClient::new(ch)
            .append(pb::AppendRequest {
                records: vec![pb::NewRecord {
                    r#ref: r.into(),
                    collection: "goals".into(),
                    time: "2026-05-01T10:00:00Z".into(),
                    data_json: r#"{"goal":"retire early"}"#.into(),
                }],
            })
            .await
            .unwrap();
    });
    let subject = |name: &str, args: &[&str]| {
        let mut cmd = amble();
        cmd.arg("subject").arg(args[0]);
        cmd.args(client_args(&s, &url, name));
        cmd.args(&args[1..]);
        cmd.output().unwrap()
    };
    let receipt = ok(subject(
        "crm",
        &[
            "consent",
            "--ref",
            r,
            "give",
            "--purpose",
            "personalisation",
        ],
    ));
    assert!(receipt.contains("personalisation"), "{receipt}");
    let log = ok(subject("portal", &["access-log", "--ref", r]));
    assert!(log.contains("consent_change"), "{log}");

    // An app may not erase: exit 3, and nothing is erased.
    let denied = subject("crm", &["erase", "--ref", r, "--yes"]);
    assert_eq!(
        denied.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    let export = ok(subject("portal", &["export", "--ref", r]));
    assert!(export.contains("retire early"));

    let out = s.config.with_file_name("fetched");
    let mut cmd = amble();
    cmd.args(["audit", "fetch", "--out", out.to_str().unwrap()]);
    cmd.args(client_args(&s, &url, "aud"));
    ok(cmd.output().unwrap());
    ok(amble()
        .args(["audit", "verify", out.to_str().unwrap()])
        .output()
        .unwrap());

    ok(subject("portal", &["erase", "--ref", r, "--yes"]));
    let gone = subject("portal", &["export", "--ref", r]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"));

    terminate(&mut child);
    assert!(child.wait().unwrap().success());
}
