//! `decide` + projecting one subject's 100-record archive under the example policy.
//!
//! Besides criterion's estimate, a plain timing loop prints p50 and p99 of single runs, since
//! the target is a tail latency (p99 < 1 ms per read of a whole archive).
//! Run: `cargo bench -p amble-policy --bench decide`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use amble_consent::{ConsentHistory, Controller, Method, ReceiptIssuer, Recorded, Terms};
use amble_crypto::{SigningKey, SubjectId};
use amble_policy::{Collection, Decision, Policy, Role, decide};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use time::macros::datetime;

const EXAMPLE: &str = include_str!("../../deploy/policy.example.toml");
const NOW: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

fn archive() -> Vec<(Collection, OffsetDateTime, Value)> {
    let cities = ["Shanghai", "Beijing", "Lhasa", "Shenzhen"];
    (0..100)
        .map(|i| {
            let t = NOW - time::Duration::days(i as i64 * 3);
            let (c, v) = match i % 6 {
                0 => (Collection::Profile, json!({"display_name": "Ann Li", "birth_year": 1960 + i % 40, "city": cities[i % 4], "language": "zh", "segment": "retail"})),
                1 => (Collection::LifeStage, json!({"stage": "new_parent", "tags": ["parent", "renting"], "since": 2024})),
                2 => (Collection::Goals, json!({"goal": "save_for_home", "horizon": "5y", "target_amount": 50_000 + i * 100})),
                3 => (Collection::Events, json!({"kind": "transfer", "amount": i * 37, "status": "done", "tags": ["salary"]})),
                4 => (Collection::Interactions, json!({"channel": "chat", "text": format!("hi, my card ending {i}{i}{i}{i} was declined, call +86 138 0013 {:04} or ann{i}@example.cn", i), "intent": "declined_card_payment", "outcome": "resolved", "satisfaction": i % 5})),
                _ => (Collection::Health, json!({"accessibility_needs": "large print", "condition": "low vision"})),
            };
            (c, t, v)
        })
        .collect()
}

fn setup() -> (
    Policy,
    ConsentHistory,
    Vec<(Collection, OffsetDateTime, Value)>,
) {
    let policy = Policy::from_toml_str(EXAMPLE, "policy.example.toml").expect("example policy");
    let key = SigningKey::generate().expect("key");
    let controller = Controller {
        pii_controller: "Example Bank".into(),
        contact: "DPO".into(),
        address: "Shanghai".into(),
        email: "privacy@example.org".into(),
        phone: "+86 21 0000 0000".into(),
        pii_controller_url: None,
    };
    let issuer = ReceiptIssuer::new(
        &key,
        controller,
        "CN",
        "https://example.org/privacy",
        "amble",
    );
    let mut history = ConsentHistory::new();
    let subject = SubjectId::from_bytes([1; 32]);
    // A realistic history: several purposes, some churn.
    let mut t = datetime!(2025-01-01 0:00 UTC);
    for round in 0..5 {
        for p in ["personalisation", "train.intent", "train.needs", "support"] {
            let info = policy.purpose_info(p).expect("purpose");
            let rec = |at| Recorded {
                at,
                method: Method::App,
                actor: "app".into(),
                policy_version: 1,
            };
            t += time::Duration::hours(1);
            history
                .give(
                    &issuer,
                    &subject,
                    &info,
                    Terms {
                        valid_until: None,
                        explicit: true,
                    },
                    rec(t),
                )
                .expect("give");
            if round < 4 {
                t += time::Duration::hours(1);
                history
                    .withdraw(&issuer, &subject, &info, rec(t))
                    .expect("withdraw");
            }
        }
    }
    (policy, history, archive())
}

fn read_archive(
    policy: &Policy,
    history: &ConsentHistory,
    records: &[(Collection, OffsetDateTime, Value)],
    purpose: &str,
    role: Role,
) -> usize {
    match decide(policy, "bench", role, purpose, history, NOW) {
        Decision::Allow(g) => {
            let p = g.projection(
                SubjectId::from_bytes([1; 32]),
                records.iter().map(|(c, t, v)| (*c, *t, v)),
            );
            p.records().len()
        }
        Decision::Deny(_) => 0,
    }
}

fn percentiles(
    policy: &Policy,
    history: &ConsentHistory,
    records: &[(Collection, OffsetDateTime, Value)],
    purpose: &str,
    role: Role,
) {
    let mut samples: Vec<Duration> = Vec::with_capacity(5_000);
    for _ in 0..200 {
        black_box(read_archive(policy, history, records, purpose, role));
    }
    for _ in 0..5_000 {
        let start = Instant::now();
        black_box(read_archive(policy, history, records, purpose, role));
        samples.push(start.elapsed());
    }
    samples.sort_unstable();
    let q = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "decide+project 100 records, purpose {purpose:<16} p50 {:>8.1} µs  p99 {:>8.1} µs  max {:>8.1} µs  (n={}, {} records projected)",
        q(0.50).as_secs_f64() * 1e6,
        q(0.99).as_secs_f64() * 1e6,
        q(1.0).as_secs_f64() * 1e6,
        samples.len(),
        read_archive(policy, history, records, purpose, role),
    );
}

fn bench(c: &mut Criterion) {
    let (policy, history, records) = setup();
    for (purpose, role) in [
        ("support", Role::Agent),
        ("personalisation", Role::App),
        ("train.intent", Role::Node),
    ] {
        percentiles(&policy, &history, &records, purpose, role);
        c.bench_function(&format!("decide_and_project_100/{purpose}"), |b| {
            b.iter(|| read_archive(&policy, &history, &records, purpose, role))
        });
    }
    c.bench_function("decide_only/train.intent", |b| {
        b.iter(|| {
            matches!(
                decide(&policy, "bench", Role::Node, "train.intent", &history, NOW),
                Decision::Allow(_)
            )
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
