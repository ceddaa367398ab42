//! The decision: consent, roles, special categories, and what a grant lets through.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use amble_consent::{ConsentHistory, Terms};
use amble_policy::{Collection, Decision, DenyReason, Grant, Policy, Role, decide};
use common::{Subject, example, subject};
use serde_json::json;
use time::macros::datetime;

fn allow(d: Decision) -> Grant {
    match d {
        Decision::Allow(g) => g,
        Decision::Deny(r) => panic!("denied: {r}"),
    }
}

fn deny(d: Decision) -> DenyReason {
    match d {
        Decision::Deny(r) => r,
        Decision::Allow(g) => panic!("allowed {}", g.purpose()),
    }
}

#[test]
fn read_without_any_consent_is_denied_with_a_sentence() {
    let p = example();
    let none = ConsentHistory::new();
    let r = deny(decide(
        &p,
        "trainer",
        Role::Node,
        "train.intent",
        &none,
        datetime!(2026-11-21 10:00 UTC),
    ));
    assert_eq!(
        r,
        DenyReason::NoConsent {
            purpose: "train.intent".into()
        }
    );
    assert_eq!(r.to_string(), "no consent for train.intent has been given");
}

#[test]
fn read_after_give_is_allowed_and_not_before() {
    let mut s = Subject::new();
    s.give(
        "train.intent",
        datetime!(2026-11-01 09:00 UTC),
        Terms::default(),
    );
    let g = allow(s.decide(Role::Node, "train.intent", datetime!(2026-11-01 09:00 UTC)));
    assert_eq!(g.purpose(), "train.intent");
    assert_eq!(g.policy_version(), 1);
    assert_eq!(g.actor(), "node");
    let r = deny(s.decide(Role::Node, "train.intent", datetime!(2026-10-31 09:00 UTC)));
    assert_eq!(r.code(), "no_consent");
}

#[test]
fn withdrawal_between_two_decisions_denies_the_second() {
    let mut s = Subject::new();
    s.give(
        "train.intent",
        datetime!(2026-10-01 09:00 UTC),
        Terms::default(),
    );
    let first = s.decide(Role::Node, "train.intent", datetime!(2026-11-02 08:00 UTC));
    assert!(matches!(first, Decision::Allow(_)));
    s.withdraw("train.intent", datetime!(2026-11-02 08:30 UTC));
    let r = deny(s.decide(Role::Node, "train.intent", datetime!(2026-11-02 08:30 UTC)));
    assert_eq!(
        r.to_string(),
        "consent for train.intent withdrawn on 2026-11-02"
    );
}

#[test]
fn expired_consent_is_denied_with_the_expiry_date() {
    let mut s = Subject::new();
    let terms = Terms {
        valid_until: Some(datetime!(2026-06-30 00:00 UTC)),
        explicit: false,
    };
    s.give("personalisation", datetime!(2026-01-01 00:00 UTC), terms);
    assert!(matches!(
        s.decide(
            Role::App,
            "personalisation",
            datetime!(2026-06-29 23:59 UTC)
        ),
        Decision::Allow(_)
    ));
    let r = deny(s.decide(
        Role::App,
        "personalisation",
        datetime!(2026-07-01 00:00 UTC),
    ));
    assert_eq!(
        r.to_string(),
        "consent for personalisation expired on 2026-06-30"
    );
}

#[test]
fn unknown_purpose_and_unlisted_role_are_denied() {
    let mut s = Subject::new();
    s.give(
        "train.intent",
        datetime!(2026-01-01 00:00 UTC),
        Terms::default(),
    );
    let now = datetime!(2026-02-01 00:00 UTC);
    let r = deny(s.decide(Role::App, "train.intent", now));
    assert_eq!(r.to_string(), "role app may not use purpose train.intent");
    let r = deny(s.decide(Role::App, "marketing", now));
    assert_eq!(
        r.to_string(),
        "purpose marketing is not declared in policy version 1"
    );
}

#[test]
fn contract_and_legitimate_interest_purposes_need_no_consent_record() {
    let p = example();
    let none = ConsentHistory::new();
    let now = datetime!(2026-02-01 00:00 UTC);
    let g = allow(decide(&p, "agent-7", Role::Agent, "support", &none, now));
    assert!(g.allows_collection(Collection::Interactions));
    let g = allow(decide(&p, "node", Role::Node, "analytics", &none, now));
    assert!(g.allows_collection(Collection::Profile));
}

fn archive() -> Vec<(Collection, serde_json::Value)> {
    vec![
        (
            Collection::Profile,
            json!({"display_name": "Ann Li", "birth_year": 1990, "city": "Shanghai", "language": "zh"}),
        ),
        (
            Collection::Interactions,
            json!({"channel": "chat", "text": "my card 4111 1111 1111 1111 never came, mail ann@example.org", "intent": "card_arrival", "outcome": "resolved", "satisfaction": 5}),
        ),
        (
            Collection::Events,
            json!({"kind": "card_issued", "amount": 0, "status": "done"}),
        ),
        (
            Collection::Health,
            json!({"accessibility_needs": "screen reader", "condition": "low vision"}),
        ),
        (
            Collection::LifeStage,
            json!({"stage": "new_parent", "tags": ["parent"]}),
        ),
    ]
}

#[test]
fn train_intent_grant_holds_masked_text_and_intent_and_nothing_else() {
    let mut s = Subject::new();
    s.give(
        "train.intent",
        datetime!(2026-01-01 00:00 UTC),
        Terms {
            valid_until: None,
            explicit: true,
        },
    );
    let now = datetime!(2026-03-01 00:00 UTC);
    let g = allow(s.decide(Role::Node, "train.intent", now));
    assert_eq!(g.collections(), vec![Collection::Interactions]);
    assert_eq!(
        g.granted_fields(),
        vec![(
            Collection::Interactions,
            vec!["text|mask".to_owned(), "intent".to_owned()]
        )]
    );
    for c in [
        Collection::Profile,
        Collection::Health,
        Collection::Events,
        Collection::LifeStage,
        Collection::Goals,
    ] {
        assert!(!g.allows_collection(c), "{c} granted");
    }
    let records = archive();
    let proj = g.projection(
        subject(),
        records
            .iter()
            .map(|(c, v)| (*c, datetime!(2026-02-01 00:00 UTC), v)),
    );
    assert_eq!(
        proj.records().len(),
        1,
        "only the interaction comes through"
    );
    let r = &proj.records()[0];
    assert_eq!(r.collection(), Collection::Interactions);
    let keys: Vec<&str> = r.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["text", "intent"]);
    assert_eq!(r.get("intent"), Some(&json!("card_arrival")));
    let text = r.get("text").unwrap().as_str().unwrap();
    assert!(!text.chars().any(|c| c.is_ascii_digit()), "{text}");
    assert!(!text.contains("ann@example.org"), "{text}");
    assert!(
        text.contains("[email]") && text.contains("never came"),
        "{text}"
    );
    assert_eq!(r.get("channel"), None);
    let dump = proj.to_json().to_string();
    for secret in ["Ann", "1990", "Shanghai", "low vision", "screen reader"] {
        assert!(!dump.contains(secret), "{secret} leaked: {dump}");
    }
    assert_eq!(proj.purpose(), "train.intent");
    assert_eq!(proj.subject(), &subject());
}

#[test]
fn health_is_never_read_under_a_contract_purpose_without_explicit_consent() {
    let mut s = Subject::new();
    let now = datetime!(2026-03-01 00:00 UTC);
    let rec = json!({"accessibility_needs": "screen reader"});
    // No consent at all: support (contract) is allowed, but without health.
    let g = allow(s.decide(Role::Agent, "support", now));
    assert!(!g.allows_collection(Collection::Health));
    assert!(g.project(Collection::Health, now, &rec).is_none());
    assert!(g.collections().iter().all(|c| !c.is_special()));
    // Consent that is not explicit does not open health either.
    s.give(
        "support",
        datetime!(2026-02-01 00:00 UTC),
        Terms {
            valid_until: None,
            explicit: false,
        },
    );
    let g = allow(s.decide(Role::Agent, "support", now));
    assert!(g.project(Collection::Health, now, &rec).is_none());
    // Explicit consent for the purpose does, for the fields the purpose lists.
    s.withdraw("support", datetime!(2026-02-02 00:00 UTC));
    s.give(
        "support",
        datetime!(2026-02-03 00:00 UTC),
        Terms {
            valid_until: None,
            explicit: true,
        },
    );
    let g = allow(s.decide(Role::Agent, "support", now));
    let r = g
        .project(
            Collection::Health,
            now,
            &json!({"accessibility_needs": "screen reader", "condition": "low vision"}),
        )
        .unwrap();
    assert_eq!(r.get("accessibility_needs"), Some(&json!("screen reader")));
    assert_eq!(r.get("condition"), None);
}

#[test]
fn explicit_consent_for_another_purpose_does_not_open_health() {
    let mut s = Subject::new();
    s.give(
        "train.intent",
        datetime!(2026-02-01 00:00 UTC),
        Terms {
            valid_until: None,
            explicit: true,
        },
    );
    let g = allow(s.decide(Role::Agent, "support", datetime!(2026-03-01 00:00 UTC)));
    assert!(!g.allows_collection(Collection::Health));
}

#[test]
fn health_needs_explicit_consent_under_a_consent_purpose_too() {
    let text = r#"
version = 3
[[purpose]]
id = "care"
description = "To suggest help that fits your health needs."
legal_basis = "consent"
roles = ["app"]
[purpose.read]
profile = ["language"]
health = ["condition"]
"#;
    let p = Policy::from_toml_str(text, "care.toml").unwrap();
    let mut s = Subject::new();
    s.policy = p.clone();
    s.give("care", datetime!(2026-02-01 00:00 UTC), Terms::default());
    let now = datetime!(2026-03-01 00:00 UTC);
    let g = allow(decide(&p, "app-1", Role::App, "care", &s.history, now));
    assert_eq!(g.collections(), vec![Collection::Profile]);
    s.give(
        "care",
        datetime!(2026-02-02 00:00 UTC),
        Terms {
            valid_until: None,
            explicit: true,
        },
    );
    let g = allow(decide(&p, "app-1", Role::App, "care", &s.history, now));
    assert_eq!(
        g.collections(),
        vec![Collection::Profile, Collection::Health]
    );
    assert_eq!(g.policy_version(), 3);
}

#[test]
fn projection_applies_transforms_and_drops_ungranted_fields() {
    let mut s = Subject::new();
    s.give(
        "personalisation",
        datetime!(2026-01-01 00:00 UTC),
        Terms::default(),
    );
    let now = datetime!(2026-03-01 00:00 UTC);
    let g = allow(s.decide(Role::App, "personalisation", now));
    let r = g
        .project(Collection::Profile, now, &json!({"display_name": "Ann Li", "birth_year": 1990, "city": "Hangzhou", "language": "zh"}))
        .unwrap();
    assert_eq!(
        r.to_json(),
        json!({"birth_year": "30-39", "city": "East China", "language": "zh"})
    );
    let r = g
        .project(Collection::Profile, now, &json!({"city": "Lhasa"}))
        .unwrap();
    assert_eq!(r.get("city"), Some(&json!("other")));
    let r = g
        .project(
            Collection::Events,
            now,
            &json!({"kind": "salary", "amount": 2500}),
        )
        .unwrap();
    assert_eq!(r.get("amount"), Some(&json!("1000 to under 10000")));
}

#[test]
fn records_past_their_retention_period_are_not_projected() {
    let p = example();
    let g = allow(decide(
        &p,
        "agent-7",
        Role::Agent,
        "support",
        &ConsentHistory::new(),
        datetime!(2026-03-01 00:00 UTC),
    ));
    let rec = json!({"channel": "chat", "intent": "card_arrival"});
    // interactions are kept P2Y = 730 days.
    assert!(
        g.project(
            Collection::Interactions,
            datetime!(2024-03-02 00:00 UTC),
            &rec
        )
        .is_some()
    );
    assert!(
        g.project(
            Collection::Interactions,
            datetime!(2024-03-01 00:00 UTC),
            &rec
        )
        .is_none()
    );
}

#[test]
fn automation_lines_follow_the_example_policy() {
    use amble_policy::Line;
    let p = example();
    assert_eq!(p.line("lost_or_stolen_card"), Line::Red);
    assert_eq!(p.line("compromised_card"), Line::Red);
    assert_eq!(p.line("card_arrival"), Line::Green);
    assert_eq!(p.line("declined_transfer"), Line::Yellow);
    assert_eq!(p.line("some_new_intent"), Line::Yellow);
}

#[test]
fn a_restriction_stops_every_purpose_but_legal_obligations_until_it_is_lifted() {
    let mut s = Subject::new();
    s.policy = common::with_legal_obligation();
    s.give(
        "personalisation",
        datetime!(2026-11-01 09:00 UTC),
        Terms::default(),
    );
    s.restrict(true, datetime!(2026-11-02 09:00 UTC));
    let during = datetime!(2026-11-03 09:00 UTC);
    for (role, purpose) in [
        (Role::App, "personalisation"),
        (Role::Agent, "support"),
        (Role::Node, "analytics"),
    ] {
        let r = deny(s.decide(role, purpose, during));
        assert_eq!(r.code(), "restricted", "{purpose}: {r}");
        assert!(r.to_string().contains("restricted since 2026-11-02"), "{r}");
    }
    allow(s.decide(Role::Admin, "records.legal", during));
    // Decisions before the restriction are re-derived as they were.
    allow(s.decide(Role::Agent, "support", datetime!(2026-11-01 10:00 UTC)));
    s.restrict(false, datetime!(2026-11-04 09:00 UTC));
    allow(s.decide(
        Role::App,
        "personalisation",
        datetime!(2026-11-04 09:00 UTC),
    ));
    allow(s.decide(Role::Agent, "support", datetime!(2026-11-04 09:00 UTC)));
}

#[test]
fn an_objection_stops_its_legitimate_interest_purpose_and_nothing_else() {
    let mut s = Subject::new();
    s.object("analytics", true, datetime!(2026-11-02 09:00 UTC));
    let now = datetime!(2026-11-03 09:00 UTC);
    let r = deny(s.decide(Role::Node, "analytics", now));
    assert_eq!(
        r,
        DenyReason::Objected {
            purpose: "analytics".into(),
            since: datetime!(2026-11-02 09:00 UTC)
        }
    );
    allow(s.decide(Role::Agent, "support", now));
    s.object("analytics", false, datetime!(2026-11-05 09:00 UTC));
    allow(s.decide(Role::Node, "analytics", datetime!(2026-11-05 09:00 UTC)));
}
