//! The budget ledger refuses over-budget runs, composes through RDP and round-trips.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_learn::LearnError;
use amble_learn::privacy::{Budget, BudgetLedger, PlannedRun};
use amble_learn::privacy::{
    Conversion, Delta, Epsilon, SampledGaussian, epsilon_for, orders_dp_accounting,
};

fn ledger() -> BudgetLedger {
    BudgetLedger::new(Budget {
        model_epsilon: Epsilon::new(3.0).unwrap(),
        subject_epsilon: Epsilon::new(4.0).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    })
}

fn run(model: &str, steps: u64, subjects: &[&str]) -> PlannedRun {
    PlannedRun {
        model: model.into(),
        mechanism: SampledGaussian::new(0.01, 1.1).unwrap(),
        steps,
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn over_budget_run_is_refused_with_what_is_left() {
    let mut l = ledger();
    let first = l
        .check_and_charge(&run("intent", 1000, &["s1", "s2"]))
        .unwrap();
    let spent = first.model_total.epsilon.value();
    assert!(spent > 0.5 && spent < 3.0, "spent {spent}");
    let before = l.clone();
    let err = l
        .check_and_charge(&run("intent", 20_000, &["s1"]))
        .unwrap_err();
    match &err {
        LearnError::BudgetExceeded {
            remaining, budget, ..
        } => {
            assert!((remaining - (3.0 - spent)).abs() < 1e-9);
            assert_eq!(*budget, 3.0);
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("left"), "{err}");
    assert_eq!(l, before, "a refused run must not be recorded");
}

#[test]
fn subject_budget_spans_models_and_spares_others() {
    let d = Delta::new(1e-5).unwrap();
    let m = SampledGaussian::new(0.01, 1.1).unwrap();
    let eps_after = |steps| {
        epsilon_for(&m, steps, &orders_dp_accounting(), d, Conversion::Improved)
            .unwrap()
            .epsilon
            .value()
    };
    // Subject budget between what 5,000 and 7,500 steps cost.
    let budget = (eps_after(5000) + eps_after(7500)) / 2.0;
    let mut l = BudgetLedger::new(Budget {
        model_epsilon: Epsilon::new(100.0).unwrap(),
        subject_epsilon: Epsilon::new(budget).unwrap(),
        delta: d,
    });
    l.check_and_charge(&run("intent", 2500, &["alice"]))
        .unwrap();
    l.check_and_charge(&run("needs", 2500, &["alice", "bob"]))
        .unwrap();
    let alice = l.subject_spent("alice").unwrap().epsilon.value();
    let bob = l.subject_spent("bob").unwrap().epsilon.value();
    assert!(
        (alice - eps_after(5000)).abs() < 1e-9,
        "two models compose for alice"
    );
    assert!((bob - eps_after(2500)).abs() < 1e-9);
    assert_eq!(l.subject_spent("carol").unwrap().epsilon.value(), 0.0);
    // A third run of 2,500 steps pushes alice (7,500) over the budget but not bob (5,000).
    assert!(matches!(
        l.check(&run("other", 2500, &["alice"])),
        Err(LearnError::BudgetExceeded { .. })
    ));
    assert!(l.check(&run("other", 2500, &["bob"])).is_ok());
}

#[test]
fn composition_through_rdp_costs_less_than_adding_epsilons() {
    let mut l = ledger();
    let a = l.check_and_charge(&run("intent", 1000, &[])).unwrap();
    let b = l.check_and_charge(&run("intent", 1000, &[])).unwrap();
    let total = b.model_total.epsilon.value();
    assert!(total < a.run.epsilon.value() + b.run.epsilon.value());
    assert!(total > a.run.epsilon.value());
}

#[test]
fn ledger_survives_a_serialise_deserialise_round_trip() {
    let mut l = ledger();
    l.check_and_charge(&run("intent", 1000, &["s1", "s2"]))
        .unwrap();
    let json = serde_json::to_string(&l).unwrap();
    let mut back: BudgetLedger = serde_json::from_str(&json).unwrap();
    assert_eq!(l, back);
    // It still refuses exactly what the original refuses.
    assert!(
        back.check_and_charge(&run("intent", 20_000, &["s1"]))
            .is_err()
    );
    assert!(back.check_and_charge(&run("intent", 100, &["s1"])).is_ok());
}

#[test]
fn a_tampered_ledger_with_negative_budget_does_not_load() {
    let json = serde_json::to_string(&ledger())
        .unwrap()
        .replace("3.0", "-3.0");
    assert!(serde_json::from_str::<BudgetLedger>(&json).is_err());
}
