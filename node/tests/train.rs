//! Local training through the policy: consent decides who is read, the budget ledger decides
//! whether a private run may happen, and each run leaves an entry per person it used and one
//! summary with counts.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::Action;
use amble_crypto::ExternalRef;
use amble_learn::privacy::Budget;
use amble_learn::privacy::{Delta, Epsilon};
use amble_learn::train::{DpIntentConfig, IntentTrainConfig, Privacy, TextRow};
use amble_node::{Actor, Collection, ConsentChange, NewRecord, Node, NodeError};
use amble_policy::Role;

const TEXTS: [(&str, &str); 4] = [
    ("my card has not arrived yet", "card_arrival"),
    ("when will my new card come", "card_arrival"),
    ("I lost my card yesterday", "lost_or_stolen_card"),
    ("someone stole my card", "lost_or_stolen_card"),
];

fn budget(eps: f64) -> Budget {
    Budget {
        model_epsilon: Epsilon::new(eps).unwrap(),
        subject_epsilon: Epsilon::new(eps).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

fn op() -> Actor {
    Actor::local("operator:test", Role::Admin)
}

fn trainer() -> Actor {
    Actor::local("trainer", Role::Node)
}

fn person(i: usize) -> ExternalRef {
    ExternalRef::parse(&format!("phone:+{i}")).unwrap()
}

/// `n` people, each with four interactions and consent for train.intent.
fn node(dir: &std::path::Path, n: usize) -> Node {
    let node = Node::init(dir, None).unwrap();
    let mut items = Vec::new();
    for i in 0..n {
        for (k, (text, intent)) in TEXTS.iter().enumerate() {
            let serde_json::Value::Object(data) =
                serde_json::json!({"channel": "chat", "text": text, "intent": intent})
            else {
                unreachable!()
            };
            items.push((
                person(i),
                NewRecord {
                    collection: Collection::Interactions,
                    time: time::OffsetDateTime::now_utc() - time::Duration::hours(k as i64 + 1),
                    data,
                },
            ));
        }
    }
    node.append_batch(&op(), &items).unwrap();
    for i in 0..n {
        node.change_consent(
            &op(),
            &person(i),
            "train.intent",
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        )
        .unwrap();
    }
    node
}

fn test_rows() -> Vec<TextRow> {
    TEXTS
        .iter()
        .map(|(t, l)| TextRow {
            text: (*t).to_owned(),
            label: (*l).to_owned(),
            subject: None,
        })
        .collect()
}

/// The per-person entries of the last training run (those after the previous summary).
fn last_run_people(node: &Node) -> Vec<amble_audit::Entry> {
    let entries = node.audit_log().entries(..).unwrap();
    let mut run: Vec<_> = entries
        .into_iter()
        .rev()
        .filter(|e| e.action == Action::Train)
        .skip(1)
        .take_while(|e| e.subject.is_some())
        .collect();
    run.reverse();
    run
}

fn last_train_entry(node: &Node) -> amble_audit::Entry {
    node.audit_log()
        .entries(..)
        .unwrap()
        .into_iter()
        .rev()
        .find(|e| e.action == Action::Train)
        .unwrap()
}

#[test]
fn withdrawn_subject_is_not_in_the_next_training_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), 12);
    let cfg = IntentTrainConfig::default();
    let run = node
        .train_intent(&trainer(), &cfg, budget(10.0), &test_rows(), None)
        .unwrap();
    assert_eq!(run.subjects_used, 12);
    assert_eq!(run.examples, 48);
    assert!(run.report.accuracy > 0.5, "learns: {}", run.report.accuracy);
    let first = last_train_entry(&node);
    assert_eq!(first.counts.get("subjects_used"), Some(&12));
    assert!(first.subject.is_none(), "the summary names no one");
    let people = last_run_people(&node);
    assert_eq!(
        people.len(),
        12,
        "one entry per person used, for their access log"
    );
    assert!(
        people
            .iter()
            .all(|e| e.purpose.as_deref() == Some("train.intent"))
    );

    node.change_consent(&op(), &person(3), "train.intent", ConsentChange::Withdraw)
        .unwrap();
    let run2 = node
        .train_intent(&trainer(), &cfg, budget(10.0), &test_rows(), None)
        .unwrap();
    assert_eq!(run2.subjects_used, 11);
    assert_eq!(run2.subjects_refused, 1);
    assert_ne!(run2.consent_state_hash, run.consent_state_hash);
    let second = last_train_entry(&node);
    assert_eq!(
        second.counts.get("subjects_used"),
        Some(&11),
        "the audit log shows the drop"
    );
    assert_eq!(
        last_run_people(&node).len(),
        11,
        "the withdrawn person is not logged as used"
    );
    assert!(node.intent_model().unwrap().is_some(), "model stored");
}

#[test]
fn ledger_refuses_an_over_budget_run_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dp = IntentTrainConfig {
        privacy: Privacy::Dp(DpIntentConfig {
            epochs: 2.0,
            ..DpIntentConfig::hashed(1.0)
        }),
        ..IntentTrainConfig::default()
    };
    {
        let node = node(dir.path(), 10);
        let run = node
            .train_intent(&trainer(), &dp, budget(1.2), &test_rows(), None)
            .unwrap();
        // Two runs of ε = 1 compose (RDP) to ≈ 1.42 > 1.2: the second must be refused.
        let spent = run.charge.unwrap().run.epsilon.value();
        assert!((spent - 1.0).abs() < 0.02, "run charged {spent}");
        let err = node
            .train_intent(&trainer(), &dp, budget(1.2), &test_rows(), None)
            .unwrap_err();
        assert!(matches!(err, NodeError::Learn(_)), "{err}");
        assert!(err.to_string().contains("0.2"), "says what is left: {err}");
    }
    let node = Node::open(dir.path(), None, None).unwrap();
    let ledger = node.ledger(budget(1.2)).unwrap();
    let spent = ledger.model_spent("intent").unwrap().epsilon.value();
    assert!((spent - 1.0).abs() < 0.02, "persisted spend {spent}");
    assert!(
        node.train_intent(&trainer(), &dp, budget(1.2), &test_rows(), None)
            .is_err()
    );
}

#[test]
fn a_lowered_budget_holds_once_a_ledger_exists() {
    let dir = tempfile::tempdir().unwrap();
    let dp = IntentTrainConfig {
        privacy: Privacy::Dp(DpIntentConfig {
            epochs: 2.0,
            ..DpIntentConfig::hashed(1.0)
        }),
        ..IntentTrainConfig::default()
    };
    let node = node(dir.path(), 10);
    // One run of ε = 1 under a budget of 8: the ledger now exists with budget 8.
    node.train_intent(&trainer(), &dp, budget(8.0), &test_rows(), None)
        .unwrap();
    // Lowered to 1.3, a second run (≈ 1.42 in all) must be refused, and the ledger says 1.3.
    let err = node
        .train_intent(&trainer(), &dp, budget(1.3), &test_rows(), None)
        .unwrap_err();
    assert!(matches!(err, NodeError::Learn(_)), "{err}");
    let ledger = node.ledger(budget(1.3)).unwrap();
    assert!((ledger.budget().model_epsilon.value() - 1.3).abs() < 1e-9);
    let spent = ledger.model_spent("intent").unwrap().epsilon.value();
    assert!(
        (spent - 1.0).abs() < 0.02,
        "the refused run charged nothing: {spent}"
    );
}

/// A federated round on sentence features keeps the embeddings of the texts it read, in
/// memory, for the next round — and only those: a withdrawal or an erasure empties the cache,
/// and the next round holds only the people it was allowed to read.
#[test]
fn cached_embeddings_never_outlive_consent_or_erasure() {
    use amble_learn::federation::LocalTraining;
    use amble_learn::model::FeatureConfig;
    use amble_learn::model::IntentModel;
    use amble_node::RoundTask;

    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let people = 6;
    let mut items = Vec::new();
    for i in 0..people {
        let (text, intent) = TEXTS[i % TEXTS.len()];
        let serde_json::Value::Object(data) = serde_json::json!({
            "channel": "chat",
            // Letters, not digits: the train.intent projection masks digits.
            "text": format!("{text} (case {})", (b'a' + i as u8) as char),
            "intent": intent
        }) else {
            unreachable!()
        };
        items.push((
            person(i),
            NewRecord {
                collection: Collection::Interactions,
                time: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
                data,
            },
        ));
    }
    node.append_batch(&op(), &items).unwrap();
    let consent = |i: usize, change: ConsentChange| {
        node.change_consent(&op(), &person(i), "train.intent", change)
            .unwrap();
    };
    for i in 0..people {
        consent(
            i,
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        );
    }
    let global = IntentModel::initial(
        vec!["card_arrival".into(), "lost_or_stolen_card".into()],
        FeatureConfig::sentence(),
        0.0,
    )
    .unwrap();
    let round = |n: u64| {
        let task = RoundTask {
            round: n,
            base_version: n - 1,
            training: LocalTraining::Plain {
                epochs: 1,
                learning_rate: 0.5,
                decay: 0.0,
                l2: 0.0,
            },
            clip_bound: 100.0,
        };
        node.train_round(&trainer(), &global, &task, budget(8.0))
            .unwrap()
            .1
    };
    assert_eq!(node.cached_embeddings(), 0);
    assert_eq!(round(1).examples, people);
    assert_eq!(node.cached_embeddings(), people);
    // Round 2 reads the same texts: served from the cache, nothing new kept.
    round(2);
    assert_eq!(node.cached_embeddings(), people);

    consent(0, ConsentChange::Withdraw);
    assert_eq!(
        node.cached_embeddings(),
        0,
        "a withdrawal empties the cache"
    );
    assert_eq!(round(3).examples, people - 1);
    assert_eq!(node.cached_embeddings(), people - 1);

    node.erase(&op(), &person(1)).unwrap();
    assert_eq!(node.cached_embeddings(), 0, "an erasure empties the cache");
    assert_eq!(round(4).examples, people - 2);
    assert_eq!(node.cached_embeddings(), people - 2);
}
