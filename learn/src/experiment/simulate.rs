//! The in-process federation: every node, the coordinator's checks and step, one process —
//! what the experiments measure the protocol with ([`simulate`]), using exactly the pieces a
//! real federation uses ([`crate::federation`]). Also the node assignments (`row,node` CSVs)
//! that split a data set across simulated nodes.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::federation::{
    FederatedDp, LocalTraining, LocalUpdate, Rejection, ServerStep, UpdateCheck, WeightedSum,
    local_update,
};
use crate::model::{Example, FeatureConfig, IntentModel, ProgressFn, report};
use crate::privacy::{
    Conversion, Delta, Guarantee, NoiseSource, RdpAccountant, orders_dp_accounting,
};
use crate::train::{TextRow, examples_for};

/// Reads a node assignment (`row,node` with a header; `row` is the 0-based index of a row of
/// the training CSV, header excluded). Returns the node of every row, by row index; every row
/// from 0 to the largest must appear exactly once.
pub fn read_split(path: &Path) -> Result<Vec<usize>> {
    let err = |reason: String| LearnError::Data {
        path: path.to_path_buf(),
        reason,
    };
    let mut rdr = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
    let headers = rdr.headers().map_err(|e| err(e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(ri), Some(ni)) = (col("row"), col("node")) else {
        return Err(err("expected a header with columns `row,node`".into()));
    };
    let mut node_of: Vec<Option<usize>> = Vec::new();
    for (n, rec) in rdr.records().enumerate() {
        let line = n + 2;
        let rec = rec.map_err(|e| err(format!("line {line}: {e}")))?;
        let field = |i: usize, what: &str| -> Result<usize> {
            let s = rec
                .get(i)
                .ok_or_else(|| err(format!("line {line} has no `{what}` field")))?;
            s.trim()
                .parse::<usize>()
                .map_err(|e| err(format!("line {line}: {what} {s:?} is not a row index: {e}")))
        };
        let (row, node) = (field(ri, "row")?, field(ni, "node")?);
        if row >= node_of.len() {
            node_of.resize(row + 1, None);
        }
        if node_of[row].replace(node).is_some() {
            return Err(err(format!("line {line}: row {row} is assigned twice")));
        }
    }
    if node_of.is_empty() {
        return Err(err("the split assigns no rows".into()));
    }
    node_of
        .into_iter()
        .enumerate()
        .map(|(row, n)| n.ok_or_else(|| err(format!("row {row} is not assigned to any node"))))
        .collect()
}

/// Divides `rows` among nodes by `assignment` (from [`read_split`]): node `i` gets the rows
/// assigned to `i`, in file order.
pub fn split_rows(rows: Vec<TextRow>, assignment: &[usize]) -> Result<Vec<Vec<TextRow>>> {
    if rows.len() != assignment.len() {
        return Err(LearnError::Shape(format!(
            "the split assigns {} rows but the data has {}",
            assignment.len(),
            rows.len()
        )));
    }
    let nodes = assignment.iter().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); nodes];
    for (row, &node) in rows.into_iter().zip(assignment) {
        out[node].push(row);
    }
    Ok(out)
}

/// Settings of an in-process federation ([`simulate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Featuriser (part of the public model definition).
    pub features: FeatureConfig,
    /// The label-name prior of the version-0 model (0 = zeros).
    pub label_prior: f32,
    /// Rounds to run.
    pub rounds: u64,
    /// What every node does each round.
    pub local: LocalTraining,
    /// L2 bound on each node's delta.
    pub clip_bound: f64,
    /// The coordinator's step size on the averaged delta (1 = plain FedAvg).
    pub server_learning_rate: f32,
    /// The server learning rate decays linearly to `server_learning_rate × this` by the last
    /// round (1 = constant).
    pub server_final_lr_fraction: f32,
    /// Heavy-ball momentum on the averaged delta (0 = none).
    pub server_momentum: f32,
    /// Evaluate the mean of the global models of this many last rounds as the final model
    /// (0 or 1 = the last model).
    pub average_last_rounds: u64,
    /// δ the per-node ε is stated at (DP only).
    pub delta: f64,
    /// Nodes trained in parallel.
    pub threads: usize,
    /// **Tests only**: a seed for deterministic noise and shuffling, which voids any privacy
    /// guarantee (the report flags it). None = the operating system's generator.
    pub seed: Option<u64>,
}

impl SimConfig {
    fn validate(&self) -> Result<()> {
        if self.rounds == 0 {
            return Err(LearnError::InvalidConfig("rounds must be ≥ 1".into()));
        }
        self.server_step().validate()
    }

    /// The coordinator's step these settings describe.
    pub fn server_step(&self) -> ServerStep {
        ServerStep {
            learning_rate: self.server_learning_rate,
            final_lr_fraction: self.server_final_lr_fraction,
            momentum: self.server_momentum,
            rounds: self.rounds,
        }
    }

    /// Non-private FedAvg: `epochs` of local SGD per round, deltas weighted by example count.
    pub fn plain(features: FeatureConfig, rounds: u64, local: LocalTraining) -> Self {
        SimConfig {
            features,
            label_prior: 0.0,
            rounds,
            local,
            clip_bound: 1e6,
            server_learning_rate: 1.0,
            server_final_lr_fraction: 1.0,
            server_momentum: 0.0,
            average_last_rounds: 0,
            delta: 1e-5,
            threads: 2,
            seed: None,
        }
    }

    /// DP-FedAvg under the budget `dp`: its rounds, its per-round DP-SGD settings.
    pub fn dp(features: FeatureConfig, dp: &FederatedDp) -> Result<Self> {
        Ok(SimConfig {
            features,
            label_prior: 0.0,
            rounds: dp.rounds,
            local: LocalTraining::Dp(dp.round_config()?),
            clip_bound: 1e6,
            server_learning_rate: 1.0,
            server_final_lr_fraction: 1.0,
            server_momentum: 0.0,
            average_last_rounds: 0,
            delta: dp.delta,
            threads: 2,
            seed: None,
        })
    }
}

/// One round of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundReport {
    /// 1-based round number.
    pub round: u64,
    /// Test accuracy of the global model after the round.
    pub accuracy: f64,
    /// Mean L2 norm of the nodes' deltas before clipping.
    pub mean_raw_norm: f64,
    /// Nodes whose delta was clipped.
    pub clipped: usize,
    /// Wall time of the round (training + aggregation + evaluation).
    pub seconds: f64,
}

/// What a simulated federation achieved and what it cost each node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    /// Per round.
    pub rounds: Vec<RoundReport>,
    /// Test accuracy of the final model (the tail average if one was asked for).
    pub final_accuracy: f64,
    /// Per node: the guarantee every person there got, composed over the rounds actually run
    /// (None for plain training).
    pub node_epsilon: Vec<Option<Guarantee>>,
    /// Training examples per node.
    pub node_examples: Vec<usize>,
    /// Test examples.
    pub test_examples: usize,
    /// Total wall time.
    pub seconds: f64,
    /// True if the noise was seeded ([`SimConfig::seed`]): no privacy at all.
    pub deterministic_noise: bool,
}

/// Runs FedAvg over `nodes` in one process, with exactly [`local_update`] at each node and
/// the streaming [`WeightedSum`] at the coordinator, and measures the global model on `test`
/// after every round. Labels are those present at any node (in a real federation, the public
/// label list); every person is one row unless the rows carry subjects.
pub fn simulate(
    nodes: &[Vec<TextRow>],
    test: &[TextRow],
    cfg: &SimConfig,
    progress: ProgressFn<'_>,
) -> Result<SimReport> {
    let t0 = Instant::now();
    if nodes.is_empty() || nodes.iter().any(Vec::is_empty) || test.is_empty() {
        return Err(LearnError::NoData(
            " (every node needs rows, and the test set must not be empty)",
        ));
    }
    cfg.validate()?;
    let mut labels: Vec<String> = nodes.iter().flatten().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let global = IntentModel::initial(labels, cfg.features.clone(), cfg.label_prior)?;

    report(progress, "featurise", 0, nodes.len() as u64 + 1);
    let node_ex: Vec<Vec<Example>> = nodes
        .iter()
        .map(|rows| examples_for(&global, rows))
        .collect::<Result<_>>()?;
    let test_ex = examples_for(&global, test)?;
    report(
        progress,
        "featurise",
        nodes.len() as u64 + 1,
        nodes.len() as u64 + 1,
    );
    let mut r = simulate_examples(global, &node_ex, &test_ex, cfg, progress)?;
    r.seconds = t0.elapsed().as_secs_f64();
    Ok(r)
}

/// [`simulate`] after featurising: `global` is the version-0 model (built from `cfg.features`
/// and `cfg.label_prior`), `node_ex` the nodes' examples in its feature space. For callers
/// that featurise once and run many federations (tuning).
pub fn simulate_examples(
    mut global: IntentModel,
    node_ex: &[Vec<Example>],
    test_ex: &[Example],
    cfg: &SimConfig,
    progress: ProgressFn<'_>,
) -> Result<SimReport> {
    let t0 = Instant::now();
    if node_ex.is_empty() || node_ex.iter().any(Vec::is_empty) || test_ex.is_empty() {
        return Err(LearnError::NoData(
            " (every node needs examples, and the test set must not be empty)",
        ));
    }
    cfg.validate()?;

    let mut master = match cfg.seed {
        Some(s) => NoiseSource::seeded_for_tests(s),
        None => NoiseSource::from_os()?,
    };
    let mut sources: Vec<NoiseSource> = node_ex.iter().map(|_| master.fork()).collect();
    let mut ledgers: Vec<RdpAccountant> = node_ex
        .iter()
        .map(|_| RdpAccountant::with_orders(orders_dp_accounting()))
        .collect();
    let len = global.flat_len();
    let step = cfg.server_step();
    let mut velocity = Vec::new();
    let tail = cfg.average_last_rounds.clamp(1, cfg.rounds);
    let mut tail_sum: Option<(Vec<f64>, u64)> = None;
    let threads = cfg.threads.clamp(1, node_ex.len());
    let mut rounds = Vec::new();

    for round in 1..=cfg.rounds {
        let tr = Instant::now();
        let updates = train_round(&global, node_ex, cfg, &mut sources, threads)?;
        // Plain FedAvg weights each node by its example count, so the mean is the gradient
        // step of the union's objective. Under DP the weights are uniform: an example count is
        // itself a statistic of the node's data that DP-SGD does not protect (one person
        // more or less would change their node's weight), and equal weights bound every
        // node's influence on the global model by clip_bound / nodes.
        let mut sum = WeightedSum::new(len);
        let (mut norms, mut clipped) = (0.0, 0);
        for (u, ledger) in updates.iter().zip(&mut ledgers) {
            let w = match cfg.local {
                LocalTraining::Plain { .. } => u.examples as f64,
                LocalTraining::Dp(_) => 1.0,
            };
            // The coordinator's own checks: shape, finiteness, norm within the bound.
            let mut check = UpdateCheck::new(len, cfg.clip_bound);
            check.feed(&u.delta).map_err(reject)?;
            check.finish().map_err(reject)?;
            sum.add_chunk(0, &u.delta, w).map_err(reject)?;
            sum.commit(w);
            norms += u.raw_norm;
            clipped += usize::from(u.clipped);
            if let Some(dp) = &u.dp {
                ledger.compose(&dp.mechanism, dp.steps);
            }
        }
        drop(updates);
        let mean = sum
            .mean()
            .ok_or(LearnError::NoData(" (no node sent an update)"))?;
        step.apply(&mut global, &mean, round, &mut velocity)?;
        if round + tail > cfg.rounds {
            let (acc, n) = tail_sum.get_or_insert_with(|| (vec![0.0; len], 0));
            for (a, x) in acc.iter_mut().zip(global.to_flat()) {
                *a += f64::from(x);
            }
            *n += 1;
        }
        rounds.push(RoundReport {
            round,
            accuracy: global.softmax().accuracy(test_ex)?,
            mean_raw_norm: norms / node_ex.len() as f64,
            clipped,
            seconds: tr.elapsed().as_secs_f64(),
        });
        report(progress, "federated-round", round, cfg.rounds);
    }

    let final_accuracy = match tail_sum {
        Some((acc, n)) if n > 1 => {
            let mut avg = global.clone();
            let cur = avg.to_flat();
            let shift: Vec<f32> = acc
                .iter()
                .zip(&cur)
                .map(|(a, c)| (a / n as f64) as f32 - c)
                .collect();
            avg.add_flat(&shift, 1.0)?;
            avg.softmax().accuracy(test_ex)?
        }
        _ => rounds.last().map_or(0.0, |r| r.accuracy),
    };
    let delta = Delta::new(cfg.delta)?;
    let node_epsilon = ledgers
        .iter()
        .map(|l| match cfg.local {
            LocalTraining::Plain { .. } => Ok(None),
            LocalTraining::Dp(_) => l.epsilon(delta, Conversion::Improved).map(Some),
        })
        .collect::<Result<_>>()?;
    Ok(SimReport {
        rounds,
        final_accuracy,
        node_epsilon,
        node_examples: node_ex.iter().map(Vec::len).collect(),
        test_examples: test_ex.len(),
        seconds: t0.elapsed().as_secs_f64(),
        deterministic_noise: master.is_deterministic(),
    })
}

fn reject(r: Rejection) -> LearnError {
    LearnError::Shape(format!("the coordinator refused an update: {r}"))
}

/// Every node's [`local_update`] for one round, `threads` nodes at a time; in node order.
fn train_round(
    global: &IntentModel,
    node_ex: &[Vec<Example>],
    cfg: &SimConfig,
    sources: &mut [NoiseSource],
    threads: usize,
) -> Result<Vec<LocalUpdate>> {
    let mut out: Vec<Option<Result<LocalUpdate>>> = (0..node_ex.len()).map(|_| None).collect();
    std::thread::scope(|s| {
        let mut handles = Vec::new();
        let mut work: Vec<Vec<(usize, &Vec<Example>, &mut NoiseSource)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (i, (ex, src)) in node_ex.iter().zip(sources.iter_mut()).enumerate() {
            work[i % threads].push((i, ex, src));
        }
        for jobs in work {
            handles.push(s.spawn(move || {
                jobs.into_iter()
                    .map(|(i, ex, src)| {
                        (
                            i,
                            local_update(global, ex, &cfg.local, cfg.clip_bound, src, None),
                        )
                    })
                    .collect::<Vec<_>>()
            }));
        }
        for h in handles {
            match h.join() {
                Ok(results) => {
                    for (i, r) in results {
                        out[i] = Some(r);
                    }
                }
                Err(_) => {
                    // A panicking node thread leaves its slots empty; reported below.
                }
            }
        }
    });
    out.into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(LearnError::InvalidConfig(
                    "a node's training thread panicked".into(),
                ))
            })
        })
        .collect()
}
