//! The one access path: consent and policy in front of every read, and one audit entry
//! for every operation.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{Action, Decision as Logged};
use amble_crypto::ExternalRef;
use amble_node::{Actor, Collection, ConsentChange, NewRecord, Node, ReadOutcome, TimeRange};
use amble_policy::Role;
use time::OffsetDateTime;

fn actor(role: Role) -> Actor {
    Actor::local(format!("{role}:test"), role)
}

fn r(s: &str) -> ExternalRef {
    ExternalRef::parse(s).unwrap()
}

fn rec(c: Collection, days_ago: i64, data: serde_json::Value) -> NewRecord {
    let serde_json::Value::Object(data) = data else {
        panic!("object")
    };
    NewRecord {
        collection: c,
        time: OffsetDateTime::now_utc() - time::Duration::days(days_ago),
        data,
    }
}

/// A node holding one person with a profile, an interaction and a health record.
fn node_with_person() -> (tempfile::TempDir, Node, ExternalRef) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let p = r("phone:+15550100");
    let op = actor(Role::Admin);
    node.append_batch(
        &op,
        &[
            (
                p.clone(),
                rec(Collection::Profile, 1, serde_json::json!({"birth_year": 1987, "city": "Lyon", "display_name": "Ann"})),
            ),
            (
                p.clone(),
                rec(Collection::Interactions, 1, serde_json::json!({"channel": "chat",
                    "text": "card 4111 1111 1111 1111 lost, mail ann@example.org", "intent": "lost_or_stolen_card"})),
            ),
            (
                p.clone(),
                rec(Collection::Health, 1, serde_json::json!({"accessibility_needs": "screen reader"})),
            ),
        ],
    )
    .unwrap();
    (dir, node, p)
}

fn give(node: &Node, p: &ExternalRef, purpose: &str, explicit: bool) {
    node.change_consent(
        &actor(Role::Admin),
        p,
        purpose,
        ConsentChange::Give {
            valid_until: None,
            explicit,
        },
    )
    .unwrap();
}

#[test]
fn withdrawal_between_two_reads_denies_the_second() {
    let (_d, node, p) = node_with_person();
    let trainer = actor(Role::Node);
    let ReadOutcome::Denied(reason) = node
        .read(&trainer, &p, "train.intent", TimeRange::ALL)
        .unwrap()
    else {
        panic!("read without consent was allowed")
    };
    assert_eq!(
        reason.to_string(),
        "no consent for train.intent has been given"
    );
    give(&node, &p, "train.intent", false);
    assert!(matches!(
        node.read(&trainer, &p, "train.intent", TimeRange::ALL)
            .unwrap(),
        ReadOutcome::Allowed(_)
    ));
    node.change_consent(
        &actor(Role::Admin),
        &p,
        "train.intent",
        ConsentChange::Withdraw,
    )
    .unwrap();
    let ReadOutcome::Denied(reason) = node
        .read(&trainer, &p, "train.intent", TimeRange::ALL)
        .unwrap()
    else {
        panic!("read after withdrawal was allowed")
    };
    assert!(
        reason
            .to_string()
            .starts_with("consent for train.intent withdrawn on ")
    );
}

#[test]
fn expired_consent_denies() {
    let (_d, node, p) = node_with_person();
    let clock = amble_audit::ManualClock::at(node.now().unix_timestamp() as u64 * 1000);
    let node = node.with_clock(std::sync::Arc::new(clock.clone()));
    node.change_consent(
        &actor(Role::Admin),
        &p,
        "train.intent",
        ConsentChange::Give {
            valid_until: Some(node.now() + time::Duration::milliseconds(300)),
            explicit: false,
        },
    )
    .unwrap();
    clock.advance(std::time::Duration::from_millis(299));
    let before = node
        .read(&actor(Role::Node), &p, "train.intent", TimeRange::ALL)
        .unwrap();
    assert!(
        matches!(before, ReadOutcome::Allowed(_)),
        "consent holds until it expires"
    );
    clock.advance(std::time::Duration::from_millis(101));
    let out = node
        .read(&actor(Role::Node), &p, "train.intent", TimeRange::ALL)
        .unwrap();
    let ReadOutcome::Denied(reason) = out else {
        panic!("expired consent allowed a read")
    };
    assert!(reason.to_string().contains("expired"), "{reason}");
}

#[test]
fn train_intent_projection_holds_masked_text_and_intent_only() {
    let (_d, node, p) = node_with_person();
    give(&node, &p, "train.intent", true);
    let ReadOutcome::Allowed(proj) = node
        .read(&actor(Role::Node), &p, "train.intent", TimeRange::ALL)
        .unwrap()
    else {
        panic!("denied")
    };
    let recs = proj.records();
    assert_eq!(recs.len(), 1, "only the interaction");
    assert_eq!(recs[0].collection(), Collection::Interactions);
    assert_eq!(
        recs[0].get("intent").and_then(|v| v.as_str()),
        Some("lost_or_stolen_card")
    );
    let text = recs[0].get("text").and_then(|v| v.as_str()).unwrap();
    assert!(
        !text.contains("4111") && !text.contains("ann@example.org"),
        "{text}"
    );
    let json = proj.to_json().to_string();
    for secret in ["1987", "Lyon", "Ann", "screen reader"] {
        assert!(!json.contains(secret), "{secret} leaked into {json}");
    }
}

#[test]
fn health_needs_explicit_consent_whatever_the_basis() {
    let (_d, node, p) = node_with_person();
    // `support` rests on a contract: readable without consent, but never health.
    let ReadOutcome::Allowed(proj) = node
        .read(&actor(Role::Agent), &p, "support", TimeRange::ALL)
        .unwrap()
    else {
        panic!("support denied")
    };
    assert!(
        proj.records()
            .iter()
            .all(|r| r.collection() != Collection::Health)
    );
    assert!(!proj.to_json().to_string().contains("screen reader"));
}

#[test]
fn retention_sweep_removes_old_records_and_keeps_young_ones() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    let p = r("phone:+1");
    let keep = node.policy().retention(Collection::Events).unwrap();
    let old_days = keep.whole_days() + 2;
    node.append_batch(
        &op,
        &[
            (
                p.clone(),
                rec(
                    Collection::Events,
                    old_days,
                    serde_json::json!({"kind": "old"}),
                ),
            ),
            (
                p.clone(),
                rec(Collection::Events, 1, serde_json::json!({"kind": "young"})),
            ),
        ],
    )
    .unwrap();
    let rep = node
        .sweep_retention(&op, OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(rep.removed.get("events"), Some(&1));
    let s = node.subject_of(&p).unwrap();
    assert_eq!(node.count(&s, Some(Collection::Events)), 1);
    let export = node.export(&op, &p).unwrap();
    assert_eq!(
        export.document["archive"]["records"]["events"][0]["data"]["kind"],
        "young"
    );
    let last_sweep = node
        .audit_log()
        .entries(..)
        .unwrap()
        .into_iter()
        .find(|e| e.action == Action::RetentionSweep)
        .unwrap();
    assert_eq!(last_sweep.counts.get("events"), Some(&1));
    assert!(last_sweep.subject.is_none(), "counts, not whom");
}

#[test]
fn a_retention_longer_than_the_calendar_expires_nothing_instead_of_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    let path = dir.path().join("policy.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let v = node.policy().version();
    let long = good
        .replacen("events = \"P6Y\"", "events = \"P20000Y\"", 1)
        .replacen(
            &format!("version = {v}"),
            &format!("version = {}", v + 1),
            1,
        );
    assert_ne!(long, good);
    std::fs::write(&path, long).unwrap();
    node.reload_policy(&op).unwrap();
    let p = r("phone:+1");
    node.append_batch(
        &op,
        &[(
            p.clone(),
            rec(Collection::Events, 4000, serde_json::json!({"kind": "old"})),
        )],
    )
    .unwrap();
    let rep = node
        .sweep_retention(&op, OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(rep.removed.get("events"), None);
    let s = node.subject_of(&p).unwrap();
    assert_eq!(node.count(&s, Some(Collection::Events)), 1);
}

#[test]
fn a_record_dated_far_in_the_future_is_refused_and_nothing_of_its_batch_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    let p = r("phone:+1");
    let mut far = rec(Collection::Events, 1, serde_json::json!({"kind": "future"}));
    far.time = time::macros::datetime!(9999-01-01 00:00 UTC);
    let batch = [
        (
            p.clone(),
            rec(Collection::Events, 1, serde_json::json!({"kind": "now"})),
        ),
        (p.clone(), far),
    ];
    let logged = node.audit_log().size();
    let err = node.append_batch(&op, &batch).unwrap_err();
    assert!(
        matches!(err, amble_node::NodeError::TimeOutOfRange(_)),
        "{err}"
    );
    assert!(node.subject_of(&p).is_err(), "the batch was partly written");
    assert_eq!(node.audit_log().size(), logged, "an append was logged");
}

#[test]
fn a_changed_policy_must_declare_a_higher_version() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    let path = dir.path().join("policy.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let v = node.policy().version();
    let before = node.policy().retention(Collection::Interactions);
    // The same text reloads (SIGHUP for a new CRL leaves the policy as it is).
    assert_eq!(node.reload_policy(&op).unwrap(), v);
    let changed = good.replacen("interactions = \"P2Y\"", "interactions = \"P9Y\"", 1);
    assert_ne!(changed, good);
    std::fs::write(&path, &changed).unwrap();
    let err = node.reload_policy(&op).unwrap_err().to_string();
    assert!(err.contains("version"), "{err}");
    assert_eq!(node.policy().retention(Collection::Interactions), before);
    let lower = changed.replacen(&format!("version = {v}"), "version = 0", 1);
    std::fs::write(&path, lower).unwrap();
    assert!(node.reload_policy(&op).is_err());
    let bumped = changed.replacen(
        &format!("version = {v}"),
        &format!("version = {}", v + 1),
        1,
    );
    std::fs::write(&path, bumped).unwrap();
    assert_eq!(node.reload_policy(&op).unwrap(), v + 1);
    assert_ne!(node.policy().retention(Collection::Interactions), before);
}

#[test]
fn receipts_verify_with_the_node_key_and_not_after_a_change() {
    let (_d, node, p) = node_with_person();
    let receipt = node
        .change_consent(
            &actor(Role::Admin),
            &p,
            "personalisation",
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        )
        .unwrap();
    let key = node.signing_key().verifying_key();
    let bytes = receipt.bytes().to_vec();
    assert!(amble_consent::verify_receipt(&bytes, &key).is_ok());
    let mut bad = bytes.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x01;
    assert!(amble_consent::verify_receipt(&bad, &key).is_err());
    assert!(
        !String::from_utf8_lossy(&bytes).contains("15550100"),
        "no ref in receipt"
    );
}

#[test]
fn every_operation_writes_exactly_one_audit_entry_with_the_right_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    let app = actor(Role::App);
    let (p, q, e) = (r("phone:+1"), r("phone:+2"), r("email:x@y.z"));
    let one = |c, d| rec(c, 1, d);

    type Step<'a> = (Action, Logged, Box<dyn FnMut(&mut Node) + 'a>);
    let mut steps: Vec<Step> = vec![
        (
            Action::Append,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.append(
                    &op,
                    &p,
                    &one(Collection::Goals, serde_json::json!({"goal": "house"})),
                )
                .unwrap();
            }),
        ),
        (
            Action::Read,
            Logged::Deny,
            Box::new(|n: &mut Node| {
                n.read(&app, &p, "personalisation", TimeRange::ALL).unwrap();
            }),
        ),
        (
            Action::ConsentChange,
            Logged::None,
            Box::new(|n: &mut Node| give(n, &p, "personalisation", false)),
        ),
        (
            Action::Read,
            Logged::Allow,
            Box::new(|n: &mut Node| {
                n.read(&app, &p, "personalisation", TimeRange::ALL).unwrap();
            }),
        ),
        (
            Action::Link,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.link(&op, &p, &e).unwrap();
            }),
        ),
        (
            Action::Unlink,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.unlink(&op, &e).unwrap();
            }),
        ),
        (
            Action::Append,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.append(
                    &op,
                    &q,
                    &one(Collection::Events, serde_json::json!({"kind": "x"})),
                )
                .unwrap();
            }),
        ),
        (
            Action::Merge,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.merge(&op, &p, &q).unwrap();
            }),
        ),
        (
            Action::Export,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.export(&op, &p).unwrap();
            }),
        ),
        (
            Action::RetentionSweep,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.sweep_retention(&op, OffsetDateTime::now_utc()).unwrap();
            }),
        ),
        (
            Action::RotateKey,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.rotate_key(&op).unwrap();
            }),
        ),
        (
            Action::Erase,
            Logged::None,
            Box::new(|n: &mut Node| {
                n.erase(&op, &p).unwrap();
            }),
        ),
    ];
    let subject = node.pseudonym(&p);
    let other = node.pseudonym(&q);
    for (i, (action, decision, step)) in steps.iter_mut().enumerate() {
        let before = node.audit_log().size();
        step(&mut node);
        let after = node.audit_log().size();
        assert_eq!(
            after,
            before + 1,
            "step {i} ({action:?}) wrote {} entries",
            after - before
        );
        let entry = node.audit_log().entry(before).unwrap();
        assert_eq!(&entry.action, action, "step {i}");
        assert_eq!(entry.decision, *decision, "step {i}");
        assert!(!entry.request_id.is_empty());
        let needs_subject = !matches!(action, Action::RetentionSweep | Action::RotateKey);
        if needs_subject {
            let expected = if i == 6 { other } else { subject };
            assert_eq!(
                entry.subject,
                Some(expected),
                "step {i} names the pseudonym"
            );
        }
        if *action == Action::Read {
            assert_eq!(entry.purpose.as_deref(), Some("personalisation"));
            assert_eq!(entry.role, "app");
            assert!(entry.policy_version.is_some());
        }
        if *decision == Logged::Allow {
            assert!(
                !entry.fields.is_empty(),
                "an allowed read lists the fields it touched"
            );
        }
        let line = String::from_utf8(entry.to_canonical_json().unwrap()).unwrap();
        assert!(
            !line.contains("phone:") && !line.contains("house"),
            "{line}"
        );
    }
}

#[test]
fn invalid_policy_reload_keeps_the_old_policy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    let path = dir.path().join("policy.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let v = node.policy().version();
    std::fs::write(
        &path,
        good.replacen("legal_basis = \"contract\"", "legal_basis = \"x\"", 1),
    )
    .unwrap();
    let err = node.reload_policy(&op).unwrap_err().to_string();
    assert!(err.contains("legal basis"), "{err}");
    assert_eq!(node.policy().version(), v, "old policy still in force");
    let bumped = good.replacen(
        &format!("version = {v}"),
        &format!("version = {}", v + 1),
        1,
    );
    assert_ne!(bumped, good, "the example declares `version = {v}`");
    std::fs::write(&path, bumped).unwrap();
    assert_eq!(node.reload_policy(&op).unwrap(), v + 1);
    assert_eq!(node.policy().version(), v + 1);
}

#[test]
fn pruned_audit_log_still_verifies_after_export() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let op = actor(Role::Admin);
    for i in 0..10 {
        node.append(
            &op,
            &r(&format!("phone:+{i}")),
            &rec(Collection::Goals, 1, serde_json::json!({"goal": i})),
        )
        .unwrap();
    }
    let removed = node
        .prune_audit_before(&op, OffsetDateTime::now_utc() + time::Duration::seconds(1))
        .unwrap();
    assert_eq!(removed, 10);
    let out = dir.path().join("export");
    amble_audit::export_dir(node.audit_log(), node.signing_key(), node.origin(), &out).unwrap();
    let report = amble_audit::verify_dir(&out, None, &[]).unwrap();
    assert_eq!(report.first_seq, 10);
    assert_eq!(report.size, 11);
}
