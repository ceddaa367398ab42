//! `amble node backup` and `amble node restore` as an operator uses them: a round trip keeps
//! everything, and every refusal is one clear line, a non-zero exit and no restored directory.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::Path;
mod common;
use common::*;

const ANN: &str = "phone:+15550001";
const BOB: &str = "phone:+15550002";

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A data directory with its key file outside it, two people and one consent.
fn node(dir: &Path) -> (String, String) {
    let d = s(&dir.join("node"));
    let k = s(&dir.join("node.key"));
    ok(&amble(&[
        "node",
        "init",
        "--data-dir",
        &d,
        "--key-file",
        &k,
    ]));
    let f = dir.join("in.jsonl");
    let lines: Vec<String> = [ANN, BOB]
        .iter()
        .map(|r| {
            format!(
                r#"{{"ref":"{r}","collection":"interactions","time":"2026-05-01T10:00:00Z","data":{{"text":"QUUX-{r}"}}}}"#
            )
        })
        .collect();
    std::fs::write(&f, lines.join("\n") + "\n").unwrap();
    ok(&amble(&[
        "node",
        "ingest",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        &s(&f),
    ]));
    ok(&amble(&[
        "node",
        "consent",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--ref",
        ANN,
        "give",
        "--purpose",
        "personalisation",
    ]));
    (d, k)
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).unwrap()
}

fn status(d: &str, k: &str) -> serde_json::Value {
    json(&amble(&[
        "--json",
        "node",
        "status",
        "--data-dir",
        d,
        "--key-file",
        k,
    ]))
}

#[test]
fn backup_and_restore_round_trip_with_json_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (d, k) = node(dir.path());
    let file = s(&dir.path().join("node.backup"));
    let b = json(&amble(&[
        "--json",
        "node",
        "backup",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--out",
        &file,
    ]));
    assert_eq!(b["format"], "amble-backup/v1");
    assert_eq!(b["kek_version"], 1);
    let before = status(&d, &k);

    let target = s(&dir.path().join("restored"));
    let r = json(&amble(&[
        "--json",
        "node",
        "restore",
        "--from",
        &file,
        "--data-dir",
        &target,
        "--key-file",
        &k,
    ]));
    assert_eq!(r["audit_root"], b["audit_root"]);
    assert_eq!(r["audit_size"], b["audit_size"]);
    assert_eq!(r["subjects"], 2);
    let after = status(&target, &k);
    assert_eq!(after["records"], before["records"]);
    assert_eq!(after["subjects"], before["subjects"]);

    let read = ok(&amble(&[
        "node",
        "read",
        "--data-dir",
        &target,
        "--key-file",
        &k,
        "--ref",
        ANN,
        "--purpose",
        "support",
        "--role",
        "agent",
    ]));
    assert!(read.contains("QUUX-phone:+15550001"), "{read}");

    // the restored log verifies offline like any other
    let audit = s(&dir.path().join("audit"));
    ok(&amble(&[
        "audit",
        "export",
        "--data-dir",
        &target,
        "--key-file",
        &k,
        "--out",
        &audit,
    ]));
    ok(&amble(&["audit", "verify", &audit]));

    let bytes = std::fs::read(&file).unwrap();
    for needle in ["QUUX", "+15550001", "+15550002"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} is in the backup"
        );
    }
}

#[test]
fn refusals_are_one_clear_line_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let (d, k) = node(dir.path());
    let file = s(&dir.path().join("node.backup"));
    ok(&amble(&[
        "node",
        "backup",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--out",
        &file,
    ]));

    // overwriting a backup
    let o = amble(&[
        "node",
        "backup",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--out",
        &file,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    // a truncated copy
    let bytes = std::fs::read(&file).unwrap();
    let cut = s(&dir.path().join("cut.backup"));
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let target = dir.path().join("t1");
    let o = amble(&[
        "node",
        "restore",
        "--from",
        &cut,
        "--data-dir",
        &s(&target),
        "--key-file",
        &k,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("truncated or corrupted"),
        "{}",
        stderr(&o)
    );
    assert!(!target.exists());

    // the data directory it came from is not empty
    let o = amble(&[
        "node",
        "restore",
        "--from",
        &file,
        "--data-dir",
        &d,
        "--key-file",
        &k,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not empty"), "{}", stderr(&o));

    // another node's key file
    let other_key = s(&dir.path().join("other.key"));
    ok(&amble(&[
        "node",
        "init",
        "--data-dir",
        &s(&dir.path().join("other")),
        "--key-file",
        &other_key,
    ]));
    let target = dir.path().join("t2");
    let o = amble(&[
        "--json",
        "node",
        "restore",
        "--from",
        &file,
        "--data-dir",
        &s(&target),
        "--key-file",
        &other_key,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err: serde_json::Value = serde_json::from_str(stderr(&o).trim()).unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("pass the key file of the node that made the backup"),
        "{err}"
    );
    assert!(!target.exists());
}

#[test]
fn erase_after_a_backup_cannot_be_undone_by_restoring_it() {
    let dir = tempfile::tempdir().unwrap();
    let (d, k) = node(dir.path());
    let old = s(&dir.path().join("old.backup"));
    ok(&amble(&[
        "node",
        "backup",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--out",
        &old,
    ]));
    ok(&amble(&[
        "node",
        "erase",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--ref",
        ANN,
    ]));

    let target = dir.path().join("restored");
    let o = amble(&[
        "node",
        "restore",
        "--from",
        &old,
        "--data-dir",
        &s(&target),
        "--key-file",
        &k,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("rotated after this backup") && e.contains("erased"),
        "{e}"
    );
    assert!(!target.exists());

    // a fresh backup restores, and Ann is not in it
    let new = s(&dir.path().join("new.backup"));
    ok(&amble(&[
        "node",
        "backup",
        "--data-dir",
        &d,
        "--key-file",
        &k,
        "--out",
        &new,
    ]));
    ok(&amble(&[
        "node",
        "restore",
        "--from",
        &new,
        "--data-dir",
        &s(&target),
        "--key-file",
        &k,
    ]));
    assert_eq!(status(&s(&target), &k)["subjects"], 1);
    let o = amble(&[
        "node",
        "export",
        "--data-dir",
        &s(&target),
        "--key-file",
        &k,
        "--ref",
        ANN,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no subject"), "{}", stderr(&o));
}
