//! Export and offline verification: a genuine export verifies; tampering is caught and, where
//! it can be, pinned to a line.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{
    Action, AuditLog, Decision, EntryDraft, NoteSigner, NoteVerifier, VerifyError, export_dir,
    verify_dir,
};
use amble_crypto::{Secret32, SigningKey, SubjectId};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::path::Path;
use time::macros::datetime;

const ORIGIN: &str = "node-a.example/audit";

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(Secret32::from_bytes([n; 32])).unwrap()
}

fn draft(i: u64) -> EntryDraft {
    let purpose = ["care", "billing", "train.intent"][(i % 3) as usize];
    EntryDraft::new("app-1", "app", Action::Read, format!("req-{i}"))
        .subject(SubjectId::from_bytes([(i % 5) as u8; 32]))
        .purpose(purpose)
        .decision(if i % 4 == 0 {
            Decision::Deny
        } else {
            Decision::Allow
        })
        .at(datetime!(2026-11-21 09:00:00 UTC) + time::Duration::minutes(i as i64))
}

struct Fixture {
    _db_dir: tempfile::TempDir,
    out: tempfile::TempDir,
    log: AuditLog,
}

fn fixture(n: u64) -> Fixture {
    let db_dir = tempfile::tempdir().unwrap();
    let db = sled::open(db_dir.path()).unwrap();
    let log = AuditLog::open(&db).unwrap();
    for i in 0..n {
        log.append(draft(i)).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    Fixture {
        _db_dir: db_dir,
        out,
        log,
    }
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("entries.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(dir: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(dir.join("entries.jsonl"), s).unwrap();
}

#[test]
fn a_genuine_export_verifies_and_reports_what_it_saw() {
    let f = fixture(12);
    let summary = export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    assert_eq!(
        (summary.size, summary.entries, summary.first_seq),
        (12, 12, 0)
    );
    let report = verify_dir(f.out.path(), None, &[]).unwrap();
    assert_eq!(report.size, 12);
    assert_eq!(report.root, f.log.root().unwrap());
    assert_eq!(report.entries, 12);
    assert_eq!(
        report.by_purpose.get(&("care".to_owned(), Decision::Deny)),
        Some(&1)
    );
    assert_eq!(
        report.by_purpose.get(&("care".to_owned(), Decision::Allow)),
        Some(&3)
    );
    let text = report.to_string();
    assert!(text.contains("tree size  12"), "{text}");
    assert!(
        text.contains("2026-11-21T09:00:00Z .. 2026-11-21T09:11:00Z"),
        "{text}"
    );
    assert!(text.contains("train.intent"), "{text}");
}

#[test]
fn a_changed_byte_that_breaks_the_entry_is_named_by_line_and_seq() {
    let f = fixture(10);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l = lines(f.out.path());
    l[6] = l[6].replace("\"actor\":", "\"actor\" :");
    write_lines(f.out.path(), &l);
    match verify_dir(f.out.path(), None, &[]) {
        Err(VerifyError::BadEntry {
            line: 7, seq: 6, ..
        }) => {}
        other => panic!("expected BadEntry at line 7, got {other:?}"),
    }
}

#[test]
fn a_changed_byte_that_keeps_the_entry_valid_changes_the_root() {
    let f = fixture(10);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l = lines(f.out.path());
    l[3] = l[3].replace("app-1", "app-2");
    write_lines(f.out.path(), &l);
    let err = verify_dir(f.out.path(), None, &[]).unwrap_err();
    assert!(
        matches!(err, VerifyError::RootMismatch { size: 10, .. }),
        "{err}"
    );
}

#[test]
fn an_old_checkpoint_narrows_a_root_mismatch_to_the_lines_after_it() {
    let f = fixture(10);
    let old = f.log.checkpoint(&key(1), ORIGIN).unwrap();
    for i in 10..20 {
        f.log.append(draft(i)).unwrap();
    }
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l = lines(f.out.path());
    l[15] = l[15].replace("app-1", "app-9");
    write_lines(f.out.path(), &l);
    let err = verify_dir(f.out.path(), Some(&old), &[]).unwrap_err();
    assert!(matches!(err, VerifyError::RootMismatch { .. }), "{err}");
    assert!(err.to_string().contains("line 11 or later"), "{err}");
}

#[test]
fn every_single_changed_byte_in_the_entries_is_detected() {
    let f = fixture(4);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let path = f.out.path().join("entries.jsonl");
    let original = std::fs::read(&path).unwrap();
    for i in 0..original.len() {
        let mut b = original.clone();
        b[i] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        assert!(
            verify_dir(f.out.path(), None, &[]).is_err(),
            "flipping byte {i} ({:?}) went unnoticed",
            original[i] as char
        );
    }
    std::fs::write(&path, &original).unwrap();
    verify_dir(f.out.path(), None, &[]).unwrap();
}

#[test]
fn a_removed_line_is_named() {
    let f = fixture(10);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l = lines(f.out.path());
    l.remove(4);
    write_lines(f.out.path(), &l);
    match verify_dir(f.out.path(), None, &[]) {
        Err(VerifyError::SeqGap {
            line: 5,
            expected: 4,
            found: 5,
        }) => {}
        other => panic!("expected SeqGap at line 5, got {other:?}"),
    }
    // Dropping the last line leaves the seqs contiguous: the size gives it away.
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l2 = lines(f.out.path());
    l2.pop();
    write_lines(f.out.path(), &l2);
    assert!(matches!(
        verify_dir(f.out.path(), None, &[]),
        Err(VerifyError::SizeMismatch {
            entries: 9,
            checkpoint: 10
        })
    ));
}

#[test]
fn reordered_lines_are_named() {
    let f = fixture(10);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l = lines(f.out.path());
    l.swap(2, 3);
    write_lines(f.out.path(), &l);
    match verify_dir(f.out.path(), None, &[]) {
        Err(VerifyError::SeqGap {
            line: 3,
            expected: 2,
            found: 3,
        }) => {}
        other => panic!("expected SeqGap at line 3, got {other:?}"),
    }
}

#[test]
fn a_truncated_log_resigned_with_another_key_is_caught() {
    // The auditor kept a checkpoint of the genuine log at size 10.
    let genuine = fixture(10);
    let old = genuine.log.checkpoint(&key(1), ORIGIN).unwrap();
    // The forger rebuilds the first 6 entries and signs with a key of their own, replacing
    // log.pub too. On its own the export is self-consistent…
    let forged = fixture(6);
    export_dir(&forged.log, &key(66), ORIGIN, forged.out.path()).unwrap();
    verify_dir(forged.out.path(), None, &[]).unwrap();
    // …but not against the old checkpoint,
    let err = verify_dir(forged.out.path(), Some(&old), &[]).unwrap_err();
    assert!(matches!(err, VerifyError::Since(_)), "{err}");
    // nor against the pinned log key.
    let pinned = NoteSigner::from_key(ORIGIN, &key(1)).unwrap().verifier();
    let err = verify_dir(forged.out.path(), None, &[pinned]).unwrap_err();
    assert!(matches!(err, VerifyError::LogKeyMismatch { .. }), "{err}");
    // Truncated and re-signed with the genuine key: the old checkpoint is longer.
    export_dir(&forged.log, &key(1), ORIGIN, forged.out.path()).unwrap();
    let err = verify_dir(forged.out.path(), Some(&old), &[]).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Truncated {
                old_size: 10,
                new_size: 6
            }
        ),
        "{err}"
    );
}

#[test]
fn a_rewritten_history_signed_with_the_genuine_key_is_inconsistent() {
    let f = fixture(8);
    let old = f.log.checkpoint(&key(1), ORIGIN).unwrap();
    // Same key, different history of the same length and longer.
    let fork = fixture(0);
    for i in 0..12 {
        let mut d = draft(i);
        if i == 2 {
            d.purpose = Some("marketing".into());
        }
        fork.log.append(d).unwrap();
    }
    export_dir(&fork.log, &key(1), ORIGIN, fork.out.path()).unwrap();
    let err = verify_dir(fork.out.path(), Some(&old), &[]).unwrap_err();
    assert!(
        matches!(err, VerifyError::Inconsistent { old_size: 8, .. }),
        "{err}"
    );
}

#[test]
fn a_log_that_only_grew_is_consistent_with_its_old_checkpoint() {
    let f = fixture(7);
    let old = f.log.checkpoint(&key(1), ORIGIN).unwrap();
    for i in 7..30 {
        f.log.append(draft(i)).unwrap();
    }
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let r = verify_dir(f.out.path(), Some(&old), &[]).unwrap();
    assert_eq!(r.consistent_with, Some(7));
    // A checkpoint of the same size is consistent too.
    let same = f.log.checkpoint(&key(1), ORIGIN).unwrap();
    assert_eq!(
        verify_dir(f.out.path(), Some(&same), &[])
            .unwrap()
            .consistent_with,
        Some(30)
    );
}

#[test]
fn witness_cosignatures_are_checked_and_unknown_ones_ignored() {
    let f = fixture(5);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let cp_path = f.out.path().join("checkpoint");
    let note = std::fs::read_to_string(&cp_path).unwrap();
    let witness = NoteSigner::from_key("coordinator.example", &key(2)).unwrap();
    let stranger = NoteSigner::from_key("stranger.example", &key(3)).unwrap();
    let cosigned = stranger
        .add_signature(&witness.add_signature(&note).unwrap())
        .unwrap();
    std::fs::write(&cp_path, &cosigned).unwrap();

    let r = verify_dir(f.out.path(), None, &[witness.verifier()]).unwrap();
    assert_eq!(r.cosigners, vec!["coordinator.example".to_owned()]);
    assert_eq!(r.unknown_signers, vec!["stranger.example".to_owned()]);
    assert!(r.to_string().contains("cosigned   by coordinator.example"));

    // A witness signature that does not verify is an error, not something to skip.
    let line = cosigned
        .lines()
        .find(|l| l.starts_with("\u{2014} coordinator.example "))
        .unwrap()
        .to_owned();
    let (prefix, sig_b64) = line.rsplit_once(' ').unwrap();
    let mut raw = B64.decode(sig_b64).unwrap();
    raw[10] ^= 0x01; // inside the Ed25519 signature, after the 4-byte key id
    let broken = cosigned.replace(&line, &format!("{prefix} {}", B64.encode(raw)));
    std::fs::write(&cp_path, &broken).unwrap();
    let err = verify_dir(f.out.path(), None, &[witness.verifier()]).unwrap_err();
    assert!(err.to_string().contains("coordinator.example"), "{err}");
    // Without the witness key the same note is still fine: that signer is just unknown.
    assert!(verify_dir(f.out.path(), None, &[]).is_ok());
}

#[test]
fn an_overlong_line_is_refused_without_reading_it_whole() {
    let f = fixture(3);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let mut l = lines(f.out.path());
    l.insert(1, "x".repeat(3 << 20));
    write_lines(f.out.path(), &l);
    let err = verify_dir(f.out.path(), None, &[]).unwrap_err();
    assert!(
        matches!(&err, VerifyError::BadLine { line: 2, reason } if reason.contains("longer than")),
        "{err}"
    );
}

#[test]
fn a_named_witness_whose_cosignature_is_missing_fails_verification() {
    let witness = NoteSigner::from_key("coordinator.example", &key(2)).unwrap();
    // A genuine export whose witnessed checkpoint was deleted.
    let f = fixture(5);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let err = verify_dir(f.out.path(), None, &[witness.verifier()]).unwrap_err();
    assert!(matches!(err, VerifyError::NotWitnessed(_)), "{err}");
    assert!(err.to_string().contains("coordinator.example"), "{err}");
    // A log forged under a new key, with its own log.pub: the same.
    let forged = fixture(3);
    export_dir(&forged.log, &key(9), ORIGIN, forged.out.path()).unwrap();
    let err = verify_dir(forged.out.path(), None, &[witness.verifier()]).unwrap_err();
    assert!(matches!(err, VerifyError::NotWitnessed(_)), "{err}");
    // Once the witness has cosigned, it passes.
    let cp_path = f.out.path().join("checkpoint");
    let note = std::fs::read_to_string(&cp_path).unwrap();
    std::fs::write(&cp_path, witness.add_signature(&note).unwrap()).unwrap();
    assert!(verify_dir(f.out.path(), None, &[witness.verifier()]).is_ok());
}

#[test]
fn a_pruned_log_exports_and_verifies_with_its_prefix_hashes() {
    let f = fixture(40);
    let old = f.log.checkpoint(&key(1), ORIGIN).unwrap();
    f.log.prune_before(17).unwrap();
    for i in 40..45 {
        f.log.append(draft(i)).unwrap();
    }
    let s = export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    assert_eq!((s.first_seq, s.entries, s.size), (17, 28, 45));
    assert!(f.out.path().join("prefix.json").exists());
    let r = verify_dir(f.out.path(), Some(&old), &[]).unwrap();
    assert_eq!(
        (r.first_seq, r.entries, r.consistent_with),
        (17, 28, Some(40))
    );
    assert_eq!(lines(f.out.path()).len(), 28);

    // A forged prefix does not lead to the signed root.
    let p = f.out.path().join("prefix.json");
    let json = std::fs::read_to_string(&p).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let first_peak = v["peaks"][0].as_str().unwrap().to_owned();
    let forged = json.replacen(
        &first_peak,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        1,
    );
    std::fs::write(&p, forged).unwrap();
    assert!(matches!(
        verify_dir(f.out.path(), None, &[]),
        Err(VerifyError::RootMismatch { .. })
    ));
    // And an old checkpoint inside the pruned prefix is refused with a clear reason.
    std::fs::write(&p, json).unwrap();
    let early_db = tempfile::tempdir().unwrap();
    let early = AuditLog::open(&sled::open(early_db.path()).unwrap()).unwrap();
    for i in 0..5 {
        early.append(draft(i)).unwrap();
    }
    let early_cp = early.checkpoint(&key(1), ORIGIN).unwrap();
    assert!(matches!(
        verify_dir(f.out.path(), Some(&early_cp), &[]),
        Err(VerifyError::SinceInPrunedPrefix {
            old_size: 5,
            first_kept: 17
        })
    ));
}

#[test]
fn a_checkpoint_from_a_log_key_that_does_not_match_log_pub_is_refused() {
    let f = fixture(5);
    export_dir(&f.log, &key(1), ORIGIN, f.out.path()).unwrap();
    let other = NoteSigner::from_key(ORIGIN, &key(7)).unwrap().verifier();
    std::fs::write(f.out.path().join("log.pub"), format!("{other}\n")).unwrap();
    assert!(matches!(
        verify_dir(f.out.path(), None, &[]),
        Err(VerifyError::Checkpoint(_))
    ));
    let parsed = NoteVerifier::parse(&other.to_string()).unwrap();
    assert_eq!(parsed, other);
}
