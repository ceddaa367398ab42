//! Federated averaging on Banking77 split over 10 nodes by the non-IID Dirichlet(0.5) split
//! in `data/banking77/split-10-nodes-dirichlet-0.5.csv`. The fast test uses a fifth of the
//! data; the full runs are `#[ignore]`d — run them with
//! `cargo test --release -p amble-learn --test federated_banking77 -- --ignored --nocapture`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::PathBuf;

use amble_learn::experiment::{SimConfig, SimReport, read_split, simulate, split_rows};
use amble_learn::federation::{FederatedDp, LocalTraining};
use amble_learn::model::FeatureConfig;
use amble_learn::train::{TextRow, read_intent_csv};

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/banking77")
        .join(file)
}

fn nodes() -> Vec<Vec<TextRow>> {
    let train = read_intent_csv(&data("train.csv")).unwrap();
    let split = read_split(&data("split-10-nodes-dirichlet-0.5.csv")).unwrap();
    split_rows(train, &split).unwrap()
}

fn print(r: &SimReport) {
    for x in &r.rounds {
        println!(
            "round {:3}: accuracy {:.4}  mean |delta| {:.3}  clipped {}  {:.1}s",
            x.round, x.accuracy, x.mean_raw_norm, x.clipped, x.seconds
        );
    }
    println!(
        "final accuracy {:.4}, ε per node {:?}, {:.0}s",
        r.final_accuracy,
        r.node_epsilon
            .iter()
            .map(|g| g.map(|g| g.epsilon.value()))
            .collect::<Vec<_>>(),
        r.seconds
    );
}

#[test]
fn split_assigns_every_training_row_to_one_of_ten_nodes() {
    let sizes: Vec<usize> = nodes().iter().map(Vec::len).collect();
    assert_eq!(
        sizes,
        vec![844, 956, 1020, 1014, 975, 953, 1017, 1158, 994, 1072]
    );
}

/// A fifth of the training rows (each kept at its node), a tenth of test, 2^12 features:
/// FedAvg's global model must improve over the rounds and end far above chance (1.3 %).
#[test]
fn federated_accuracy_rises_over_rounds_on_a_banking77_subset() {
    let nodes: Vec<Vec<TextRow>> = nodes()
        .into_iter()
        .map(|rows| rows.into_iter().step_by(5).collect())
        .collect();
    let test: Vec<TextRow> = read_intent_csv(&data("test.csv"))
        .unwrap()
        .into_iter()
        .step_by(10)
        .collect();
    let mut cfg = SimConfig::plain(
        FeatureConfig {
            dim_log2: 12,
            ..FeatureConfig::default()
        },
        4,
        LocalTraining::Plain {
            epochs: 2,
            learning_rate: 1.0,
            decay: 0.2,
            l2: 0.0,
        },
    );
    cfg.seed = Some(1);
    let r = simulate(&nodes, &test, &cfg, None).unwrap();
    print(&r);
    let acc: Vec<f64> = r.rounds.iter().map(|x| x.accuracy).collect();
    assert_eq!(acc.len(), 4);
    assert!(acc[3] > acc[0] + 0.05, "{acc:?}");
    assert!(acc[3] > 0.45, "{acc:?}");
    assert!(r.node_epsilon.iter().all(Option::is_none));
    assert!(r.deterministic_noise);
}

/// Non-private FedAvg: 50 rounds of 5 local epochs at each of the 10 nodes, deltas weighted by
/// example count. Target ≥ 88.5 % (reference NumPy FedAvg on the same split: 86.2 % with 1
/// local epoch, 88.5 % with 5; central training: 90.4 %).
#[test]
#[ignore = "full federated Banking77 run; use --release --ignored"]
fn fedavg_non_private_50_rounds_reaches_88_5_percent() {
    let r = fedavg_50_rounds(FeatureConfig::default());
    assert!(r.final_accuracy >= 0.885, "accuracy {}", r.final_accuracy);
}

/// The same non-private FedAvg on the sentence encoder's features.
#[test]
#[ignore = "full federated Banking77 run; use --release --ignored"]
fn fedavg_non_private_sentence_features_50_rounds() {
    let r = fedavg_50_rounds(FeatureConfig::sentence());
    assert!(r.final_accuracy >= 0.885, "accuracy {}", r.final_accuracy);
}

fn fedavg_50_rounds(features: FeatureConfig) -> SimReport {
    let test = read_intent_csv(&data("test.csv")).unwrap();
    let cfg = SimConfig::plain(
        features,
        50,
        LocalTraining::Plain {
            epochs: 5,
            learning_rate: 1.0,
            decay: 0.2,
            l2: 0.0,
        },
    );
    let r = simulate(&nodes(), &test, &cfg, None).unwrap();
    print(&r);
    r
}

/// The DP-FedAvg settings chosen on a validation split carved from train (every 5th row held
/// out, each node keeping the rest; never on test; `examples/tune.rs federated`): the public
/// sentence encoder's features, one DP-SGD step per round at each node, clip 0.2, learning
/// rate 500, the label-name prior at 5, plain averaging.
fn dp_settings() -> (FeatureConfig, FederatedDp) {
    (
        FeatureConfig::sentence(),
        FederatedDp {
            epsilon: 8.0,
            delta: 1e-5,
            rounds: 67,
            sample_rate: 0.3,
            steps_per_round: 1,
            clip_norm: 0.2,
            learning_rate: 500.0,
            average_tail: 0.0,
            final_lr_fraction: 1.0,
            fit_bias: false,
            threads: 1,
        },
    )
}

/// DP-FedAvg: every person at every node gets (8, 1e-5)-DP over all rounds together (DP-SGD
/// with per-person clipping at the node, σ calibrated by `FederatedDp::plan`); the coordinator
/// averages the nodes' deltas uniformly. Target ≥ 80 % (reference DP-FedAvg: 61–68 %).
#[test]
#[ignore = "full federated Banking77 DP run; use --release --ignored"]
fn dp_fedavg_epsilon_8_per_person_at_each_node_reaches_80_percent() {
    let test = read_intent_csv(&data("test.csv")).unwrap();
    let (features, fed) = dp_settings();
    let mut cfg = SimConfig::dp(features, &fed).unwrap();
    cfg.label_prior = 5.0;
    let r = simulate(&nodes(), &test, &cfg, None).unwrap();
    print(&r);
    for g in &r.node_epsilon {
        let g = g.unwrap();
        assert!(g.epsilon.value() <= 8.0 && g.epsilon.value() > 8.0 - 1e-6);
    }
    assert!(!r.deterministic_noise);
    assert!(r.final_accuracy >= 0.80, "accuracy {}", r.final_accuracy);
}

/// The previous DP-FedAvg settings on hashed n-grams (2^14), for comparison (73.7 % when
/// measured; the floor only catches a broken run).
#[test]
#[ignore = "full federated Banking77 DP run; use --release --ignored"]
fn dp_fedavg_on_hashed_features_for_comparison() {
    let test = read_intent_csv(&data("test.csv")).unwrap();
    let fed = FederatedDp {
        epsilon: 8.0,
        delta: 1e-5,
        rounds: 67,
        sample_rate: 0.3,
        steps_per_round: 1,
        clip_norm: 0.3,
        learning_rate: 300.0,
        average_tail: 0.0,
        final_lr_fraction: 1.0,
        fit_bias: false,
        threads: 1,
    };
    let features = FeatureConfig {
        dim_log2: 14,
        ..FeatureConfig::default()
    };
    let mut cfg = SimConfig::dp(features, &fed).unwrap();
    cfg.label_prior = 10.0;
    cfg.server_final_lr_fraction = 0.2;
    let r = simulate(&nodes(), &test, &cfg, None).unwrap();
    print(&r);
    assert!(r.final_accuracy >= 0.6, "accuracy {}", r.final_accuracy);
}
