//! Backup and restore: a restored node is the node that was backed up, a damaged or foreign
//! backup is refused before anything is written, and an erased person does not come back.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_crypto::ExternalRef;
use amble_learn::privacy::Budget;
use amble_learn::privacy::{Delta, Epsilon};
use amble_node::{
    Actor, BackupError, Collection, ConsentChange, NewRecord, Node, NodeError, restore,
};
use amble_policy::Role;
use std::path::{Path, PathBuf};
use time::macros::datetime;

fn op() -> Actor {
    Actor::local("operator:test", Role::Admin)
}

fn r(s: &str) -> ExternalRef {
    ExternalRef::parse(s).unwrap()
}

fn rec(c: Collection, day: i64, data: serde_json::Value) -> NewRecord {
    let serde_json::Value::Object(data) = data else {
        panic!("object")
    };
    NewRecord {
        collection: c,
        time: datetime!(2026-05-01 10:00 UTC) + time::Duration::days(day),
        data,
    }
}

fn people() -> Vec<String> {
    (0..20).map(|i| format!("phone:+4479{i:08}")).collect()
}

fn marker(i: usize) -> String {
    format!("MARKER-{i:05}-PLUGH")
}

fn budget() -> Budget {
    Budget {
        model_epsilon: Epsilon::new(7.5).unwrap(),
        subject_epsilon: Epsilon::new(3.25).unwrap(),
        delta: Delta::new(1e-6).unwrap(),
    }
}

/// A node in `dir/data` with its key file at `dir/node.key`, 20 people with records (each
/// carrying a marker), consent for personalisation, and a privacy budget.
fn populated(dir: &Path) -> (Node, PathBuf) {
    let key = dir.join("node.key");
    let n = Node::init(&dir.join("data"), Some(&key)).unwrap();
    let mut batch = Vec::new();
    for (i, p) in people().iter().enumerate() {
        batch.push((
            r(p),
            rec(
                Collection::Interactions,
                i as i64,
                serde_json::json!({"text": marker(i), "channel": "chat"}),
            ),
        ));
        batch.push((
            r(p),
            rec(
                Collection::Profile,
                0,
                serde_json::json!({"display_name": format!("Name{i}Zyx"), "language": "en"}),
            ),
        ));
    }
    n.append_batch(&op(), &batch).unwrap();
    for p in people().iter().take(10) {
        n.change_consent(
            &op(),
            &r(p),
            "personalisation",
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        )
        .unwrap();
    }
    n.set_budget(budget()).unwrap();
    (n, key)
}

/// The archive part of a subject's export, without the export time.
fn archive_of(n: &Node, p: &str) -> serde_json::Value {
    let mut doc = n.export(&op(), &r(p)).unwrap().document["archive"].clone();
    doc.as_object_mut().unwrap().remove("exported_at");
    doc
}

fn consent_of(n: &Node, p: &str) -> Vec<u8> {
    n.consent_history(&op(), &r(p)).unwrap().to_json_bytes()
}

#[test]
fn restored_node_has_every_record_consent_ledger_and_the_same_audit_root() {
    let dir = tempfile::tempdir().unwrap();
    let (n, key) = populated(dir.path());
    let file = dir.path().join("node.backup");
    let report = n.backup(&op(), &file).unwrap();
    let (size, root) = n.audit_log().head().unwrap();
    assert_eq!(
        report.audit_size, size,
        "the backup entry is the last one in it"
    );
    let before: Vec<_> = people()
        .iter()
        .map(|p| (archive_of(&n, p), consent_of(&n, p)))
        .collect();
    let subjects = n.subject_count();
    drop(n);

    let target = dir.path().join("restored");
    let restored = restore(&file, &target, Some(&key), &op()).unwrap();
    assert_eq!(restored.audit_size, size);
    assert_eq!(restored.subjects, subjects);
    assert_eq!(restored.entries, report.entries);
    assert!(restored.audit_entries_checked > 0);

    let m = Node::open(&target, Some(&key), None).unwrap();
    assert_eq!(m.audit_log().root_at(size).unwrap(), root);
    assert_eq!(
        m.audit_log().size(),
        size + 1,
        "the restore itself is logged"
    );
    let last = m.audit_log().entry(size).unwrap();
    assert_eq!(last.action.as_str(), "restore");
    for (p, (archive, consent)) in people().iter().zip(before) {
        assert_eq!(archive_of(&m, p), archive, "records of {p}");
        assert_eq!(consent_of(&m, p), consent, "consent of {p}");
    }
    let ledger = m.stored_ledger().unwrap().expect("the ledger was restored");
    assert_eq!(ledger.budget(), &budget());
}

#[test]
fn backup_file_holds_no_marker_or_external_id() {
    let dir = tempfile::tempdir().unwrap();
    let (n, _) = populated(dir.path());
    let file = dir.path().join("node.backup");
    n.backup(&op(), &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let mut needles: Vec<String> = (0..20).map(marker).collect();
    needles.extend((0..20).map(|i| format!("Name{i}Zyx")));
    needles.extend(people());
    needles.extend(
        people()
            .iter()
            .map(|p| p.trim_start_matches("phone:").to_owned()),
    );
    let ac = aho_corasick::AhoCorasick::new(&needles).unwrap();
    let found: Vec<_> = ac
        .find_overlapping_iter(&bytes)
        .map(|m| needles[m.pattern().as_usize()].clone())
        .collect();
    assert!(found.is_empty(), "plaintext in the backup: {found:?}");
    // and the master key never: the key file's secrets are not in it either
    let keyfile = std::fs::read_to_string(dir.path().join("node.key")).unwrap();
    let keyjson: serde_json::Value = serde_json::from_str(&keyfile).unwrap();
    for kek in keyjson["keks"].as_array().unwrap() {
        let k = kek["key"].as_str().unwrap();
        assert!(!bytes.windows(k.len()).any(|w| w == k.as_bytes()));
    }
}

#[test]
fn truncated_or_flipped_backup_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (n, key) = populated(dir.path());
    let file = dir.path().join("node.backup");
    n.backup(&op(), &file).unwrap();
    drop(n);
    let good = std::fs::read(&file).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() * 2 / 3].to_vec()),
        ("trailer cut", good[..good.len() - 10].to_vec()),
        ("tiny", good[..20].to_vec()),
        ("flipped", {
            let mut b = good.clone();
            let i = b.len() / 2;
            b[i] ^= 0x01;
            b
        }),
    ];
    for (what, bytes) in cases {
        let bad = dir.path().join(format!("{what}.backup"));
        std::fs::write(&bad, bytes).unwrap();
        let target = dir.path().join(format!("restore-{what}"));
        let err = restore(&bad, &target, Some(&key), &op()).unwrap_err();
        assert!(
            matches!(err, BackupError::Corrupt { .. }),
            "{what}: {err:?}"
        );
        assert!(
            err.to_string().contains("truncated or corrupted"),
            "{what}: {err}"
        );
        assert!(!target.exists(), "{what}: the target was left behind");
    }

    let not = dir.path().join("not-a-backup");
    std::fs::write(&not, b"hello, this is a text file and no backup at all").unwrap();
    let err = restore(&not, &dir.path().join("t"), Some(&key), &op()).unwrap_err();
    assert!(matches!(err, BackupError::NotABackup(_)), "{err:?}");
}

#[test]
fn target_that_is_not_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (n, key) = populated(dir.path());
    let file = dir.path().join("node.backup");
    n.backup(&op(), &file).unwrap();
    drop(n);
    let target = dir.path().join("busy");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("something"), b"x").unwrap();
    let err = restore(&file, &target, Some(&key), &op()).unwrap_err();
    assert!(matches!(err, BackupError::TargetNotEmpty(_)), "{err:?}");
    assert!(
        target.join("something").exists(),
        "nothing of the target was touched"
    );
    // the original data directory is not empty either
    let err = restore(&file, &dir.path().join("data"), Some(&key), &op()).unwrap_err();
    assert!(matches!(err, BackupError::TargetNotEmpty(_)), "{err:?}");

    // an empty directory holding only the key file it is told to use is fine
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let copied = empty.join("node.key");
    std::fs::copy(&key, &copied).unwrap();
    restore(&file, &empty, None, &op()).unwrap();
    Node::open(&empty, None, None).unwrap();
}

#[test]
fn another_nodes_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (n, _) = populated(dir.path());
    let file = dir.path().join("node.backup");
    n.backup(&op(), &file).unwrap();
    let origin = n.origin().to_owned();
    drop(n);
    let other_key = dir.path().join("other.key");
    drop(Node::init(&dir.path().join("other"), Some(&other_key)).unwrap());
    let target = dir.path().join("restored");
    let err = restore(&file, &target, Some(&other_key), &op()).unwrap_err();
    assert!(matches!(err, BackupError::WrongKeyFile { .. }), "{err:?}");
    assert!(err.to_string().contains(&origin), "{err}");
    assert!(!target.exists());
}

#[test]
fn person_erased_after_the_backup_stays_erased() {
    let dir = tempfile::tempdir().unwrap();
    let (mut n, key) = populated(dir.path());
    let before = dir.path().join("before.backup");
    n.backup(&op(), &before).unwrap();
    let ann = people()[3].clone();
    let ann_subject = n.subject_of(&r(&ann)).unwrap();
    // What `amble node erase` does: erase, then rotate the master key.
    n.erase(&op(), &r(&ann)).unwrap();
    n.rotate_key(&op()).unwrap();
    let after = dir.path().join("after.backup");
    n.backup(&op(), &after).unwrap();
    drop(n);

    // The old backup still holds Ann's wrapped key; with the current key file it is refused.
    let target = dir.path().join("from-before");
    let err = restore(&before, &target, Some(&key), &op()).unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::PredatesRotation {
                backup: 1,
                current: 2
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("erased"), "{err}");
    assert!(!target.exists(), "nothing was written");

    // A backup taken after the erasure restores, without Ann.
    let target = dir.path().join("from-after");
    restore(&after, &target, Some(&key), &op()).unwrap();
    let m = Node::open(&target, Some(&key), None).unwrap();
    assert!(matches!(m.subject_of(&r(&ann)), Err(NodeError::UnknownRef)));
    assert!(
        m.erased_at(&ann_subject).unwrap().is_some(),
        "tombstone kept"
    );
    assert_eq!(m.count(&ann_subject, None), 0);
    assert_eq!(m.subject_count(), people().len() - 1);
}

#[test]
fn backup_refuses_to_overwrite_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (n, _) = populated(dir.path());
    let file = dir.path().join("node.backup");
    std::fs::write(&file, b"keep me").unwrap();
    let err = n.backup(&op(), &file).unwrap_err();
    assert!(matches!(err, BackupError::OutExists(_)), "{err:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}
