//! The privacy budget ledger: how much of each model's and each subject's budget is spent.
//!
//! Pure data: the node persists it (in its store) and calls [`BudgetLedger::check_and_charge`]
//! before every training run. Budgets compose correctly because the ledger stores each run's
//! RDP curve and adds curves, instead of adding ε's (which would overcharge badly: ten runs at
//! ε = 1 each are far less than ε = 10 together).
//!
//! A subject is charged for a run only if their data was eligible for it (the node passes the
//! list); a model is charged for every run that trained it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::privacy::{
    Conversion, Delta, Epsilon, Guarantee, RdpAccountant, SampledGaussian, epsilon_from_rdp,
    orders_dp_accounting,
};

/// The configured budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Maximum ε per model over all its runs.
    pub model_epsilon: Epsilon,
    /// Maximum ε per subject over all models and runs.
    pub subject_epsilon: Epsilon,
    /// The δ every ε is stated at.
    pub delta: Delta,
}

/// A training run as the ledger sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    /// Model name (e.g. `intent`).
    pub model: String,
    /// The per-step mechanism.
    pub mechanism: SampledGaussian,
    /// Number of steps.
    pub steps: u64,
    /// Subjects whose data may be used (pseudonymous ids, as the node stores them).
    pub subjects: Vec<String>,
}

/// A recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Sequence number in this ledger.
    pub id: u32,
    /// Model name.
    pub model: String,
    /// The per-step mechanism.
    pub mechanism: SampledGaussian,
    /// Number of steps.
    pub steps: u64,
    /// RDP curve of the whole run over the ledger's orders. An order at which the
    /// mechanism has no finite bound is +∞, stored as JSON `null`.
    #[serde(with = "rdp_curve")]
    pub rdp: Vec<f64>,
}

/// What a successful charge spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// The run's id.
    pub run_id: u32,
    /// ε of this run alone.
    pub run: Guarantee,
    /// The model's cumulative guarantee after the run.
    pub model_total: Guarantee,
    /// The largest cumulative subject guarantee after the run (None if no subjects).
    pub worst_subject_total: Option<Guarantee>,
}

/// Per-model and per-subject privacy spending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLedger {
    budget: Budget,
    orders: Vec<f64>,
    conversion: Conversion,
    runs: Vec<RunRecord>,
    /// Subject id → ids of the runs that used their data.
    subjects: BTreeMap<String, Vec<u32>>,
}

impl BudgetLedger {
    /// An empty ledger over `dp_accounting`'s order grid and the improved conversion.
    pub fn new(budget: Budget) -> Self {
        BudgetLedger {
            budget,
            orders: orders_dp_accounting(),
            conversion: Conversion::Improved,
            runs: Vec::new(),
            subjects: BTreeMap::new(),
        }
    }

    /// The configured budget.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Changes the budget (lowering it below what is spent blocks further runs, nothing else).
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// Every recorded run.
    pub fn runs(&self) -> &[RunRecord] {
        &self.runs
    }

    fn sum_rdp<'a>(&'a self, runs: impl Iterator<Item = &'a RunRecord>) -> Vec<f64> {
        let mut total = vec![0.0; self.orders.len()];
        for r in runs {
            for (t, v) in total.iter_mut().zip(&r.rdp) {
                *t += v;
            }
        }
        total
    }

    fn guarantee(&self, rdp: &[f64]) -> Result<Guarantee> {
        epsilon_from_rdp(&self.orders, rdp, self.budget.delta, self.conversion)
    }

    /// Cumulative guarantee of `model` so far (ε = 0 if never trained).
    pub fn model_spent(&self, model: &str) -> Result<Guarantee> {
        let rdp = self.sum_rdp(self.runs.iter().filter(|r| r.model == model));
        self.guarantee(&rdp)
    }

    /// Cumulative guarantee of `subject` so far (ε = 0 if never used).
    pub fn subject_spent(&self, subject: &str) -> Result<Guarantee> {
        let ids = self.subjects.get(subject).map(Vec::as_slice).unwrap_or(&[]);
        let rdp = self.sum_rdp(ids.iter().filter_map(|&i| self.runs.get(i as usize)));
        self.guarantee(&rdp)
    }

    /// ε of `model`'s budget still available.
    pub fn model_remaining(&self, model: &str) -> Result<f64> {
        Ok((self.budget.model_epsilon.value() - self.model_spent(model)?.epsilon.value()).max(0.0))
    }

    fn run_rdp(&self, run: &PlannedRun) -> Vec<f64> {
        let mut acc = RdpAccountant::with_orders(self.orders.clone());
        acc.compose(&run.mechanism, run.steps);
        acc.rdp().to_vec()
    }

    /// Checks `run` against every budget without recording it.
    pub fn check(&self, run: &PlannedRun) -> Result<Charge> {
        let new = self.run_rdp(run);
        let run_g = self.guarantee(&new)?;
        let d = self.budget.delta.value();

        let mut model_rdp = self.sum_rdp(self.runs.iter().filter(|r| r.model == run.model));
        let before = self.guarantee(&model_rdp)?.epsilon.value();
        for (t, v) in model_rdp.iter_mut().zip(&new) {
            *t += v;
        }
        let model_total = self.guarantee(&model_rdp)?;
        let mb = self.budget.model_epsilon.value();
        if model_total.epsilon.value() > mb {
            return Err(LearnError::BudgetExceeded {
                scope: format!("model {:?}", run.model),
                needed: model_total.epsilon.value(),
                remaining: (mb - before).max(0.0),
                budget: mb,
                delta: d,
            });
        }

        // Subjects with the same run history share one computation.
        let mut by_history: BTreeMap<&[u32], &str> = BTreeMap::new();
        for s in &run.subjects {
            let h = self.subjects.get(s).map(Vec::as_slice).unwrap_or(&[]);
            by_history.entry(h).or_insert(s.as_str());
        }
        let sb = self.budget.subject_epsilon.value();
        let mut worst: Option<Guarantee> = None;
        for (history, subject) in by_history {
            let mut rdp = self.sum_rdp(history.iter().filter_map(|&i| self.runs.get(i as usize)));
            let before = self.guarantee(&rdp)?.epsilon.value();
            for (t, v) in rdp.iter_mut().zip(&new) {
                *t += v;
            }
            let g = self.guarantee(&rdp)?;
            if g.epsilon.value() > sb {
                return Err(LearnError::BudgetExceeded {
                    scope: format!("subject {subject} (and any with the same history)"),
                    needed: g.epsilon.value(),
                    remaining: (sb - before).max(0.0),
                    budget: sb,
                    delta: d,
                });
            }
            if worst.is_none_or(|w| g.epsilon > w.epsilon) {
                worst = Some(g);
            }
        }
        Ok(Charge {
            run_id: self.runs.len() as u32,
            run: run_g,
            model_total,
            worst_subject_total: worst,
        })
    }

    /// Checks `run` and, if every budget allows it, records it. On refusal nothing changes and
    /// the error says how much is left.
    pub fn check_and_charge(&mut self, run: &PlannedRun) -> Result<Charge> {
        let charge = self.check(run)?;
        let rdp = self.run_rdp(run);
        self.runs.push(RunRecord {
            id: charge.run_id,
            model: run.model.clone(),
            mechanism: run.mechanism,
            steps: run.steps,
            rdp,
        });
        for s in &run.subjects {
            let h = self.subjects.entry(s.clone()).or_default();
            if h.last() != Some(&charge.run_id) {
                h.push(charge.run_id);
            }
        }
        Ok(charge)
    }
}

/// JSON has no infinity: an RDP value of +∞ (no bound at that order) is written as `null`
/// and read back as +∞, so a ledger survives a round trip through its persisted form.
mod rdp_curve {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<Option<f64>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f64::INFINITY)).collect())
    }
}

#[cfg(test)]
mod persisted_form_tests {
    use super::*;

    #[test]
    fn ledger_with_unbounded_orders_survives_json() {
        let budget = Budget {
            model_epsilon: Epsilon::new(10.0).unwrap(),
            subject_epsilon: Epsilon::new(10.0).unwrap(),
            delta: Delta::new(1e-5).unwrap(),
        };
        let mut l = BudgetLedger::new(budget);
        let run = PlannedRun {
            model: "intent".into(),
            // A large sampling rate and small σ make high orders diverge (+∞).
            mechanism: SampledGaussian::new(0.5, 1.0).unwrap(),
            steps: 3,
            subjects: vec!["a".into()],
        };
        l.check_and_charge(&run).unwrap();
        assert!(
            l.runs()[0].rdp.iter().any(|x| !x.is_finite()),
            "test needs an unbounded order"
        );
        let json = serde_json::to_string(&l).unwrap();
        let back: BudgetLedger = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.model_spent("intent").unwrap().epsilon.value(),
            l.model_spent("intent").unwrap().epsilon.value()
        );
    }
}
