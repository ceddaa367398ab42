//! Behaviour of the encrypted archive as an operator and an attacker with the disk see it.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_crypto::ExternalRef;
use amble_node::{Actor, Collection, NewRecord, Node, NodeError};
use amble_policy::Role;
use std::path::Path;
use time::macros::datetime;

fn rec(c: Collection, day: u8, data: serde_json::Value) -> NewRecord {
    let serde_json::Value::Object(data) = data else {
        panic!("object")
    };
    NewRecord {
        collection: c,
        time: datetime!(2026-05-01 10:00 UTC) + time::Duration::days(i64::from(day)),
        data,
    }
}

fn op() -> Actor {
    Actor::local("operator:test", Role::Admin)
}

/// The archive part of a signed export.
fn export(n: &Node, r: &ExternalRef) -> Result<serde_json::Value, NodeError> {
    Ok(n.export(&op(), r)?.document["archive"].clone())
}

fn r(s: &str) -> ExternalRef {
    ExternalRef::parse(s).unwrap()
}

/// Every file under `dir`, concatenated per file.
fn raw_files(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The needles found anywhere in `files` (one Aho-Corasick pass per file).
fn count_hits(files: &[Vec<u8>], needles: &[String]) -> Vec<String> {
    let ac = aho_corasick::AhoCorasick::new(needles).unwrap();
    let mut found = std::collections::BTreeSet::new();
    for f in files {
        for m in ac.find_overlapping_iter(f) {
            found.insert(m.pattern().as_usize());
        }
    }
    found.into_iter().map(|i| needles[i].clone()).collect()
}

#[test]
fn no_marker_or_external_id_is_ever_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    // Key file outside the data directory, as recommended for production.
    let key = dir.path().join("node.key");
    let data = dir.path().join("data");
    let a = Node::init(&data, Some(&key)).unwrap();
    let mut needles = Vec::new();
    let mut batch = Vec::new();
    for i in 0..1000u32 {
        let phone = format!("phone:+4479{i:08}");
        let email = format!("email:subject{i}@marker-example.org");
        let marker = format!("MARKER-{i:05}-XYZZY");
        batch.push((
            r(&phone),
            rec(
                Collection::Interactions,
                (i % 28) as u8,
                serde_json::json!({"text": format!("my name is {marker}"), "channel": "chat"}),
            ),
        ));
        batch.push((
            r(&phone),
            rec(
                Collection::Health,
                1,
                serde_json::json!({"condition": format!("{marker}-asthma")}),
            ),
        ));
        needles.extend([phone.clone(), email.clone(), marker]);
        needles.push(phone.split_once(':').unwrap().1.to_owned());
        if batch.len() >= 400 {
            a.append_batch(&op(), &batch).unwrap();
            batch.clear();
        }
    }
    a.append_batch(&op(), &batch).unwrap();
    for i in (0..1000u32).step_by(100) {
        let phone = format!("phone:+4479{i:08}");
        a.link(
            &op(),
            &r(&phone),
            &r(&format!("email:subject{i}@marker-example.org")),
        )
        .unwrap();
    }
    a.flush().unwrap();
    assert_eq!(a.subject_count(), 1000);
    drop(a);
    let files = raw_files(&data);
    assert!(!files.is_empty());
    let hits = count_hits(&files, &needles);
    assert!(
        hits.is_empty(),
        "plaintext on disk: {:?}",
        &hits[..hits.len().min(5)]
    );
    // The check can fail: the same scan finds a marker in a file we write ourselves.
    std::fs::write(data.join("canary"), b"MARKER-00007-XYZZY").unwrap();
    assert_eq!(count_hits(&raw_files(&data), &needles).len(), 1);
}

#[test]
fn records_read_back_by_collection_and_time_range() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::init(dir.path(), None).unwrap();
    let p = r("phone:+15550001");
    for day in 0..10u8 {
        a.append(
            &op(),
            &p,
            &rec(Collection::Events, day, serde_json::json!({"day": day})),
        )
        .unwrap();
    }
    a.append(
        &op(),
        &p,
        &rec(Collection::Goals, 3, serde_json::json!({"goal": "save"})),
    )
    .unwrap();
    let s = a.subject_of(&p).unwrap();
    assert_eq!(a.count(&s, Some(Collection::Events)), 10);
    assert_eq!(a.count(&s, None), 11);
    let export = export(&a, &p).unwrap();
    let days: Vec<_> = export["records"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["day"].as_u64().unwrap())
        .collect();
    assert_eq!(days, (0..10).collect::<Vec<_>>(), "time order");
    assert_eq!(export["records"]["goals"][0]["data"]["goal"], "save");
    assert_eq!(a.subjects().unwrap(), vec![s]);
}

#[test]
fn linked_references_reach_one_subject_and_merge_moves_records() {
    let dir = tempfile::tempdir().unwrap();
    let a = Node::init(dir.path(), None).unwrap();
    let (phone, email, openid) = (r("phone:+1"), r("email:a@b.c"), r("openid:xyz"));
    a.append(
        &op(),
        &phone,
        &rec(Collection::Profile, 0, serde_json::json!({"city": "Lyon"})),
    )
    .unwrap();
    let s = a.link(&op(), &phone, &email).unwrap();
    assert_eq!(a.subject_of(&email).unwrap(), s);
    assert!(matches!(
        a.link(&op(), &phone, &email),
        Err(NodeError::RefAlreadyLinked(_))
    ));
    a.append(
        &op(),
        &openid,
        &rec(Collection::Goals, 1, serde_json::json!({"goal": "house"})),
    )
    .unwrap();
    let other = a.subject_of(&openid).unwrap();
    assert_ne!(other, s);
    let m = a.merge(&op(), &email, &openid).unwrap();
    assert_eq!(m.records_moved, 1);
    assert_eq!(a.subject_of(&openid).unwrap(), s, "refs follow the merge");
    assert_eq!(export(&a, &phone).unwrap()["record_count"], 2);
    assert_eq!(a.subject_count(), 1);
    assert!(
        a.erased_at(&other).unwrap().is_some(),
        "absorbed subject tombstoned"
    );
    a.unlink(&op(), &openid).unwrap();
    assert!(matches!(a.subject_of(&openid), Err(NodeError::UnknownRef)));
    a.unlink(&op(), &email).unwrap();
    assert!(matches!(a.unlink(&op(), &phone), Err(NodeError::LastRef)));
}

#[test]
fn erase_destroys_the_key_and_leaves_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::init(dir.path(), None).unwrap();
    let p = r("phone:+15550002");
    let keep = r("phone:+15550003");
    for i in 0..20u8 {
        a.append(
            &op(),
            &p,
            &rec(
                Collection::Interactions,
                i,
                serde_json::json!({"text": "ERASEME-77"}),
            ),
        )
        .unwrap();
    }
    a.append(
        &op(),
        &keep,
        &rec(Collection::Goals, 0, serde_json::json!({"goal": "x"})),
    )
    .unwrap();
    let s = a.subject_of(&p).unwrap();
    let rep = a.erase(&op(), &p).unwrap();
    assert_eq!(rep.records_deleted, 20);
    assert!(matches!(export(&a, &p), Err(NodeError::UnknownRef)));
    assert_eq!(a.count(&s, None), 0);
    assert!(a.erased_at(&s).unwrap().is_some());
    assert!(!a.subjects().unwrap().contains(&s));
    // After the KEK that wrapped the erased key is retired, no copy of it (sled's log,
    // an old backup) can be unwrapped any more.
    a.rotate_key(&op()).unwrap();
    assert_eq!(a.key_versions(), vec![2]);
    assert_eq!(export(&a, &keep).unwrap()["record_count"], 1);
    drop(a);
    let hits = count_hits(&raw_files(dir.path()), &["ERASEME-77".to_owned()]);
    assert!(hits.is_empty());
}

#[test]
fn rotation_keeps_every_record_readable_without_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::init(dir.path(), None).unwrap();
    let refs: Vec<_> = (0..50).map(|i| r(&format!("phone:+1{i}"))).collect();
    for (i, p) in refs.iter().enumerate() {
        a.append(
            &op(),
            p,
            &rec(Collection::Events, 0, serde_json::json!({"i": i})),
        )
        .unwrap();
    }
    let rep = a.rotate_key(&op()).unwrap();
    assert_eq!((rep.new_version, rep.keys_rewrapped), (2, 50));
    assert_eq!(rep.retired_versions, vec![1]);
    drop(a);
    // Reopen from disk: only v2 is in the key file, and every record still opens.
    let a = Node::open(dir.path(), None, None).unwrap();
    assert_eq!(a.key_versions(), vec![2]);
    for (i, p) in refs.iter().enumerate() {
        let e = export(&a, p).unwrap();
        assert_eq!(e["records"]["events"][0]["data"]["i"], i);
    }
}

#[test]
fn interrupted_rotation_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let key = amble_node::default_key_file(dir.path());
    let a = Node::init(dir.path(), None).unwrap();
    let p = r("phone:+1");
    a.append(
        &op(),
        &p,
        &rec(Collection::Events, 0, serde_json::json!({"x": 1})),
    )
    .unwrap();
    drop(a);
    // Simulate a crash right after the new key version was saved, before any rewrap.
    let mut k = amble_crypto::Keyring::load(&key).unwrap();
    k.rotate().unwrap();
    k.save(&key).unwrap();
    let a = Node::open(dir.path(), None, None).unwrap();
    assert_eq!(a.key_versions(), vec![2]);
    assert_eq!(export(&a, &p).unwrap()["record_count"], 1);
}

#[test]
fn wrong_or_exposed_key_file_and_missing_dir_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let a = Node::init(&data, None).unwrap();
    a.append(
        &op(),
        &r("phone:+1"),
        &rec(Collection::Events, 0, serde_json::json!({})),
    )
    .unwrap();
    drop(a);
    let other = dir.path().join("other.key");
    amble_crypto::Keyring::create(&other).unwrap();
    let err = Node::open(&data, Some(&other), None).unwrap_err();
    assert!(matches!(err, NodeError::WrongKeyFile { .. }), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = amble_node::default_key_file(&data);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Node::open(&data, None, None).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let err = Node::open(&dir.path().join("missing"), None, None).unwrap_err();
    assert!(err.to_string().contains("amble node init"), "{err}");
    assert!(matches!(
        Node::init(&data, None),
        Err(NodeError::AlreadyInitialised(_))
    ));
    // Refusals left the archive as it was.
    let a = Node::open(&data, None, None).unwrap();
    assert_eq!(a.subject_count(), 1);
}

#[test]
fn an_export_with_fractions_is_signed_over_its_rfc_8785_form_and_inexact_integers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::init(dir.path(), None).unwrap();
    let p = r("phone:+15550100");
    let too_big = serde_json::json!({"amount": 12.5, "account": 9_007_199_254_740_993_u64});
    let err = n
        .append(&op(), &p, &rec(Collection::Events, 1, too_big))
        .unwrap_err();
    assert!(matches!(err, NodeError::NumberNotExact(_)), "{err}");
    assert!(err.to_string().contains("account"), "{err}");

    let fine = serde_json::json!({"amount": 12.5, "rate": 1e-7, "limit": 1e30, "count": 9_007_199_254_740_992_u64});
    n.append(&op(), &p, &rec(Collection::Events, 1, fine))
        .unwrap();
    let signed = n.export(&op(), &p).unwrap();
    // What any JCS implementation makes of the document is what the signature covers.
    let canonical = amble_consent::canonical_json(&signed.document);
    let text = String::from_utf8(canonical.clone()).unwrap();
    assert!(
        text.contains("\"rate\":1e-7") && text.contains("\"limit\":1e+30"),
        "{text}"
    );
    let mut msg = b"amble/export/v1\n".to_vec();
    msg.extend_from_slice(&canonical);
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(&signed.signature.value)
        .unwrap();
    let key = amble_crypto::VerifyingKey::from_base64(&signed.signature.public_key).unwrap();
    assert!(key.verify(&msg, &sig).is_ok());
}

/// The export as documented: `docs/export-v1.schema.json` (JSON Schema 2020-12, every object
/// closed) accepts an export holding every kind of record, event and entry, and refuses one
/// with a field it does not describe — so the schema lists every field, and nothing more.
#[test]
fn an_export_with_everything_in_it_matches_its_published_schema_field_by_field() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/export-v1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = Node::init(dir.path(), None).unwrap();
    let p = r("phone:+15550101");
    for (c, data) in [
        (
            Collection::Profile,
            serde_json::json!({"display_name": "Ann", "birth_year": 1988}),
        ),
        (
            Collection::LifeStage,
            serde_json::json!({"stage": "new parent", "tags": ["parent"]}),
        ),
        (
            Collection::Goals,
            serde_json::json!({"goal": "save", "target_amount": 60000}),
        ),
        (
            Collection::Events,
            serde_json::json!({"kind": "card_ordered", "amount": 12.5}),
        ),
        (
            Collection::Interactions,
            serde_json::json!({"channel": "chat", "text": "hi"}),
        ),
        (
            Collection::Health,
            serde_json::json!({"accessibility_needs": "large print"}),
        ),
    ] {
        n.append(&op(), &p, &rec(c, 1, data)).unwrap();
    }
    let give = |purpose: &str, valid_until| {
        n.change_consent(
            &op(),
            &p,
            purpose,
            amble_node::ConsentChange::Give {
                valid_until,
                explicit: valid_until.is_none(),
            },
        )
        .unwrap();
    };
    give("personalisation", None);
    give("train.intent", Some(n.now() + time::Duration::days(30)));
    n.change_consent(
        &op(),
        &p,
        "personalisation",
        amble_node::ConsentChange::Withdraw,
    )
    .unwrap();
    n.set_ai_assistance(&op(), &p, amble_consent::AssistanceLevel::AiSuggests)
        .unwrap();
    n.set_restriction(&op(), &p, true).unwrap();
    n.set_restriction(&op(), &p, false).unwrap();
    n.set_objection(&op(), &p, "analytics", true).unwrap();
    let agent = Actor::local("desk", Role::Agent);
    n.read(&agent, &p, "personalisation", amble_node::TimeRange::ALL)
        .unwrap();
    let profile = export(&n, &p).unwrap()["records"]["profile"][0]["id"]
        .as_u64()
        .unwrap();
    let mut fix = serde_json::Map::new();
    fix.insert("display_name".into(), "Anne".into());
    n.rectify(&op(), &p, profile, &fix).unwrap();

    let signed = serde_json::to_value(n.export(&op(), &p).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&signed)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let events = signed["document"]["consent"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 7, "every recorded change is in the export");

    let mut extra = signed.clone();
    extra["document"]["consent"]["header"]["note"] = "not in the format".into();
    assert!(!validator.is_valid(&extra), "the schema is closed");
    let mut wrong = signed;
    wrong["document"]["archive"]["subject"] = "phone:+15550101".into();
    assert!(!validator.is_valid(&wrong), "a subject is a pseudonym");
}

/// The consent part of an export is derived by the node's clock, as the rest of the export is:
/// with the node's clock a year ahead of the wall clock, both parts carry the node's time (the
/// consent part used the wall clock before).
#[test]
fn the_export_s_consent_record_is_dated_by_the_node_s_clock() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::init(dir.path(), None).unwrap();
    let ahead = n.now() + time::Duration::days(365);
    let clock = amble_audit::ManualClock::at((ahead.unix_timestamp() as u64) * 1000);
    let n = n.with_clock(std::sync::Arc::new(clock));
    let p = r("phone:+15550102");
    n.append(
        &op(),
        &p,
        &rec(
            Collection::Profile,
            1,
            serde_json::json!({"city": "Chengdu"}),
        ),
    )
    .unwrap();
    let doc = n.export(&op(), &p).unwrap().document;
    let year = ahead.year().to_string();
    let generated = doc["consent"]["header"]["generatedAt"].as_str().unwrap();
    assert!(
        generated.starts_with(&year),
        "{generated} is not by the node's clock ({year})"
    );
    assert_eq!(
        doc["consent"]["header"]["generatedAt"],
        doc["archive"]["exported_at"]
    );
}
