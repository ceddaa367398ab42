//! Restriction (GDPR Art. 18) and objection (Art. 21) at the node's read paths: a direct read
//! (what `Archive.Read` serves) and training (the central run and a federated round, which
//! read people through the same function). `Assist.PredictNeeds` is covered in `needs.rs`. Each
//! change is audited and answered with a signed receipt.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::Action;
use amble_consent::verify_receipt;
use amble_crypto::ExternalRef;
use amble_learn::privacy::{Budget, Delta, Epsilon};
use amble_learn::train::{IntentTrainConfig, TextRow};
use amble_node::{
    Actor, Collection, ConsentChange, NewRecord, Node, NodeError, ReadOutcome, TimeRange,
};
use amble_policy::{DenyReason, Role};

const TEXTS: [(&str, &str); 4] = [
    ("my card has not arrived yet", "card_arrival"),
    ("when will my new card come", "card_arrival"),
    ("I lost my card yesterday", "lost_or_stolen_card"),
    ("someone stole my card", "lost_or_stolen_card"),
];

fn op() -> Actor {
    Actor::local("operator:test", Role::Admin)
}

fn person(i: usize) -> ExternalRef {
    ExternalRef::parse(&format!("phone:+{i}")).unwrap()
}

/// `n` people with a profile and four interactions each, consenting to training and
/// personalisation.
fn node(dir: &std::path::Path, n: usize) -> Node {
    let node = Node::init(dir, None).unwrap();
    let mut items = Vec::new();
    for i in 0..n {
        let profile = serde_json::json!({"birth_year": 1980 + i, "city": "Shanghai"});
        let mut records = vec![(Collection::Profile, profile)];
        for (text, intent) in TEXTS {
            records.push((
                Collection::Interactions,
                serde_json::json!({"channel": "chat", "text": text, "intent": intent}),
            ));
        }
        for (k, (collection, data)) in records.into_iter().enumerate() {
            let serde_json::Value::Object(data) = data else {
                unreachable!()
            };
            items.push((
                person(i),
                NewRecord {
                    collection,
                    time: node.now() - time::Duration::hours(k as i64 + 1),
                    data,
                },
            ));
        }
    }
    node.append_batch(&op(), &items).unwrap();
    for i in 0..n {
        for purpose in ["train.intent", "personalisation"] {
            node.change_consent(
                &op(),
                &person(i),
                purpose,
                ConsentChange::Give {
                    valid_until: None,
                    explicit: false,
                },
            )
            .unwrap();
        }
    }
    node
}

fn denied(outcome: ReadOutcome) -> DenyReason {
    match outcome {
        ReadOutcome::Denied(r) => r,
        ReadOutcome::Allowed(p) => panic!("allowed: {}", p.to_json()),
    }
}

fn rows() -> Vec<TextRow> {
    TEXTS
        .iter()
        .map(|(t, l)| TextRow {
            text: (*t).to_owned(),
            label: (*l).to_owned(),
            subject: None,
        })
        .collect()
}

fn budget() -> Budget {
    Budget {
        model_epsilon: Epsilon::new(50.0).unwrap(),
        subject_epsilon: Epsilon::new(50.0).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

/// A federation's model before its first round.
fn global() -> amble_learn::model::IntentModel {
    amble_learn::model::IntentModel::initial(
        vec!["card_arrival".into(), "lost_or_stolen_card".into()],
        amble_learn::model::FeatureConfig::sentence(),
        0.0,
    )
    .unwrap()
}

/// Round `n` of plain federated training (no DP: the ledger is not what is tested here).
fn round_task(n: u64) -> amble_node::RoundTask {
    amble_node::RoundTask {
        round: n,
        base_version: n - 1,
        training: amble_learn::federation::LocalTraining::Plain {
            epochs: 1,
            learning_rate: 0.5,
            decay: 0.0,
            l2: 0.0,
        },
        clip_bound: 100.0,
    }
}

#[test]
fn a_restriction_stops_reads_needs_and_training_until_it_is_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 6);
    let ann = person(2);
    let agent = Actor::local("desk-1", Role::Agent);
    let app = Actor::local("crm", Role::App);
    let trainer = Actor::local("trainer", Role::Node);
    assert!(matches!(
        node.read(&agent, &ann, "support", TimeRange::ALL).unwrap(),
        ReadOutcome::Allowed(_)
    ));

    let receipt = node.set_restriction(&op(), &ann, true).unwrap();
    // The receipt names the controller the policy names, where it is established, and its
    // notice, in the language the policy's texts are written in.
    let text = String::from_utf8_lossy(receipt.bytes()).into_owned();
    for said in [
        "Example Bank Co., Ltd.",
        "privacy@bank.example",
        "\"jurisdiction\":\"CN\"",
        "https://bank.example/privacy",
        "\"language\":\"en\"",
    ] {
        assert!(text.contains(said), "{said} not in {text}");
    }
    let receipt = verify_receipt(receipt.bytes(), &node.signing_key().verifying_key()).unwrap();
    assert_eq!(receipt.amble_event.event, "restriction");
    // A direct read (Archive.Read), for a contract purpose and a consented one.
    for (who, purpose) in [(&agent, "support"), (&app, "personalisation")] {
        let r = denied(node.read(who, &ann, purpose, TimeRange::ALL).unwrap());
        assert_eq!(r.code(), "restricted", "{purpose}: {r}");
    }
    // Training leaves the restricted person out, and says so in the counts.
    let cfg = IntentTrainConfig::default();
    let run = node
        .train_intent(&trainer, &cfg, budget(), &rows(), None)
        .unwrap();
    assert_eq!((run.subjects_used, run.subjects_refused), (5, 1));
    // So does a federated round, which reads people through the same decision: no `train`
    // entry of the round names the restricted person.
    let round = node
        .train_round(&trainer, &global(), &round_task(1), budget())
        .unwrap()
        .1;
    assert_eq!((round.subjects_used, round.subjects_refused), (5, 1));
    let subject = node.subject_of(&ann).unwrap();
    let trained = |node: &Node| {
        node.audit_log()
            .entries_for_subject(&subject)
            .unwrap()
            .into_iter()
            .filter(|e| e.action == Action::Train && e.counts.contains_key("round"))
            .count()
    };
    assert_eq!(trained(&node), 0);
    // Asking twice changes nothing and says so.
    assert!(matches!(
        node.set_restriction(&op(), &ann, true),
        Err(NodeError::Consent(amble_consent::ConsentError::Unchanged(
            _
        )))
    ));

    node.set_restriction(&op(), &ann, false).unwrap();
    assert!(matches!(
        node.read(&agent, &ann, "support", TimeRange::ALL).unwrap(),
        ReadOutcome::Allowed(_)
    ));
    let run = node
        .train_intent(&trainer, &cfg, budget(), &rows(), None)
        .unwrap();
    assert_eq!(run.subjects_used, 6);
    let round = node
        .train_round(&trainer, &global(), &round_task(2), budget())
        .unwrap()
        .1;
    assert_eq!(round.subjects_used, 6);
    assert_eq!(trained(&node), 1, "lifted, the person is in the next round");

    // Both changes are in the person's own access log.
    let subject = node.subject_of(&ann).unwrap();
    let changes: Vec<String> = node
        .audit_log()
        .entries_for_subject(&subject)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == Action::ConsentChange)
        .filter_map(|e| e.reason)
        .filter(|r| r.starts_with("restriction"))
        .collect();
    assert_eq!(changes, ["restriction=on", "restriction=off"]);
}

#[test]
fn an_objection_stops_only_its_legitimate_interest_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 1);
    let ann = person(0);
    let analyst = Actor::local("trainer", Role::Node);
    assert!(matches!(
        node.read(&analyst, &ann, "analytics", TimeRange::ALL)
            .unwrap(),
        ReadOutcome::Allowed(_)
    ));
    node.set_objection(&op(), &ann, "analytics", true).unwrap();
    let r = denied(
        node.read(&analyst, &ann, "analytics", TimeRange::ALL)
            .unwrap(),
    );
    assert_eq!(r.code(), "objected");
    assert!(matches!(
        node.read(&analyst, &ann, "train.intent", TimeRange::ALL)
            .unwrap(),
        ReadOutcome::Allowed(_)
    ));
    // A consent purpose admits no objection (withdraw instead); a contract one neither.
    for purpose in ["train.intent", "support"] {
        let e = node.set_objection(&op(), &ann, purpose, true).unwrap_err();
        assert!(matches!(e, NodeError::NotObjectable { .. }), "{e}");
    }
    assert!(matches!(
        node.set_objection(&op(), &ann, "no.such", true),
        Err(NodeError::UnknownPurpose(_))
    ));
    node.set_objection(&op(), &ann, "analytics", false).unwrap();
    assert!(matches!(
        node.read(&analyst, &ann, "analytics", TimeRange::ALL)
            .unwrap(),
        ReadOutcome::Allowed(_)
    ));
}

#[test]
fn a_rectified_record_replaces_the_old_value_everywhere_and_the_log_names_only_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let ann = person(7);
    let serde_json::Value::Object(data) =
        serde_json::json!({"birth_year": 1987, "city": "Chengdu", "display_name": "Ann"})
    else {
        unreachable!()
    };
    let appended = node
        .append(
            &op(),
            &ann,
            &NewRecord {
                collection: Collection::Profile,
                time: node.now() - time::Duration::hours(1),
                data,
            },
        )
        .unwrap();
    let serde_json::Value::Object(fix) = serde_json::json!({"city": "Hangzhou"}) else {
        unreachable!()
    };
    let app = Actor::local("crm", Role::App);
    let collection = node.rectify(&app, &ann, appended.record_id, &fix).unwrap();
    assert_eq!(collection, Collection::Profile);

    let export = serde_json::to_string(&node.export(&op(), &ann).unwrap().document).unwrap();
    assert!(
        export.contains("Hangzhou") && !export.contains("Chengdu"),
        "{export}"
    );
    assert!(export.contains("1987"), "the other fields stay");
    let entry = node
        .audit_log()
        .entries(..)
        .unwrap()
        .into_iter()
        .find(|e| e.action == Action::Rectify)
        .unwrap();
    assert_eq!(entry.fields, ["city"]);
    let logged = serde_json::to_string(&entry).unwrap();
    assert!(
        !logged.contains("Hangzhou"),
        "the log holds no value: {logged}"
    );

    assert!(matches!(
        node.rectify(&app, &ann, appended.record_id + 99, &fix),
        Err(NodeError::UnknownRecord(_))
    ));
    assert!(matches!(
        node.rectify(&app, &ann, appended.record_id, &serde_json::Map::new()),
        Err(NodeError::NothingToRectify)
    ));
    // Field names reach the audit log: free text is refused before anything is logged.
    let before = node.audit_log().size();
    let serde_json::Value::Object(free) = serde_json::json!({"Ann Li, 138 1234 5678": "x"}) else {
        unreachable!()
    };
    assert!(matches!(
        node.rectify(&app, &ann, appended.record_id, &free),
        Err(NodeError::BadFieldName(_))
    ));
    assert_eq!(node.audit_log().size(), before);
}
