//! Federated averaging: the maths a node and the coordinator call each round.
//!
//! The coordinator holds the global [`IntentModel`]. Version 0 is
//! [`IntentModel::initial`]: zeros plus the public label-name prior, built only from the
//! public label list and featuriser settings. Each round every participating node fetches
//! the global model, trains on its own data starting from it ([`local_update`]) and sends
//! `delta = local − global` as one flat `f32` vector (the layout of
//! [`IntentModel::to_flat`]), clipped to an L2 bound the coordinator announced. The
//! coordinator averages the deltas and adds the mean to the global model.
//!
//! Privacy is per person *at each node*: with [`LocalTraining::Dp`] a node's update is the
//! output of DP-SGD with per-subject clipping on its own data, so whatever the coordinator or
//! anyone else does with it afterwards is post-processing. [`FederatedDp`] states the whole
//! federation's budget once and calibrates σ so that all its rounds together cost exactly
//! that budget; each node's ledger charges one round at a time.
//!
//! `crate::experiment::simulate` runs a whole federation in one process with exactly these
//! pieces and the streaming mean of [`crate::federation::WeightedSum`], to measure what the
//! protocol achieves.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::{Example, IntentModel, ProgressFn, SgdConfig};
use crate::privacy::{
    Delta, DpSgdConfig, DpSgdReport, Epsilon, NoiseSource, SampledGaussian, calibrate, train_dp_sgd,
};

/// How a node trains locally in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LocalTraining {
    /// Plain SGD: no privacy guarantee for the people at the node.
    Plain {
        /// Passes over the node's data per round.
        epochs: usize,
        /// Initial learning rate.
        learning_rate: f32,
        /// Learning rate at local epoch e is `learning_rate / (1 + decay · e)`.
        decay: f32,
        /// L2 penalty per example step; 0 disables it.
        l2: f32,
    },
    /// DP-SGD with per-subject clipping; one round's worth of steps
    /// (see [`FederatedDp::round_config`]).
    Dp(DpSgdConfig),
}

/// What one node's round produced.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUpdate {
    /// `local − global` in the [`IntentModel::to_flat`] layout, L2 norm ≤ the clip bound.
    pub delta: Vec<f32>,
    /// L2 norm of the delta before clipping.
    pub raw_norm: f64,
    /// Whether the delta was scaled down to the clip bound.
    pub clipped: bool,
    /// Examples trained on.
    pub examples: usize,
    /// Distinct subjects among them.
    pub subjects: usize,
    /// What DP-SGD did and spent (None for plain training).
    pub dp: Option<DpSgdReport>,
}

/// L2 norm in `f64`, so the check against a bound is not itself rounded down.
pub fn l2_norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Trains a copy of `global` on `data` and returns `local − global`, clipped to L2 norm
/// `clip_bound`.
///
/// Clipping the delta is post-processing of the trained model, so it costs no privacy; it is
/// what lets the coordinator refuse any update above the announced bound and so bound every
/// node's influence on the global model. The clipped delta sits a few ulps *below* the bound,
/// so `f32` rounding can never push it over.
///
/// Plain training draws its shuffling order from `noise`; DP training draws its sampling and
/// noise from it. With [`LocalTraining::Dp`] the caller charges its budget ledger for the
/// round ([`DpSgdConfig::planned_rdp`]) *before* calling.
pub fn local_update(
    global: &IntentModel,
    data: &[Example],
    cfg: &LocalTraining,
    clip_bound: f64,
    noise: &mut NoiseSource,
    progress: ProgressFn<'_>,
) -> Result<LocalUpdate> {
    if !(clip_bound > 0.0 && clip_bound.is_finite()) {
        return Err(LearnError::InvalidConfig(format!(
            "the update clip bound must be finite and > 0, got {clip_bound}"
        )));
    }
    if data.is_empty() {
        return Err(LearnError::NoData(" at this node for the round"));
    }
    let mut local = global.softmax().clone();
    let dp = match cfg {
        LocalTraining::Plain {
            epochs,
            learning_rate,
            decay,
            l2,
        } => {
            let sgd = SgdConfig {
                epochs: *epochs,
                learning_rate: *learning_rate,
                decay: *decay,
                l2: *l2,
                shuffle_seed: noise.next_u64(),
            };
            local.train_sgd(data, &sgd, progress)?;
            None
        }
        LocalTraining::Dp(dp) => Some(train_dp_sgd(&mut local, data, dp, noise, progress)?),
    };
    let mut delta = local.to_flat();
    drop(local);
    for (d, g) in delta.iter_mut().zip(global.to_flat()) {
        *d -= g;
    }
    let raw_norm = l2_norm(&delta);
    if !raw_norm.is_finite() {
        return Err(LearnError::InvalidConfig(
            "local training diverged (the update is not finite); lower the learning rate".into(),
        ));
    }
    let clipped = raw_norm > clip_bound;
    if clipped {
        // Each product v·f is rounded by at most half an ulp and f itself by another half;
        // shrinking f by 4 ulps keeps the result strictly inside the bound.
        let f = (clip_bound / raw_norm) as f32 * (1.0 - 4.0 * f32::EPSILON);
        for d in &mut delta {
            *d *= f;
        }
    }
    let subjects = data
        .iter()
        .map(|e| e.subject)
        .collect::<BTreeSet<_>>()
        .len();
    Ok(LocalUpdate {
        delta,
        raw_norm,
        clipped,
        examples: data.len(),
        subjects,
        dp,
    })
}

/// A federation's DP budget, stated once: every person at every node gets
/// (`epsilon`, `delta`)-DP over all `rounds` rounds together.
///
/// Each round a node runs `steps_per_round` steps of DP-SGD (Poisson rate `sample_rate`,
/// per-subject clip `clip_norm`) from the global model. σ is calibrated so that
/// `rounds × steps_per_round` steps cost exactly the budget; a node's ledger charges one
/// round at a time, and because RDP composes by addition the ledger's total after all rounds
/// is the accountant's value for the whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederatedDp {
    /// ε per person at each node, over all rounds.
    pub epsilon: f64,
    /// δ the ε is stated at.
    pub delta: f64,
    /// Rounds the budget has to last.
    pub rounds: u64,
    /// Poisson sampling rate q of a node's subjects per step.
    pub sample_rate: f64,
    /// DP-SGD steps per round at each node.
    pub steps_per_round: u64,
    /// Per-subject clip bound C.
    pub clip_norm: f64,
    /// Local DP-SGD learning rate.
    pub learning_rate: f32,
    /// Local tail averaging within a round (see [`DpSgdConfig::average_tail`]).
    pub average_tail: f64,
    /// Local linear learning-rate decay within a round (see [`DpSgdConfig::final_lr_fraction`]).
    pub final_lr_fraction: f32,
    /// Train the bias too (see [`DpSgdConfig::fit_bias`]).
    pub fit_bias: bool,
    /// Threads for the noise pass.
    pub threads: usize,
}

impl FederatedDp {
    /// Total DP-SGD steps a node runs over the federation's life.
    pub fn total_steps(&self) -> Result<u64> {
        if self.rounds == 0 || self.steps_per_round == 0 {
            return Err(LearnError::InvalidConfig(
                "a DP federation needs rounds ≥ 1 and steps_per_round ≥ 1".into(),
            ));
        }
        self.rounds
            .checked_mul(self.steps_per_round)
            .ok_or_else(|| LearnError::InvalidConfig("rounds × steps_per_round overflows".into()))
    }

    /// The per-step mechanism (σ calibrated for the whole budget) and the steps per round.
    ///
    /// σ is the smallest value (to ~1e-9 in ε) at which `rounds × steps_per_round` steps cost
    /// at most `epsilon` at `delta` (RDP over `dp_accounting`'s orders, improved conversion):
    /// the budget is used up by the last round, not before, and one more round would
    /// exceed it.
    pub fn plan(&self) -> Result<(SampledGaussian, u64)> {
        let eps = Epsilon::new(self.epsilon)?;
        let delta = Delta::new(self.delta)?;
        let steps = self.total_steps()?;
        Ok((
            calibrate(eps, delta, self.sample_rate, steps)?,
            self.steps_per_round,
        ))
    }

    /// The DP-SGD settings of one round at a node.
    pub fn round_config(&self) -> Result<DpSgdConfig> {
        let (mechanism, steps) = self.plan()?;
        Ok(DpSgdConfig {
            sample_rate: mechanism.sample_rate,
            noise_multiplier: mechanism.noise_multiplier,
            clip_norm: self.clip_norm,
            learning_rate: self.learning_rate,
            steps,
            average_tail: self.average_tail,
            final_lr_fraction: self.final_lr_fraction,
            fit_bias: self.fit_bias,
            threads: self.threads,
        })
    }
}

/// The coordinator's step on a round's aggregate: one definition for the coordinator and the
/// simulator (post-processing of what the nodes sent, so it costs no privacy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerStep {
    /// Step size on the aggregate in round 1 (1 = plain FedAvg).
    pub learning_rate: f32,
    /// The step size decays linearly to `learning_rate × final_lr_fraction` by the last round
    /// (1 = constant).
    pub final_lr_fraction: f32,
    /// Heavy-ball momentum on the aggregate (0 = none).
    pub momentum: f32,
    /// Rounds the federation runs: the length of the decay.
    pub rounds: u64,
}

impl ServerStep {
    /// Refuses a step that is not finite and positive, a final fraction outside [0, 1] or a
    /// momentum outside [0, 1).
    pub fn validate(&self) -> Result<()> {
        let ok = self.learning_rate > 0.0
            && self.learning_rate.is_finite()
            && (0.0..1.0).contains(&self.momentum)
            && (0.0..=1.0).contains(&self.final_lr_fraction);
        if ok {
            Ok(())
        } else {
            Err(LearnError::InvalidConfig(
                "server learning rate must be finite and > 0, its final fraction in [0, 1], momentum in [0, 1)".into(),
            ))
        }
    }

    /// The step size of round `round` (1-based).
    pub fn learning_rate_at(&self, round: u64) -> f32 {
        let frac = if self.rounds > 1 {
            round.saturating_sub(1).min(self.rounds - 1) as f32 / (self.rounds - 1) as f32
        } else {
            0.0
        };
        self.learning_rate * (1.0 - frac * (1.0 - self.final_lr_fraction))
    }

    /// Applies round `round`'s step to `global`: with momentum, `velocity ← momentum ·
    /// velocity + aggregate` and `global += lr · velocity`; without, `global += lr ·
    /// aggregate`. `velocity` carries from round to round (empty at the start, and left
    /// empty without momentum); the coordinator stores it with each model version.
    pub fn apply(
        &self,
        global: &mut IntentModel,
        aggregate: &[f32],
        round: u64,
        velocity: &mut Vec<f32>,
    ) -> Result<()> {
        let lr = self.learning_rate_at(round);
        if self.momentum > 0.0 {
            if velocity.is_empty() {
                velocity.resize(aggregate.len(), 0.0);
            }
            if velocity.len() != aggregate.len() {
                return Err(LearnError::InvalidConfig(format!(
                    "server velocity has {} values, the aggregate {}",
                    velocity.len(),
                    aggregate.len()
                )));
            }
            for (v, a) in velocity.iter_mut().zip(aggregate) {
                *v = self.momentum * *v + a;
            }
            global.add_flat(velocity, lr)
        } else {
            global.add_flat(aggregate, lr)
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_server_step_decays_its_rate_and_carries_momentum() {
        let step = ServerStep {
            learning_rate: 2.0,
            final_lr_fraction: 0.25,
            momentum: 0.5,
            rounds: 3,
        };
        assert!(step.validate().is_ok());
        assert_eq!(step.learning_rate_at(1), 2.0);
        assert_eq!(step.learning_rate_at(2), 1.25);
        assert_eq!(step.learning_rate_at(3), 0.5);
        assert_eq!(
            step.learning_rate_at(9),
            0.5,
            "no further than the last round's"
        );
        let mut velocity = Vec::new();
        let mut v = |a: f32| {
            let mut m = IntentModel::initial(
                vec!["a".into(), "b".into()],
                FeatureConfig {
                    dim_log2: 4,
                    ..Default::default()
                },
                0.0,
            )
            .unwrap();
            let agg = vec![a; m.flat_len()];
            step.apply(&mut m, &agg, 1, &mut velocity).unwrap();
            velocity[0]
        };
        assert_eq!(v(1.0), 1.0);
        assert_eq!(v(1.0), 1.5);
        assert!(
            ServerStep {
                momentum: 1.0,
                ..step
            }
            .validate()
            .is_err()
        );
        assert!(
            ServerStep {
                learning_rate: f32::NAN,
                ..step
            }
            .validate()
            .is_err()
        );
    }
    use super::*;
    use crate::experiment::*;
    use crate::federation::*;
    use crate::model::SoftmaxRegression;
    use crate::model::SparseVec;
    use crate::model::*;
    use crate::privacy::*;
    use crate::privacy::{Budget, BudgetLedger, PlannedRun};
    use crate::privacy::{Epsilon, epsilon_for};
    use proptest::prelude::*;

    fn labels(k: usize) -> Vec<String> {
        (0..k).map(|c| format!("intent_{c}")).collect()
    }

    fn small_features() -> FeatureConfig {
        FeatureConfig {
            dim_log2: 6,
            ..FeatureConfig::default()
        }
    }

    /// `k` classes, each example a few random unit-norm features biased towards its class.
    fn toy_data(k: usize, n: usize, dim: u32, seed: u64) -> Vec<Example> {
        let mut src = NoiseSource::seeded_for_tests(seed);
        (0..n)
            .map(|i| {
                let label = i % k;
                let mut x = SparseVec::from_pairs(vec![
                    (label as u32 * 3 % dim, 1.0),
                    (src.below(dim as usize) as u32, 0.5),
                    (src.below(dim as usize) as u32, 0.5),
                ]);
                x.normalise();
                Example {
                    x,
                    label,
                    subject: i as u64,
                }
            })
            .collect()
    }

    #[test]
    fn flat_vector_is_weights_in_memory_order_then_bias_and_round_trips() {
        let (k, d) = (3, 4);
        let w: Vec<f32> = (0..k * d).map(|i| i as f32).collect();
        let b = vec![-1.0, -2.0, -3.0];
        let m = SoftmaxRegression::from_parts(k, d, w.clone(), b.clone()).unwrap();
        let flat = m.to_flat();
        assert_eq!(m.flat_len(), k * d + k);
        assert_eq!(flat[..k * d], w[..]);
        assert_eq!(flat[k * d..], b[..]);
        // w[j * classes + c] is weight (class c, feature j).
        assert_eq!(flat[2 * k + 1], m.weights()[[1, 2]]);

        let mut z = SoftmaxRegression::zeros(k, d).unwrap();
        z.add_flat(&flat, 1.0).unwrap();
        assert_eq!(z, m);
        z.add_flat(&flat, -1.0).unwrap();
        assert_eq!(z, SoftmaxRegression::zeros(k, d).unwrap());

        let prior = IntentModel::initial(labels(4), small_features(), 2.0).unwrap();
        let mut im = IntentModel::initial(labels(4), small_features(), 0.0).unwrap();
        im.add_flat(&prior.to_flat(), 1.0).unwrap();
        assert_eq!(im, prior);
        assert!(prior.to_flat().iter().any(|&v| v != 0.0));
    }

    #[test]
    fn update_of_the_wrong_length_is_refused_and_changes_nothing() {
        let mut m = IntentModel::initial(labels(3), small_features(), 1.0).unwrap();
        let before = m.clone();
        let short = vec![1.0; m.flat_len() - 1];
        let err = m.add_flat(&short, 1.0).unwrap_err();
        assert!(matches!(err, LearnError::Shape(_)), "{err}");
        assert!(m.add_flat(&vec![0.0; m.flat_len() + 1], 1.0).is_err());
        assert_eq!(m, before);
    }

    #[test]
    fn zero_or_infinite_clip_bound_is_refused() {
        let g = IntentModel::initial(labels(2), small_features(), 0.0).unwrap();
        let data = toy_data(2, 8, 64, 1);
        let local = LocalTraining::Plain {
            epochs: 1,
            learning_rate: 0.5,
            decay: 0.0,
            l2: 0.0,
        };
        let mut src = NoiseSource::seeded_for_tests(1);
        for bound in [0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(local_update(&g, &data, &local, bound, &mut src, None).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the training did, the delta a node sends is inside the announced bound,
        /// measured in f64 exactly as the coordinator measures it.
        #[test]
        fn delta_norm_never_exceeds_the_clip_bound(
            bound in 1e-6f64..20.0,
            lr in 0.01f32..50.0,
            epochs in 1usize..3,
            dp in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let g = IntentModel::initial(labels(3), small_features(), 1.0).unwrap();
            let data = toy_data(3, 30, 64, seed);
            let local = if dp {
                LocalTraining::Dp(DpSgdConfig {
                    sample_rate: 0.5,
                    noise_multiplier: 1.0,
                    clip_norm: 1.0,
                    learning_rate: lr,
                    steps: 3,
                    threads: 1,
                    ..DpSgdConfig::default()
                })
            } else {
                LocalTraining::Plain { epochs, learning_rate: lr, decay: 0.0, l2: 0.0 }
            };
            let mut src = NoiseSource::seeded_for_tests(seed);
            let u = local_update(&g, &data, &local, bound, &mut src, None).unwrap();
            prop_assert!(l2_norm(&u.delta) <= bound, "{} > {bound}", l2_norm(&u.delta));
            prop_assert_eq!(u.clipped, u.raw_norm > bound);
            prop_assert_eq!(u.delta.len(), g.flat_len());
            prop_assert_eq!(u.dp.is_some(), dp);
            let mut check = UpdateCheck::new(g.flat_len(), bound);
            prop_assert!(check.feed(&u.delta).is_ok());
            prop_assert!(check.finish().is_ok());
        }
    }

    #[test]
    fn local_update_moves_the_model_towards_the_node_data() {
        let g = IntentModel::initial(labels(3), small_features(), 0.0).unwrap();
        let data = toy_data(3, 60, 64, 7);
        let local = LocalTraining::Plain {
            epochs: 3,
            learning_rate: 0.5,
            decay: 0.0,
            l2: 0.0,
        };
        let mut src = NoiseSource::seeded_for_tests(3);
        let u = local_update(&g, &data, &local, 100.0, &mut src, None).unwrap();
        assert_eq!((u.examples, u.subjects), (60, 60));
        let mut m = g.clone();
        m.add_flat(&u.delta, 1.0).unwrap();
        assert!(m.softmax().accuracy(&data).unwrap() > 0.9);
    }

    /// Every node's ledger charges one round at a time; after all rounds the spend is the
    /// budget (to 1e-6), and the ledger refuses one round more.
    #[test]
    fn federated_plan_spends_exactly_the_budget_over_all_rounds() {
        for (epsilon, rounds, q, steps) in [(8.0, 20, 0.3, 4), (1.0, 5, 0.5, 10), (3.0, 50, 1.0, 1)]
        {
            let fed = FederatedDp {
                epsilon,
                delta: 1e-5,
                rounds,
                sample_rate: q,
                steps_per_round: steps,
                clip_norm: 1.0,
                learning_rate: 1.0,
                average_tail: 0.0,
                final_lr_fraction: 1.0,
                fit_bias: false,
                threads: 1,
            };
            let (mechanism, per_round) = fed.plan().unwrap();
            assert_eq!(per_round, steps);
            let cfg = fed.round_config().unwrap();
            assert_eq!(cfg.mechanism().unwrap(), mechanism);
            assert_eq!(cfg.steps, steps);

            let mut ledger = BudgetLedger::new(Budget {
                model_epsilon: Epsilon::new(epsilon).unwrap(),
                subject_epsilon: Epsilon::new(epsilon).unwrap(),
                delta: Delta::new(1e-5).unwrap(),
            });
            let run = PlannedRun {
                model: "intent".into(),
                mechanism,
                steps: per_round,
                subjects: vec!["s".into()],
            };
            let mut spent = 0.0;
            for _ in 0..rounds {
                spent = ledger
                    .check_and_charge(&run)
                    .unwrap()
                    .model_total
                    .epsilon
                    .value();
            }
            assert!(spent <= epsilon, "{spent} > {epsilon}");
            assert!(epsilon - spent < 1e-6, "{spent} is not {epsilon}");
            let whole = epsilon_for(
                &mechanism,
                rounds * steps,
                &orders_dp_accounting(),
                Delta::new(1e-5).unwrap(),
                Conversion::Improved,
            )
            .unwrap();
            assert!((whole.epsilon.value() - spent).abs() < 1e-9);
            assert!(matches!(
                ledger.check(&run),
                Err(LearnError::BudgetExceeded { .. })
            ));
        }
    }

    #[test]
    fn split_errors_name_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("amble-split-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            ("dup.csv", "row,node\n0,0\n1,1\n1,0\n", "line 4"),
            ("gap.csv", "row,node\n0,0\n2,1\n", "row 1"),
            ("bad.csv", "row,node\n0,0\nx,1\n", "line 3"),
            ("hdr.csv", "index,node\n0,0\n", "row,node"),
        ];
        for (name, text, needle) in cases {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            let msg = read_split(&p).unwrap_err().to_string();
            assert!(msg.contains(name) && msg.contains(needle), "{msg}");
        }
        let p = dir.join("ok.csv");
        std::fs::write(&p, "row,node\n1,2\n0,0\n").unwrap();
        assert_eq!(read_split(&p).unwrap(), vec![0, 2]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
