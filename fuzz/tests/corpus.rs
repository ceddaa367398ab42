//! The fuzz corpus on stable, inside `cargo test`: every file of `corpus/TARGET/` goes through
//! its target, then a fixed budget of mutations of those files (bit flips, inserted and deleted
//! runs, splices of two files), so what coverage-guided fuzzing found stays found.
//!
//! `AMBLE_FUZZ_CASES=N` sets the mutations per target (default 256; the backup target, which
//! writes files, gets an eighth).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file of the target's corpus, or only the seeds (`seed-*`, real inputs).
fn files(target: &str, seeds_only: bool) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            !seeds_only
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    files(target, false)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    files(target, true)
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Splice(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (
            any::<usize>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 1..8),
                Just(b"\"".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\xff\xfe".to_vec()),
                Just(b"99999999999999999999".to_vec()),
                Just("\u{200b}".as_bytes().to_vec()),
            ]
        )
            .prop_map(|(at, b)| Edit::Insert(at, b)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), any::<usize>()).prop_map(|(at, from)| Edit::Splice(at, from)),
    ]
}

fn apply(seed: &[u8], other: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, bit) if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= 1 << bit;
            }
            Edit::Flip(..) => {}
            Edit::Insert(i, bytes) => {
                let i = at(*i, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Delete(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Splice(i, from) => {
                let i = at(*i, b.len());
                let from = at(*from, other.len());
                b.truncate(i);
                b.extend_from_slice(&other[from..]);
            }
        }
    }
    b
}

fn cases(target: &str) -> u32 {
    let n = std::env::var("AMBLE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256u32);
    if target == "backup_file" {
        (n / 8).max(1)
    } else {
        n
    }
}

#[test]
fn every_target_has_a_corpus_and_no_file_of_it_panics() {
    for (target, check) in amble_fuzz::TARGETS {
        let files = corpus(target);
        assert!(!files.is_empty(), "corpus/{target} is empty");
        for f in &files {
            check(f);
        }
    }
}

#[test]
fn mutations_of_the_corpus_panic_no_target() {
    for (target, check) in amble_fuzz::TARGETS {
        let files = corpus(target);
        let n = files.len();
        let mut runner = TestRunner::new(Config {
            cases: cases(target),
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = (0..n, 0..n, proptest::collection::vec(edit(), 1..6));
        let result = runner.run(&strategy, |(seed, other, edits)| {
            check(&apply(&files[seed], &files[other], &edits));
            Ok(())
        });
        if let Err(e) = result {
            panic!("{target}: {e}");
        }
    }
}

#[test]
fn the_seed_inputs_reach_past_the_first_check() {
    // The seeds are real inputs: they parse, so the mutations start deep in each parser.
    for line in seeds("ingest_line") {
        let text = String::from_utf8(line).unwrap();
        assert!(amble_node::ingest::parse_line(&text).is_ok(), "{text}");
    }
    for entry in seeds("audit_entry") {
        assert!(amble_audit::Entry::from_canonical_json(&entry).is_ok());
    }
    let policy = &seeds("policy_toml")[0];
    assert!(amble_policy::Policy::from_toml_str(std::str::from_utf8(policy).unwrap(), "p").is_ok());
    let history = seeds("consent_history");
    assert!(
        history
            .iter()
            .any(|h| amble_consent::ConsentHistory::from_json_bytes(h).is_ok())
    );
}
