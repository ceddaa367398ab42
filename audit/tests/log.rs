//! The sled-backed log: proofs agree with an independent recomputation, concurrent appends
//! stay consistent, retention keeps the tree verifiable, and state survives reopening.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{
    Action, AuditError, AuditLog, Decision, Entry, EntryDraft, MemoryTree, leaf_hash,
    reference_root, verify_consistency, verify_inclusion,
};
use amble_crypto::SubjectId;
use proptest::prelude::*;
use std::sync::Arc;
use time::macros::datetime;

/// Reopens a database whose last handle was just dropped: sled's background thread can hold
/// the directory's lock a moment longer, so a busy lock is waited for (bounded), not a failure.
fn reopen(path: &std::path::Path) -> sled::Db {
    for _ in 0..200 {
        match sled::open(path) {
            Ok(db) => return db,
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{} stayed locked for 5 s", path.display());
}

fn temp_db() -> (tempfile::TempDir, sled::Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path().join("db")).unwrap();
    (dir, db)
}

fn subject(n: u8) -> SubjectId {
    SubjectId::from_bytes([n; 32])
}

fn draft(i: u64) -> EntryDraft {
    let mut d = EntryDraft::new(
        format!("app-{}", i % 3),
        "app",
        Action::Read,
        format!("req-{i}"),
    )
    .purpose(if i % 2 == 0 { "care" } else { "billing" })
    .decision(if i % 5 == 0 {
        Decision::Deny
    } else {
        Decision::Allow
    })
    .at(datetime!(2026-11-21 09:00:00 UTC) + time::Duration::seconds(i as i64));
    if i % 4 != 3 {
        d = d.subject(subject((i % 7) as u8));
    }
    d.collections = vec!["visits".into()];
    d.fields = vec!["date".into(), "reason".into()];
    d
}

fn fill(log: &AuditLog, n: u64) {
    for i in 0..n {
        assert_eq!(log.append(draft(i)).unwrap(), i);
    }
}

/// Leaf hashes recomputed from the stored entry bodies, independent of stored hashes.
fn recomputed_leaves(log: &AuditLog) -> Vec<[u8; 32]> {
    log.entries(..)
        .unwrap()
        .iter()
        .map(|e| leaf_hash(&e.to_canonical_json().unwrap()))
        .collect()
}

fn flip(h: &[u8; 32], bit: usize) -> [u8; 32] {
    let mut out = *h;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn stored_log_proofs_verify_match_recomputation_and_tampering_fails(
        n in 1u64..160,
        picks in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u64>()), 4),
        bit in 0usize..256,
    ) {
        let (_dir, db) = temp_db();
        let log = AuditLog::open(&db).unwrap();
        fill(&log, n);
        let leaves = recomputed_leaves(&log);
        let mem = MemoryTree::from_leaf_hashes(leaves.iter().copied());
        prop_assert_eq!(log.root().unwrap(), reference_root(&leaves));

        for (a, b, c) in picks {
            let size = 1 + a % n;
            let index = b % size;
            let p = log.inclusion_proof(index, size).unwrap();
            prop_assert_eq!(p.leaf_hash, leaves[index as usize]);
            prop_assert_eq!(p.root_hash, reference_root(&leaves[..size as usize]));
            prop_assert_eq!(&p.proof, &mem.inclusion_proof(index, size).unwrap());
            prop_assert!(verify_inclusion(index, size, &p.leaf_hash, &p.proof, &p.root_hash).is_ok());
            // JSON round trip keeps it checkable.
            prop_assert!(amble_audit::InclusionProof::from_json(&p.to_json()).unwrap().verify().is_ok());
            prop_assert!(verify_inclusion(index, size, &flip(&p.leaf_hash, bit), &p.proof, &p.root_hash).is_err());
            prop_assert!(verify_inclusion(index, size, &p.leaf_hash, &p.proof, &flip(&p.root_hash, bit)).is_err());
            for k in 0..p.proof.len() {
                let mut bad = p.proof.clone();
                bad[k] = flip(&bad[k], bit);
                prop_assert!(verify_inclusion(index, size, &p.leaf_hash, &bad, &p.root_hash).is_err());
            }

            let old = 1 + c % size;
            let cp = log.consistency_proof(old, size).unwrap();
            prop_assert_eq!(cp.old_root, reference_root(&leaves[..old as usize]));
            prop_assert_eq!(cp.new_root, reference_root(&leaves[..size as usize]));
            prop_assert_eq!(&cp.proof, &mem.consistency_proof(old, size).unwrap());
            prop_assert!(verify_consistency(old, size, &cp.proof, &cp.old_root, &cp.new_root).is_ok());
            prop_assert!(amble_audit::ConsistencyProof::from_json(&cp.to_json()).unwrap().verify().is_ok());
            prop_assert!(verify_consistency(old, size, &cp.proof, &flip(&cp.old_root, bit), &cp.new_root).is_err());
            prop_assert!(verify_consistency(old, size, &cp.proof, &cp.old_root, &flip(&cp.new_root, bit)).is_err());
            for k in 0..cp.proof.len() {
                let mut bad = cp.proof.clone();
                bad[k] = flip(&bad[k], bit);
                prop_assert!(verify_consistency(old, size, &bad, &cp.old_root, &cp.new_root).is_err());
            }
        }
    }
}

#[test]
fn every_proof_of_every_size_up_to_40_verifies() {
    let (_dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    fill(&log, 40);
    let leaves = recomputed_leaves(&log);
    for size in 1..=40u64 {
        let root = reference_root(&leaves[..size as usize]);
        assert_eq!(log.root_at(size).unwrap(), root);
        for i in 0..size {
            let p = log.inclusion_proof(i, size).unwrap();
            verify_inclusion(i, size, &leaves[i as usize], &p.proof, &root).unwrap();
        }
        for old in 1..=size {
            let p = log.consistency_proof(old, size).unwrap();
            verify_consistency(old, size, &p.proof, &p.old_root, &root).unwrap();
        }
    }
}

#[test]
fn proofs_beyond_the_log_are_refused() {
    let (_dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    fill(&log, 5);
    assert!(log.inclusion_proof(5, 5).is_err());
    assert!(log.inclusion_proof(0, 6).is_err());
    assert!(log.consistency_proof(0, 5).is_err());
    assert!(log.consistency_proof(3, 6).is_err());
    assert!(log.consistency_proof(4, 3).is_err());
}

#[test]
fn concurrent_appends_from_four_threads_leave_a_consistent_tree() {
    let (_dir, db) = temp_db();
    let log = Arc::new(AuditLog::open(&db).unwrap());
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                for i in 0..150u64 {
                    let d = draft(t * 1000 + i);
                    let seq = match i % 10 {
                        0 => log.append_durable(d).unwrap(),
                        1 => log.append_batch(vec![d.clone(), d]).unwrap().start,
                        _ => log.append(d).unwrap(),
                    };
                    seqs.push(seq);
                }
                seqs
            })
        })
        .collect();
    let mut seqs: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    log.flush().unwrap();
    // 4 threads × (135 single + 15 batches of 2) = 660 entries.
    assert_eq!(log.size(), 660);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 600, "every append got its own seq");
    let entries = log.entries(..).unwrap();
    let got: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(got, (0..660).collect::<Vec<_>>(), "seqs contiguous");
    let leaves = recomputed_leaves(&log);
    assert_eq!(log.root().unwrap(), reference_root(&leaves));
    // And the stored hashes agree with the entries after reopening from disk.
    drop(log);
    let reopened = AuditLog::open(&db).unwrap();
    assert_eq!(reopened.root().unwrap(), reference_root(&leaves));
}

#[test]
fn reopening_restores_size_root_and_continues_the_sequence() {
    let (dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    fill(&log, 13);
    log.flush().unwrap();
    let root = log.root().unwrap();
    drop(log);
    drop(db);
    let db = reopen(&dir.path().join("db"));
    let log = AuditLog::open(&db).unwrap();
    assert_eq!(log.size(), 13);
    assert_eq!(log.root().unwrap(), root);
    assert_eq!(log.append(draft(13)).unwrap(), 13);
    let leaves = recomputed_leaves(&log);
    assert_eq!(log.root().unwrap(), reference_root(&leaves));
}

#[test]
fn batch_append_assigns_contiguous_seqs_and_matches_single_appends() {
    let (_d1, db1) = temp_db();
    let (_d2, db2) = temp_db();
    let one = AuditLog::open(&db1).unwrap();
    let many = AuditLog::open(&db2).unwrap();
    fill(&one, 20);
    assert_eq!(
        many.append_batch((0..7).map(draft).collect()).unwrap(),
        0..7
    );
    assert_eq!(many.append_batch(vec![]).unwrap(), 7..7);
    assert_eq!(
        many.append_batch((7..20).map(draft).collect()).unwrap(),
        7..20
    );
    assert_eq!(one.root().unwrap(), many.root().unwrap());
}

#[test]
fn entries_about_a_subject_are_found_by_pseudonym_only() {
    let (_dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    fill(&log, 30);
    let found = log.entries_for_subject(&subject(2)).unwrap();
    let want: Vec<u64> = (0..30u64).filter(|i| i % 4 != 3 && i % 7 == 2).collect();
    assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), want);
    assert!(found.iter().all(|e| e.subject == Some(subject(2))));
    assert!(log.entries_for_subject(&subject(99)).unwrap().is_empty());
}

#[test]
fn entry_canonical_json_has_fixed_order_and_no_whitespace() {
    let (_dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    let d = EntryDraft::new("sweeper", "node", Action::RetentionSweep, "r-1")
        .at(datetime!(2026-11-21 10:00:00.25 +01:00))
        .count("records_removed", 12)
        .count("a_first", 1);
    log.append(d).unwrap();
    let e = log.entry(0).unwrap();
    let json = String::from_utf8(e.to_canonical_json().unwrap()).unwrap();
    assert_eq!(
        json,
        r#"{"seq":0,"time":"2026-11-21T09:00:00.25Z","actor":"sweeper","role":"node","action":"retention_sweep","subject":null,"purpose":null,"collections":[],"fields":[],"decision":"none","reason":null,"policy_version":null,"request_id":"r-1","counts":{"a_first":1,"records_removed":12}}"#
    );
    assert_eq!(Entry::from_canonical_json(json.as_bytes()).unwrap(), e);
    let spaced = json.replace(",\"actor\"", ", \"actor\"");
    assert!(Entry::from_canonical_json(spaced.as_bytes()).is_err());
    let not_utc = json.replace("09:00:00.25Z", "10:00:00.25+01:00");
    assert!(Entry::from_canonical_json(not_utc.as_bytes()).is_err());
    let extra = json.replace("\"seq\":0,", "\"seq\":0,\"phone\":\"+15550001\",");
    assert!(Entry::from_canonical_json(extra.as_bytes()).is_err());
}

#[test]
fn unknown_actions_round_trip_and_bad_names_are_refused() {
    assert_eq!(Action::parse("read").unwrap(), Action::Read);
    assert_eq!(Action::parse("denied_call").unwrap(), Action::DeniedCall);
    assert_eq!(
        Action::parse("witness_cosign").unwrap(),
        Action::Other("witness_cosign".into())
    );
    for bad in ["", "Read", "read write", "read-x", "ü"] {
        assert!(Action::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn pruning_drops_bodies_but_keeps_roots_and_proofs() {
    let (_dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    fill(&log, 50);
    let leaves = recomputed_leaves(&log);
    let root = log.root().unwrap();
    let before = log.consistency_proof(10, 50).unwrap();

    assert_eq!(log.prune_before(21).unwrap(), 21);
    assert_eq!(
        log.prune_before(5).unwrap(),
        0,
        "pruning never moves backwards"
    );
    assert_eq!(log.size(), 50);
    assert_eq!(log.first_kept().unwrap(), 21);
    assert_eq!(log.root().unwrap(), root);
    assert!(matches!(log.entry(3), Err(AuditError::Pruned(3))));
    assert_eq!(log.entry(21).unwrap().seq, 21);
    assert_eq!(log.entries(..).unwrap().len(), 29);
    assert!(
        log.entries_for_subject(&subject(0))
            .unwrap()
            .iter()
            .all(|e| e.seq >= 21)
    );
    for i in [0u64, 7, 20, 21, 49] {
        let p = log.inclusion_proof(i, 50).unwrap();
        verify_inclusion(i, 50, &leaves[i as usize], &p.proof, &root).unwrap();
    }
    assert_eq!(log.consistency_proof(10, 50).unwrap(), before);

    // Appends continue and the log reopens with the prune boundary.
    assert_eq!(log.append(draft(50)).unwrap(), 50);
    drop(log);
    let log = AuditLog::open(&db).unwrap();
    assert_eq!(log.first_kept().unwrap(), 21);
    assert_eq!(log.size(), 51);
    assert_eq!(
        log.prune_before(1000).unwrap(),
        30,
        "clamped to the log size"
    );
    assert_eq!(log.size(), 51);
}

#[test]
fn proofs_over_the_in_memory_upper_levels_agree_before_and_after_reopening() {
    // 9000 entries reach level 13, so the cached upper levels are used and rebuilt on open.
    let (_dir, db) = temp_db();
    let log = AuditLog::open(&db).unwrap();
    for chunk in (0..9000u64).collect::<Vec<_>>().chunks(1500) {
        log.append_batch(chunk.iter().map(|&i| draft(i)).collect())
            .unwrap();
    }
    let leaves = recomputed_leaves(&log);
    let mem = MemoryTree::from_leaf_hashes(leaves.iter().copied());
    let check = |log: &AuditLog| {
        for (i, size) in [
            (0u64, 9000u64),
            (4095, 4096),
            (4096, 8192),
            (8999, 9000),
            (17, 8193),
        ] {
            let p = log.inclusion_proof(i, size).unwrap();
            assert_eq!(p.proof, mem.inclusion_proof(i, size).unwrap());
            assert_eq!(p.root_hash, mem.root_at(size).unwrap());
            p.verify().unwrap();
        }
        for (old, new) in [(4096u64, 9000u64), (1, 9000), (8191, 8193), (5000, 8192)] {
            let p = log.consistency_proof(old, new).unwrap();
            assert_eq!(p.proof, mem.consistency_proof(old, new).unwrap());
            p.verify().unwrap();
        }
        assert_eq!(log.root().unwrap(), reference_root(&leaves));
    };
    check(&log);
    drop(log);
    check(&AuditLog::open(&db).unwrap());
}

#[test]
fn a_second_log_instance_on_the_same_database_is_refused_not_interleaved() {
    let (_dir, db) = temp_db();
    let first = AuditLog::open(&db).unwrap();
    let second = AuditLog::open(&db).unwrap();
    fill(&first, 3);
    assert!(matches!(
        second.append(draft(99)),
        Err(AuditError::SecondInstance(0))
    ));
    assert_eq!(first.append(draft(3)).unwrap(), 3);
    let leaves = recomputed_leaves(&first);
    assert_eq!(first.root().unwrap(), reference_root(&leaves));
}

#[test]
fn entries_are_stamped_by_the_injected_clock_and_move_with_it() {
    let (_dir, db) = temp_db();
    let clock = amble_audit::ManualClock::at(1_700_000_000_000);
    let log = AuditLog::open(&db)
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let first = log
        .append(EntryDraft::new("a", "app", Action::Read, "r1"))
        .unwrap();
    clock.advance(std::time::Duration::from_secs(90));
    let second = log
        .append_durable(EntryDraft::new("a", "app", Action::Read, "r2"))
        .unwrap();
    let (a, b) = (log.entry(first).unwrap(), log.entry(second).unwrap());
    assert_eq!(a.time.unix_timestamp(), 1_700_000_000);
    assert_eq!((b.time - a.time).whole_seconds(), 90);
}
