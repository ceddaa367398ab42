//! A process appending to the archive is killed with SIGKILL at random moments; after each
//! kill the archive is reopened: every append it had acknowledged is present and readable, no
//! record exists without its audit entry, and the audit log exports and verifies offline.
//!
//! Tiered: CI kills 6 times; the long run is
//! `AMBLE_CRASH_KILLS=120 cargo test --release -p amble-node --test crash -- --nocapture`.
//!
//! The test binary re-runs itself as the child (`AMBLE_CRASH_CHILD` set), so no extra binary
//! is needed. The child prints `ack <n>` only after `append` returned (flushed).
//! It also checks that no record survives without the audit entry written before it.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_crypto::ExternalRef;
use amble_node::{Actor, Collection, NewRecord, Node};
use amble_policy::Role;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "AMBLE_CRASH_CHILD";

fn record(n: u64) -> NewRecord {
    let serde_json::Value::Object(data) = serde_json::json!({ "n": n, "pad": "x".repeat(200) })
    else {
        unreachable!()
    };
    NewRecord {
        collection: Collection::Events,
        time: time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(n as i64),
        data,
    }
}

fn subject_ref(n: u64) -> ExternalRef {
    ExternalRef::parse(&format!("phone:+1{}", n % 17)).unwrap()
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only does something when run as the child of the test below.
    };
    let a = Node::open(std::path::Path::new(&dir), None, None).unwrap();
    let op = Actor::local("crash-child", Role::Admin);
    let start: u64 = std::env::var("AMBLE_CRASH_START").unwrap().parse().unwrap();
    for n in start.. {
        a.append(&op, &subject_ref(n), &record(n)).unwrap();
        println!("ack {n}");
    }
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    drop(Node::init(dir.path(), None).unwrap());
    let exe = std::env::current_exe().unwrap();
    let kills: u64 = std::env::var("AMBLE_CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(6);
    let mut acked: Vec<u64> = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    for round in 0..kills {
        let start = acked.last().map_or(0, |n| n + 1);
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("AMBLE_CRASH_START", start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Kill after a random number of acknowledgements (and at a random time after the
        // last one we read), so the kill lands mid-append as well as between appends.
        let kill_after = 5 + seed % 60;
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("ack ") {
                acked.push(n.parse().unwrap());
                seen += 1;
            }
            if seen >= kill_after || Instant::now() > deadline {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(seed % 3000));
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        assert!(seen > 0, "round {round}: the child acknowledged nothing");
        check(dir.path(), &acked, round);
    }
    eprintln!(
        "{kills} SIGKILLs, {} acknowledged appends, none lost",
        acked.len()
    );
    assert!(acked.len() as u64 >= kills * 5);
}

/// After a kill: every acknowledged append is there, every record has its audit entry, and
/// the audit log verifies offline.
fn check(dir: &std::path::Path, acked: &[u64], round: u64) {
    let a = Node::open(dir, None, None).unwrap();
    let out = tempfile::tempdir().unwrap();
    amble_audit::export_dir(a.audit_log(), a.signing_key(), a.origin(), out.path()).unwrap();
    if let Err(e) = amble_audit::verify_dir(out.path(), None, &[]) {
        panic!("after kill {round}: the audit log does not verify: {e}");
    }
    let op = Actor::local("checker", Role::Admin);
    let mut present = std::collections::HashSet::new();
    for k in 0..17u64 {
        // The log entry is written before the data: no record may exist without one.
        if let Ok(subject) = a.subject_of(&subject_ref(k)) {
            let logged: u64 = a
                .audit_log()
                .entries_for_subject(&subject)
                .unwrap()
                .iter()
                .filter(|e| e.action == amble_audit::Action::Append)
                .map(|e| e.counts.get("records").copied().unwrap_or(0))
                .sum();
            let stored = a.count(&subject, None) as u64;
            assert!(
                logged >= stored,
                "subject {k}: {stored} records, {logged} logged"
            );
        }
        let Ok(export) = a.export(&op, &subject_ref(k)) else {
            continue;
        };
        for r in export.document["archive"]["records"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            present.insert(r["data"]["n"].as_u64().unwrap());
        }
    }
    let missing: Vec<_> = acked.iter().filter(|n| !present.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "after kill {round}: acknowledged but lost: {missing:?}"
    );
}
