//! `Assist.Classify` over the wire: who may call it, what it says without a model, how a
//! stored model classifies and routes, how the subject's AI-assistance choice overrides a
//! confident green intent, and that the text never reaches the audit log or a log line; and
//! `Assist.PredictNeeds`: no model, an app's answer for a consenting person, and the refusals
//! consent and the policy make (an agent is refused by the example policy).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod server_support;

use amble_consent::AssistanceLevel;
use amble_crypto::ExternalRef;
use amble_learn::privacy::Budget;
use amble_learn::train::{IntentTrainConfig, TextRow};
use amble_node::assist::{ClassifyOptions, Route};
use amble_node::server::{Limits, ServeConfig, Server, ServerError, TlsFiles};
use amble_node::{Actor, Collection, ConsentChange, NeedsTrainConfig, NewRecord, Node};
use amble_policy::Role;
use amble_proto::v1 as pb;
use pb::assist_client::AssistClient;
use pb::audit_client::AuditClient;
use server_support::{Fixture, MAX_MESSAGE, pki_dir};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use tonic::Code;
use tonic::transport::Channel;

/// Green, yellow and red intents of the example policy, several wordings each.
const TEXTS: [(&str, &str); 9] = [
    ("my card has not arrived yet", "card_arrival"),
    ("when will my new card arrive", "card_arrival"),
    ("still waiting for my card to arrive", "card_arrival"),
    ("I want a refund for this purchase", "request_refund"),
    ("please refund my money", "request_refund"),
    ("how do I get a refund", "request_refund"),
    ("I lost my card yesterday", "lost_or_stolen_card"),
    ("someone stole my card", "lost_or_stolen_card"),
    ("my card was stolen from my bag", "lost_or_stolen_card"),
];
const GREEN: &str = "my card has not arrived yet";
const YELLOW: &str = "please refund my money";
const RED: &str = "someone stole my card";

const AI_ANSWERS: &str = "phone:+15550001";
const HUMAN_ONLY: &str = "phone:+15550002";
const AI_SUGGESTS: &str = "phone:+15550003";

fn op() -> Actor {
    Actor::local("operator:test", Role::Admin)
}

fn r(s: &str) -> ExternalRef {
    ExternalRef::parse(s).unwrap()
}

fn budget() -> Budget {
    use amble_learn::privacy::{Delta, Epsilon};
    Budget {
        model_epsilon: Epsilon::new(10.0).unwrap(),
        subject_epsilon: Epsilon::new(10.0).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

/// Trains the node's intent model on `texts` from `people` consenting people (non-private,
/// a few seconds), and sets the three subjects' AI-assistance choices.
fn prepare(node: &Node, texts: &[(&str, &str)], people: usize) {
    let mut items = Vec::new();
    for i in 0..people {
        for (text, intent) in texts {
            let serde_json::Value::Object(data) =
                serde_json::json!({"channel": "chat", "text": text, "intent": intent})
            else {
                unreachable!()
            };
            items.push((
                r(&format!("phone:+4400{i}")),
                NewRecord {
                    collection: Collection::Interactions,
                    time: time::OffsetDateTime::now_utc() - time::Duration::hours(1),
                    data,
                },
            ));
        }
    }
    node.append_batch(&op(), &items).unwrap();
    for i in 0..people {
        node.change_consent(
            &op(),
            &r(&format!("phone:+4400{i}")),
            "train.intent",
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        )
        .unwrap();
    }
    let test: Vec<TextRow> = texts
        .iter()
        .map(|(t, l)| TextRow {
            text: (*t).into(),
            label: (*l).into(),
            subject: None,
        })
        .collect();
    let trainer = Actor::local("trainer", Role::Node);
    node.train_intent(
        &trainer,
        &IntentTrainConfig::default(),
        budget(),
        &test,
        None,
    )
    .unwrap();
    for (who, level) in [
        (AI_ANSWERS, AssistanceLevel::AiAnswers),
        (HUMAN_ONLY, AssistanceLevel::HumanOnly),
        (AI_SUGGESTS, AssistanceLevel::AiSuggests),
    ] {
        node.set_ai_assistance(&op(), &r(who), level).unwrap();
    }
}

/// A second node served with the fixture's PKI, its data directory prepared before it starts
/// (the fixture's own node has no model, and a running node holds its database).
struct Prepared {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServerError>>>,
}

impl Prepared {
    async fn start(fx: &Fixture, prepare_node: impl FnOnce(&Node)) -> Prepared {
        let data_dir = fx.tmp.path().join("prepared");
        prepare_node(&Node::init(&data_dir, None).unwrap());
        let certs = pki_dir(&fx.tmp).join("certs");
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir,
            key_file: None,
            policy: None,
            tls: TlsFiles {
                cert: certs.join("node-1.pem"),
                key: certs.join("node-1.key"),
                client_ca: fx.ca.cert_path(),
                crl: fx.ca.crl_path(),
                federation_ca: None,
                federation_crl: None,
            },
            limits: Limits {
                max_message_bytes: MAX_MESSAGE,
                ..Limits::default()
            },
            portal: None,
            federation: None,
            metrics: None,
        };
        let mut tries = 0;
        let server = loop {
            match Server::bind(config.clone()).await {
                Ok(s) => break s,
                Err(ServerError::Node(e)) if tries < 100 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot start the node: {e}"),
            }
        };
        let url = format!("https://127.0.0.1:{}", server.local_addr().unwrap().port());
        let (stop, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Prepared {
            url,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn channel(&self, fx: &Fixture, name: &str) -> Channel {
        fx.identity(name)
            .endpoint(&self.url)
            .unwrap()
            .connect_lazy()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

fn classify_req(text: &str, subject: &str) -> pb::ClassifyRequest {
    pb::ClassifyRequest {
        text: text.into(),
        subject_ref: subject.into(),
        k: 0,
        min_confidence: 0.0,
    }
}

async fn classify(
    ch: Channel,
    req: pb::ClassifyRequest,
) -> Result<pb::ClassifyResponse, tonic::Status> {
    AssistClient::new(ch)
        .classify(req)
        .await
        .map(|r| r.into_inner())
}

/// Every audit entry of the node behind `ch` (an auditor's channel).
async fn audit_entries(ch: Channel) -> Vec<serde_json::Value> {
    let mut audit = AuditClient::new(ch);
    let size = audit
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .size;
    let mut out = Vec::new();
    let mut start = 0;
    while start < size {
        // Pages small enough for the test client's message limit.
        let end = (start + 100).min(size);
        let page = audit
            .entries(pb::EntriesRequest { start, end })
            .await
            .unwrap()
            .into_inner();
        out.extend(
            page.entries
                .iter()
                .map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap()),
        );
        start = end;
    }
    out
}

/// Every field of every tracing event and span from amble's own crates, as text.
fn captured_logs() -> Arc<Mutex<String>> {
    use tracing::field::{Field, Visit};
    use tracing::{Event, Metadata, span};
    static LOGS: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    struct Capture(Arc<Mutex<String>>);
    struct Fields<'a>(&'a Mutex<String>);
    impl Visit for Fields<'_> {
        fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
            let mut s = self.0.lock().unwrap();
            s.push_str(&format!("{}={v:?} ", f.name()));
        }
    }
    impl tracing::Subscriber for Capture {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            m.target().starts_with("amble")
        }
        fn new_span(&self, a: &span::Attributes<'_>) -> span::Id {
            a.record(&mut Fields(&self.0));
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, v: &span::Record<'_>) {
            v.record(&mut Fields(&self.0));
        }
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, e: &Event<'_>) {
            e.record(&mut Fields(&self.0));
            self.0.lock().unwrap().push('\n');
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(String::new()));
        tracing::subscriber::set_global_default(Capture(Arc::clone(&logs))).unwrap();
        logs
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_classify_says_how_to_get_one() {
    let fx = Fixture::start().await;
    let err = classify(fx.channel("crm"), classify_req(GREEN, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("no intent model yet"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("amble train intent"),
        "{}",
        err.message()
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_and_auditor_roles_may_not_call_assist_and_the_refusal_is_logged() {
    let fx = Fixture::start().await;
    for who in ["node-1", "auditor-1"] {
        let err = classify(fx.channel(who), classify_req(GREEN, AI_ANSWERS))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
        let err = AssistClient::new(fx.channel(who))
            .predict_needs(pb::PredictNeedsRequest {
                subject_ref: AI_ANSWERS.into(),
                k: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
    }
    // The agent role may call it (and hears there is no model yet).
    let err = classify(fx.channel("desk"), classify_req(GREEN, ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let entries = audit_entries(fx.channel("auditor-1")).await;
    for (who, method) in [
        ("node-1", "Classify"),
        ("auditor-1", "Classify"),
        ("node-1", "PredictNeeds"),
        ("auditor-1", "PredictNeeds"),
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == "denied_call"
                && e["actor"] == who
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(&format!("/amble.v1.Assist/{method}")))),
            "refusal of {who} calling {method} is logged"
        );
    }
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_model_classifies_and_each_subject_s_choice_decides_the_route() {
    let fx = Fixture::start().await;
    let node = Prepared::start(&fx, |n| prepare(n, &TEXTS, 6)).await;
    let ch = node.channel(&fx, "crm");

    let anon = classify(ch.clone(), classify_req(GREEN, "")).await.unwrap();
    assert_eq!(anon.intents.len(), 3);
    assert_eq!(anon.intents[0].label, "card_arrival");
    assert!(
        anon.intents[0].probability >= 0.6,
        "the model is confident on a training text: {}",
        anon.intents[0].probability
    );
    assert_eq!(anon.model_sha256.len(), 64);
    assert_eq!(anon.line, "green");
    assert_eq!(anon.threshold, 0.6);
    assert_eq!(anon.assistance_level, "human_only");
    assert_eq!(anon.route(), pb::Route::HumanAgent);
    assert!(anon.reason.contains("no subject given"), "{}", anon.reason);

    let routed = |text: &'static str, who: &'static str| {
        let ch = ch.clone();
        async move {
            let c = classify(ch, classify_req(text, who)).await.unwrap();
            (c.route(), c.reason)
        }
    };
    // A confident green intent: only the person who lets AI answer gets self-service.
    assert_eq!(routed(GREEN, AI_ANSWERS).await.0, pb::Route::SelfService);
    let (route, reason) = routed(GREEN, HUMAN_ONLY).await;
    assert_eq!(route, pb::Route::HumanAgent);
    assert!(reason.contains("human only"), "{reason}");
    let (route, reason) = routed(GREEN, AI_SUGGESTS).await;
    assert_eq!(route, pb::Route::BotDraft);
    assert!(reason.contains("a person confirms"), "{reason}");
    // Yellow: a person confirms even for the person who lets AI answer.
    assert_eq!(routed(YELLOW, AI_ANSWERS).await.0, pb::Route::BotDraft);
    // Red: people only, whatever the person chose.
    let (route, reason) = routed(RED, AI_ANSWERS).await;
    assert_eq!(route, pb::Route::Expert);
    assert!(
        reason.starts_with("red line: intent lost_or_stolen_card is people-only"),
        "{reason}"
    );
    // A stricter caller: the same green request goes to a person.
    let strict = classify(
        ch.clone(),
        pb::ClassifyRequest {
            min_confidence: 0.9999,
            ..classify_req(GREEN, AI_ANSWERS)
        },
    )
    .await
    .unwrap();
    assert_eq!(strict.route(), pb::Route::HumanAgent);
    assert!(strict.reason.contains("below 1.00"), "{}", strict.reason);
    // A reference the node does not know: human only, like an anonymous request.
    let unknown = classify(ch.clone(), classify_req(GREEN, "phone:+19990000"))
        .await
        .unwrap();
    assert_eq!(unknown.route(), pb::Route::HumanAgent);
    assert!(unknown.reason.contains("unknown"), "{}", unknown.reason);
    node.stop().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subject_call_leaves_one_audit_entry_and_the_text_is_never_logged() {
    let logs = captured_logs();
    let fx = Fixture::start().await;
    let node = Prepared::start(&fx, |n| prepare(n, &TEXTS, 6)).await;
    let ch = node.channel(&fx, "desk");
    let assist_entries = |entries: &[serde_json::Value]| {
        entries
            .iter()
            .filter(|e| e["action"] == "assist")
            .cloned()
            .collect::<Vec<_>>()
    };
    let before = assist_entries(&audit_entries(node.channel(&fx, "auditor-1")).await);
    assert!(before.is_empty());

    const SECRET: &str = "my card has not arrived yet, my account is 12345678 zebra-umbrella";
    classify(ch.clone(), classify_req(SECRET, ""))
        .await
        .unwrap();
    let c = classify(ch.clone(), classify_req(SECRET, AI_ANSWERS))
        .await
        .unwrap();
    classify(ch.clone(), classify_req(SECRET, HUMAN_ONLY))
        .await
        .unwrap();
    classify(ch.clone(), classify_req(SECRET, "phone:+19990000"))
        .await
        .unwrap();

    let entries = audit_entries(node.channel(&fx, "auditor-1")).await;
    let after = assist_entries(&entries);
    assert_eq!(
        after.len(),
        3,
        "one entry per call that names a subject: {after:#?}"
    );
    for e in &after {
        assert_eq!(e["actor"], "desk");
        let reason = e["reason"].as_str().unwrap();
        assert!(reason.contains("route="), "{reason}");
        assert!(
            reason.contains(&c.model_sha256[..16]),
            "names the model: {reason}"
        );
        assert!(
            !reason.contains("card_arrival"),
            "no intent in the log: {reason}"
        );
    }
    assert!(after[0]["subject"].is_string(), "a known subject is named");
    assert!(
        after[2]["reason"]
            .as_str()
            .unwrap()
            .starts_with("unknown reference")
    );
    let whole_log = serde_json::to_string(&entries).unwrap();
    for fragment in ["zebra-umbrella", "12345678", "has not arrived"] {
        assert!(
            !whole_log.contains(fragment),
            "{fragment} reached the audit log"
        );
    }
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.contains("request classified"),
        "the capture sees the node's log lines"
    );
    for fragment in ["zebra-umbrella", "12345678", "has not arrived"] {
        assert!(!logs.contains(fragment), "{fragment} reached a log line");
    }
    node.stop().await;
    fx.stop().await;
}

/// Synthetic people with their events and the need that followed, all consenting to
/// `train.needs` and `personalisation` except the last, who consented to training only; then
/// a non-private need model trained on them.
fn prepare_needs(node: &Node) -> Vec<amble_learn::experiment::SynthSubject> {
    let people = amble_learn::experiment::generate(&amble_learn::experiment::SynthConfig {
        subjects: 60,
        seed: 3,
        ..Default::default()
    });
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    let mut items = Vec::new();
    for p in &people {
        let mut rec = |c: Collection, day: u32, v: serde_json::Value| {
            let serde_json::Value::Object(data) = v else {
                unreachable!()
            };
            items.push((
                r(&p.reference),
                NewRecord {
                    collection: c,
                    time: start + time::Duration::days(i64::from(day)),
                    data,
                },
            ));
        };
        rec(
            Collection::LifeStage,
            0,
            serde_json::json!({"stage": p.stage.name(), "tags": [p.stage.name()]}),
        );
        let mut last = 0;
        for e in &p.events {
            rec(
                Collection::Events,
                e.day,
                serde_json::json!({"kind": e.kind}),
            );
            last = e.day;
        }
        rec(
            Collection::Events,
            last + 1,
            serde_json::json!({"kind": p.true_next_need}),
        );
    }
    node.append_batch(&op(), &items).unwrap();
    let give = ConsentChange::Give {
        valid_until: None,
        explicit: false,
    };
    for (i, p) in people.iter().enumerate() {
        node.change_consent(&op(), &r(&p.reference), "train.needs", give)
            .unwrap();
        if i + 1 < people.len() {
            node.change_consent(&op(), &r(&p.reference), "personalisation", give)
                .unwrap();
        }
    }
    let trainer = Actor::local("trainer", Role::Node);
    node.train_needs(&trainer, &NeedsTrainConfig::not_private(), budget(), None)
        .unwrap();
    people
}

async fn predict_needs(
    ch: Channel,
    subject: &str,
    k: u32,
) -> Result<pb::PredictNeedsResponse, tonic::Status> {
    AssistClient::new(ch)
        .predict_needs(pb::PredictNeedsRequest {
            subject_ref: subject.into(),
            k,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_need_model_predict_needs_is_failed_precondition_and_says_how_to_train() {
    let fx = Fixture::start().await;
    let err = predict_needs(fx.channel("crm"), AI_ANSWERS, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("no need model yet"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("amble train needs --data-dir"),
        "{}",
        err.message()
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predict_needs_answers_an_app_for_a_consenting_person_and_refuses_what_the_policy_does_not_allow()
 {
    let fx = Fixture::start().await;
    let people = Arc::new(Mutex::new(Vec::new()));
    let slot = Arc::clone(&people);
    let node = Prepared::start(&fx, move |n| *slot.lock().unwrap() = prepare_needs(n)).await;
    let people = people.lock().unwrap().clone();
    let consenting = people[0].reference.clone();
    let training_only = people[people.len() - 1].reference.clone();

    let a = predict_needs(node.channel(&fx, "crm"), &consenting, 0)
        .await
        .unwrap();
    assert_eq!(a.needs.len(), 3, "k = 0 means 3");
    assert_eq!(a.model_sha256.len(), 64);
    assert!(a.needs[0].probability >= a.needs[1].probability);
    assert!(!a.needs[0].drivers.is_empty());
    assert!(!a.needs[0].drivers[0].feature.is_empty());

    // No personalisation consent: refused with the reason.
    let err = predict_needs(node.channel(&fx, "crm"), &training_only, 3)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("no_consent"), "{}", err.message());
    // An agent may call the method, but the example policy does not let the agent role use
    // personalisation.
    let err = predict_needs(node.channel(&fx, "desk"), &consenting, 3)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("role_not_allowed"),
        "{}",
        err.message()
    );
    // Bad input says what to fix; an unknown person is not found.
    let err = predict_needs(node.channel(&fx, "crm"), &consenting, 21)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = predict_needs(node.channel(&fx, "crm"), "synth:nobody", 3)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Each call left one read entry through personalisation: allowed, or denied with why.
    let reads: Vec<_> = audit_entries(node.channel(&fx, "auditor-1"))
        .await
        .into_iter()
        .filter(|e| e["action"] == "read" && e["purpose"] == "personalisation")
        .collect();
    let by = |actor: &str, decision: &str| {
        reads
            .iter()
            .filter(|e| e["actor"] == actor && e["decision"] == decision)
            .count()
    };
    assert_eq!(by("crm", "allow"), 1, "{reads:#?}");
    assert_eq!(
        by("crm", "deny"),
        2,
        "no consent, unknown reference: {reads:#?}"
    );
    assert_eq!(by("desk", "deny"), 1, "{reads:#?}");
    node.stop().await;
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_with_what_to_fix() {
    let fx = Fixture::start().await;
    let node = Prepared::start(&fx, |n| prepare(n, &TEXTS, 6)).await;
    let ch = node.channel(&fx, "crm");
    let long = "a".repeat(10_001);
    for (req, says) in [
        (classify_req("   ", ""), "text is empty"),
        (classify_req(&long, ""), "at most 10000"),
        (classify_req(GREEN, "not a ref"), "subject_ref"),
        (
            pb::ClassifyRequest {
                k: 51,
                ..classify_req(GREEN, "")
            },
            "k = 51",
        ),
        (
            pb::ClassifyRequest {
                min_confidence: 1.5,
                ..classify_req(GREEN, "")
            },
            "(0, 1]",
        ),
    ] {
        let err = classify(ch.clone(), req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }
    node.stop().await;
    fx.stop().await;
}

fn node_at(dir: &Path) -> Node {
    Node::init(dir, None).unwrap()
}

#[test]
fn a_newly_stored_model_answers_the_next_call() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_at(dir.path());
    let desk = Actor::local("desk", Role::Agent);
    prepare(&node, &TEXTS[..6], 4);
    let first = node
        .classify(&desk, RED, None, ClassifyOptions::default())
        .unwrap();
    assert_ne!(
        first.intents[0].label, "lost_or_stolen_card",
        "not yet known"
    );
    // Retrain with the red intent (as a federation round would store a new global model).
    prepare(&node, &TEXTS, 4);
    let second = node
        .classify(&desk, RED, None, ClassifyOptions::default())
        .unwrap();
    assert_ne!(second.model_sha256, first.model_sha256);
    assert_eq!(second.intents[0].label, "lost_or_stolen_card");
    assert!(matches!(second.route, Route::Expert | Route::HumanAgent));
}

/// Routes a request of `who` automatically; their pseudonym and the routing's audit entry.
fn an_automated_routing(
    node: &Node,
    desk: &Actor,
    who: &ExternalRef,
) -> (amble_crypto::SubjectId, amble_audit::Entry) {
    node.classify(desk, GREEN, Some(who), ClassifyOptions::default())
        .unwrap();
    let subject = node.subject_of(who).unwrap();
    let decision = node
        .audit_log()
        .entries_for_subject(&subject)
        .unwrap()
        .into_iter()
        .rfind(|e| e.action == amble_audit::Action::Assist)
        .unwrap();
    (subject, decision)
}

#[test]
fn a_person_asks_for_a_human_review_of_a_routing_and_gets_its_logged_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    prepare(&node, &TEXTS, 6);
    let desk = Actor::local("desk", Role::Agent);
    let ann = r(AI_ANSWERS);
    let (subject, decision) = an_automated_routing(&node, &desk, &ann);
    let app = Actor::local("crm", Role::App);
    let review = node.request_review(&app, &ann, decision.seq).unwrap();
    assert_eq!(Some(review.explanation.clone()), decision.reason);
    assert!(
        review.explanation.contains("route="),
        "{}",
        review.explanation
    );
    let logged = node.audit_log().entry(review.request).unwrap();
    assert_eq!(logged.action, amble_audit::Action::ReviewRequest);
    assert_eq!(logged.subject, Some(subject));
    assert_eq!(
        logged.reason.as_deref(),
        Some(format!("decision {}", decision.seq).as_str())
    );
    // Not a decision (the review request itself), another person's decision, no such entry.
    let bob = r(HUMAN_ONLY);
    for (who, seq) in [
        (&ann, review.request),
        (&bob, decision.seq),
        (&ann, u64::MAX / 2),
    ] {
        let e = node.request_review(&app, who, seq).unwrap_err();
        assert!(matches!(e, amble_node::NodeError::NotADecision(_)), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_files_a_review_request_over_grpc_from_the_access_log() {
    let fx = Fixture::start().await;
    let node = Prepared::start(&fx, |n| prepare(n, &TEXTS, 6)).await;
    classify(node.channel(&fx, "desk"), classify_req(GREEN, AI_ANSWERS))
        .await
        .unwrap();
    let mut subject = pb::subject_client::SubjectClient::new(node.channel(&fx, "crm"));
    let log = subject
        .access_log(pb::SubjectRef {
            r#ref: AI_ANSWERS.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let decision = log
        .entries_json
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap())
        .rfind(|e| e["action"] == "assist")
        .unwrap();
    let review = subject
        .request_review(pb::ReviewRequest {
            r#ref: AI_ANSWERS.into(),
            decision: decision["seq"].as_u64().unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(review.explanation, decision["reason"].as_str().unwrap());
    let wrong = subject
        .request_review(pb::ReviewRequest {
            r#ref: AI_ANSWERS.into(),
            decision: review.request,
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);
    let agent = pb::subject_client::SubjectClient::new(node.channel(&fx, "desk"))
        .request_review(pb::ReviewRequest {
            r#ref: AI_ANSWERS.into(),
            decision: review.request,
        })
        .await
        .unwrap_err();
    assert_eq!(agent.code(), Code::PermissionDenied);

    // The review waits in the register for the privacy officer, who alone (with the operator)
    // may read and answer it.
    let mut register = pb::register_client::RegisterClient::new(node.channel(&fx, "dpo"));
    let open = register
        .list_requests(pb::ListRequestsRequest {
            filter: "open".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .requests;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(
        (open[0].id, open[0].kind.as_str()),
        (review.request, "review")
    );
    assert_eq!(open[0].verified_by, "app:crm");
    assert!(!open[0].overdue && open[0].answered.is_empty());
    let app = pb::register_client::RegisterClient::new(node.channel(&fx, "crm"))
        .list_requests(pb::ListRequestsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(app.code(), Code::PermissionDenied);
    let answered = register
        .answer_request(pb::AnswerRequestRequest {
            id: review.request,
            outcome: "upheld".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answered.outcome, "upheld");
    assert_eq!(answered.answered_by, "privacy-officer:dpo");
    let again = register
        .answer_request(pb::AnswerRequestRequest {
            id: review.request,
            outcome: "changed".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let none_open = register
        .list_requests(pb::ListRequestsRequest {
            filter: "open".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none_open.requests.is_empty());
    node.stop().await;
}

#[test]
fn the_register_files_each_request_with_its_deadline_and_shows_an_open_one_overdue_after_a_month() {
    use amble_node::register::{Filter, Outcome, RequestKind};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::init(dir.path(), None).unwrap();
    let clock = amble_audit::ManualClock::at(node.now().unix_timestamp() as u64 * 1000);
    let node = node.with_clock(Arc::new(clock.clone()));
    prepare(&node, &TEXTS, 6);
    let desk = Actor::local("desk", Role::Agent);
    let app = Actor::local("crm", Role::App);
    let dpo = Actor::local("dpo", Role::PrivacyOfficer);
    let ann = r(AI_ANSWERS);
    let (subject, decision) = an_automated_routing(&node, &desk, &ann);
    node.export(&app, &ann).unwrap();
    node.set_restriction(&app, &ann, true).unwrap();
    let review = node.request_review(&app, &ann, decision.seq).unwrap();

    let all = node.requests(&dpo, Filter::All).unwrap();
    let kinds: Vec<_> = all.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::Access,
            RequestKind::Restriction,
            RequestKind::Review
        ]
    );
    for r in &all {
        assert_eq!(r.subject, subject.to_hex(), "by pseudonym only");
        assert_eq!(
            r.deadline,
            amble_node::register::one_month_after(r.received)
        );
        // Each request is the audit entry that recorded it.
        assert_eq!(node.audit_log().entry(r.id).unwrap().subject, Some(subject));
    }
    assert_eq!(
        all[0].outcome,
        Some(Outcome::Done),
        "an export is answered at once"
    );
    assert!(node.requests(&dpo, Filter::Overdue).unwrap().is_empty());

    clock.advance(std::time::Duration::from_secs(32 * 24 * 3600));
    let overdue = node.requests(&dpo, Filter::Overdue).unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].id, review.request);
    // Only a review is upheld or changed; an answer is final.
    let wrong = node.answer_request(&dpo, all[0].id, Outcome::Upheld);
    assert!(matches!(
        wrong,
        Err(amble_node::NodeError::AlreadyAnswered(_))
    ));
    let answered = node
        .answer_request(&dpo, review.request, Outcome::Changed)
        .unwrap();
    assert!(answered.late() && !answered.overdue(node.now()));
    assert!(node.requests(&dpo, Filter::Overdue).unwrap().is_empty());
    let log = node.audit_log().entries_for_subject(&subject).unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.action, amble_audit::Action::RequestAnswer);
    assert_eq!(
        last.reason.as_deref(),
        Some(format!("request {}: changed", review.request).as_str())
    );
    // Reading the register is itself on the record.
    let reads = node
        .audit_log()
        .entries(..)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == amble_audit::Action::RegisterRead && e.actor == "dpo")
        .count();
    assert_eq!(reads, 4);
}
