//! The intent classifier on Banking77 (vendored in `data/banking77`, CC BY 4.0, Casanueva et
//! al. 2020). The fast test uses a subset; the full evaluations are `#[ignore]`d — run them with
//! `cargo test --release -p amble-learn --test banking77 -- --ignored --nocapture`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::PathBuf;

use amble_learn::model::FeatureConfig;
use amble_learn::model::SgdConfig;
use amble_learn::train::{
    DpIntentConfig, IntentTrainConfig, Privacy, TextRow, read_intent_csv, train_intent,
    train_intent_csv,
};

fn data(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../data/banking77")
        .join(file)
}

/// 2,000 training rows (every 5th) and 308 test rows (every 10th).
fn subset() -> (Vec<TextRow>, Vec<TextRow>) {
    let every = |file: &str, n: usize| -> Vec<TextRow> {
        read_intent_csv(&data(file))
            .unwrap()
            .into_iter()
            .step_by(n)
            .collect()
    };
    (every("train.csv", 5), every("test.csv", 10))
}

/// 2,000 training rows (every 5th), 308 test rows (every 10th), 2^14 features, 4 epochs:
/// chance is 1/77 ≈ 1.3 %; the model must clear 60 %.
#[test]
fn classifier_on_a_small_banking77_subset_beats_chance_by_far() {
    let (train, test) = subset();
    let cfg = IntentTrainConfig {
        features: FeatureConfig {
            dim_log2: 14,
            ..FeatureConfig::default()
        },
        privacy: Privacy::None(SgdConfig {
            epochs: 4,
            ..SgdConfig::default()
        }),
    };
    let (model, report) = train_intent(&train, &test, &cfg, None).unwrap();
    assert_eq!(report.classes, 77);
    assert!(report.accuracy > 0.6, "accuracy {}", report.accuracy);
    let top = model.predict("How do I locate my card?", 3).unwrap();
    assert_eq!(top.len(), 3);
    assert!(top[0].probability >= top[1].probability && top[1].probability >= top[2].probability);
}

/// The same subset, privately: sentence features, DP-SGD at ε = 8 with the shipped settings.
/// 2,000 people is a fifth of the full set, so the noise weighs five times more; it must still
/// clear 65 % (measured: 77 %; the margin covers the noise's run-to-run spread).
#[test]
fn private_sentence_classifier_on_a_banking77_subset_learns_well() {
    let (train, test) = subset();
    let cfg = IntentTrainConfig {
        features: FeatureConfig::sentence(),
        privacy: Privacy::Dp(DpIntentConfig::sentence(8.0)),
    };
    let (_, report) = train_intent(&train, &test, &cfg, None).unwrap();
    println!("{}", serde_json::to_string(&report).unwrap());
    assert!(report.epsilon.unwrap() <= 8.0);
    assert!(report.accuracy > 0.65, "accuracy {}", report.accuracy);
}

#[test]
fn unknown_test_label_is_an_error_not_a_wrong_answer() {
    let train = read_intent_csv(&data("train.csv")).unwrap();
    let mut test = read_intent_csv(&data("test.csv")).unwrap();
    test.truncate(3);
    test[0].label = "no_such_intent".into();
    let cfg = IntentTrainConfig {
        features: FeatureConfig {
            dim_log2: 10,
            ..FeatureConfig::default()
        },
        privacy: Privacy::None(SgdConfig {
            epochs: 1,
            ..SgdConfig::default()
        }),
    };
    assert!(train_intent(&train[..200], &test, &cfg, None).is_err());
}

fn full_run(features: FeatureConfig, privacy: Privacy) -> amble_learn::train::IntentReport {
    let cfg = IntentTrainConfig { features, privacy };
    let r = train_intent_csv(&data("train.csv"), &data("test.csv"), &cfg, None).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    r
}

fn hashed14() -> FeatureConfig {
    FeatureConfig {
        dim_log2: 14,
        ..FeatureConfig::default()
    }
}

/// Non-private, hashed n-grams (2^16), full data: ≥ 90 % (sklearn's hashed char 2–5-grams +
/// LR: 90–91 %).
#[test]
#[ignore = "full Banking77 run; use --release --ignored"]
fn banking77_non_private_hashed_reaches_90_percent() {
    let r = full_run(
        FeatureConfig::default(),
        Privacy::None(SgdConfig::default()),
    );
    assert!(r.accuracy >= 0.90, "accuracy {}", r.accuracy);
}

/// Non-private, sentence-encoder features: ≥ 92 %.
#[test]
#[ignore = "full Banking77 run; use --release --ignored"]
fn banking77_non_private_sentence_reaches_92_percent() {
    let r = full_run(
        FeatureConfig::sentence(),
        Privacy::None(SgdConfig::default()),
    );
    assert!(r.accuracy >= 0.92, "accuracy {}", r.accuracy);
}

/// The target: DP-SGD, ε = 8, δ = 1e-5, every example its own person, ≥ 85 % (reference
/// NumPy DP-SGD on 2^18 hashed features: 76.8 %). Sentence-encoder features, hyper-parameters
/// chosen on a held-out fifth of train (`DpIntentConfig::sentence`, `examples/tune.rs`).
#[test]
#[ignore = "full Banking77 DP run; use --release --ignored"]
fn banking77_dp_epsilon_8_reaches_85_percent() {
    let r = full_run(
        FeatureConfig::sentence(),
        Privacy::Dp(DpIntentConfig::sentence(8.0)),
    );
    assert!(r.epsilon.unwrap() <= 8.0);
    assert!(r.accuracy >= 0.85, "accuracy {}", r.accuracy);
    // Its probabilities mean what they say (routing by confidence relies on it): 0.037 measured.
    assert!(r.calibration_error < 0.08, "ECE {}", r.calibration_error);
}

/// DP-SGD, ε = 1, sentence features: reported (80.5 % when measured), with a floor well below.
#[test]
#[ignore = "full Banking77 DP run; use --release --ignored"]
fn banking77_dp_epsilon_1() {
    let r = full_run(
        FeatureConfig::sentence(),
        Privacy::Dp(DpIntentConfig::sentence(1.0)),
    );
    assert!(r.epsilon.unwrap() <= 1.0);
    assert!(r.accuracy >= 0.6, "accuracy {}", r.accuracy);
}

/// The same DP runs on hashed n-grams (2^14), for comparison: ε = 8 and ε = 1.
#[test]
#[ignore = "full Banking77 DP run; use --release --ignored"]
fn banking77_dp_hashed_for_comparison() {
    let r8 = full_run(hashed14(), Privacy::Dp(DpIntentConfig::hashed(8.0)));
    assert!(r8.epsilon.unwrap() <= 8.0);
    assert!(r8.accuracy >= 0.70, "accuracy {}", r8.accuracy);
    let r1 = full_run(hashed14(), Privacy::Dp(DpIntentConfig::hashed(1.0)));
    assert!(r1.epsilon.unwrap() <= 1.0);
    assert!(r1.accuracy >= 0.2, "accuracy {}", r1.accuracy);
}
