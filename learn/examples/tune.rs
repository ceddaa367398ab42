//! Hyper-parameter search on Banking77 without touching its test set: featurises once, then
//! reads one configuration per line (JSON) on stdin and prints one JSON result per line.
//!
//! ```sh
//! # central DP-SGD (a `DpIntentConfig` per line), scored on a held-out fifth of train.csv:
//! echo '{"epsilon":8,"delta":1e-5,"sample_rate":0.3,"epochs":20,"clip_norm":0.5,"learning_rate":600,
//!        "average_tail":0.7,"final_lr_fraction":0.2,"fit_bias":false,"label_prior":0,"threads":2}' |
//!   cargo run --release -p amble-learn --example tune -- central
//! # DP-FedAvg over the 10-node Dirichlet split (a `FedTrial` per line), every 5th row of each
//! # node held out:
//!   cargo run --release -p amble-learn --example tune -- federated < trials.jsonl
//! ```
//! `FEATURES=hashed` switches to n-grams (2^14); `TEST=1` scores on test.csv instead (for the
//! final report only — the choice must already be made).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
use std::io::BufRead;
use std::path::PathBuf;

use amble_learn::experiment::{SimConfig, read_split, simulate_examples, split_rows};
use amble_learn::federation::FederatedDp;
use amble_learn::model::FeatureConfig;
use amble_learn::model::IntentModel;
use amble_learn::train::{
    DpIntentConfig, Privacy, TextRow, examples_for, fit_and_evaluate, read_intent_csv,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct FedTrial {
    fed: FederatedDp,
    #[serde(default)]
    label_prior: f32,
    #[serde(default = "one")]
    server_learning_rate: f32,
    #[serde(default = "one")]
    server_final_lr_fraction: f32,
    #[serde(default)]
    server_momentum: f32,
    #[serde(default)]
    average_last_rounds: u64,
}

fn one() -> f32 {
    1.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "central".into());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77");
    let test_mode = std::env::var("TEST").is_ok();
    let features = match std::env::var("FEATURES").as_deref() {
        Ok("hashed") => FeatureConfig {
            dim_log2: 14,
            ..FeatureConfig::default()
        },
        _ => FeatureConfig::sentence(),
    };
    let train = read_intent_csv(&root.join("train.csv"))?;
    let held_out = |i: usize| i % 5 == 4;
    let mut labels: Vec<String> = train.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let test: Vec<TextRow> = if test_mode {
        read_intent_csv(&root.join("test.csv"))?
    } else {
        train
            .iter()
            .enumerate()
            .filter(|(i, _)| held_out(*i))
            .map(|(_, r)| r.clone())
            .collect()
    };
    let t0 = std::time::Instant::now();
    match mode.as_str() {
        "central" => {
            let rows: Vec<TextRow> = train
                .iter()
                .enumerate()
                .filter(|(i, _)| test_mode || !held_out(*i))
                .map(|(_, r)| r.clone())
                .collect();
            let base = IntentModel::new(labels, features)?;
            let tr = examples_for(&base, &rows)?;
            let te = examples_for(&base, &test)?;
            eprintln!("featurised in {:.1}s", t0.elapsed().as_secs_f64());
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let dp: DpIntentConfig = serde_json::from_str(&line)?;
                // fit_and_evaluate adds the configuration's label prior itself.
                let r = fit_and_evaluate(&mut base.clone(), &tr, &te, &Privacy::Dp(dp), 0.0, None)?;
                println!(
                    "{{\"accuracy\":{:.4},\"sigma\":{:.4},\"steps\":{},\"config\":{}}}",
                    r.accuracy,
                    r.noise_multiplier.unwrap_or(0.0),
                    r.steps,
                    line.trim()
                );
            }
        }
        "federated" => {
            let split = read_split(&root.join("split-10-nodes-dirichlet-0.5.csv"))?;
            let indexed: Vec<TextRow> = train.clone();
            let nodes_rows = split_rows(indexed, &split)?;
            // Keep each row's original index to hold out the same rows as in central mode.
            let idx_nodes = split_rows(
                (0..train.len())
                    .map(|i| TextRow {
                        text: i.to_string(),
                        label: String::new(),
                        subject: None,
                    })
                    .collect(),
                &split,
            )?;
            let nodes: Vec<Vec<TextRow>> = nodes_rows
                .into_iter()
                .zip(idx_nodes)
                .map(|(rows, idx)| {
                    rows.into_iter()
                        .zip(idx)
                        .filter(|(_, i)| test_mode || !held_out(i.text.parse().unwrap_or(0)))
                        .map(|(r, _)| r)
                        .collect()
                })
                .collect();
            let base = IntentModel::new(labels, features)?;
            let node_ex = nodes
                .iter()
                .map(|rows| examples_for(&base, rows))
                .collect::<Result<Vec<_>, _>>()?;
            let te = examples_for(&base, &test)?;
            eprintln!(
                "featurised in {:.1}s; node sizes {:?}",
                t0.elapsed().as_secs_f64(),
                node_ex.iter().map(Vec::len).collect::<Vec<_>>()
            );
            for line in std::io::stdin().lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let trial: FedTrial = serde_json::from_str(&line)?;
                let mut cfg = SimConfig::dp(base.featuriser().config().clone(), &trial.fed)?;
                cfg.label_prior = trial.label_prior;
                cfg.server_learning_rate = trial.server_learning_rate;
                cfg.server_final_lr_fraction = trial.server_final_lr_fraction;
                cfg.server_momentum = trial.server_momentum;
                cfg.average_last_rounds = trial.average_last_rounds;
                let mut global = base.clone();
                if trial.label_prior > 0.0 {
                    global.add_label_name_prior(trial.label_prior)?;
                }
                let r = simulate_examples(global, &node_ex, &te, &cfg, None)?;
                let eps: Vec<f64> = r
                    .node_epsilon
                    .iter()
                    .map(|g| g.as_ref().map_or(0.0, |g| g.epsilon.value()))
                    .collect();
                println!(
                    "{{\"accuracy\":{:.4},\"max_eps\":{:.4},\"seconds\":{:.1},\"trial\":{}}}",
                    r.final_accuracy,
                    eps.iter().copied().fold(0.0, f64::max),
                    r.seconds,
                    line.trim()
                );
            }
        }
        other => return Err(format!("unknown mode {other}; use central or federated").into()),
    }
    Ok(())
}
