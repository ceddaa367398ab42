//! DP-SGD bounds each person's influence, however many records they have.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_learn::model::SparseVec;
use amble_learn::model::{Example, SoftmaxRegression};
use amble_learn::privacy::NoiseSource;
use amble_learn::privacy::{DpSgdConfig, subject_gradient, train_dp_sgd};
use proptest::prelude::*;

const K: usize = 5;
const D: usize = 64;

fn example(seed: u64, subject: u64) -> Example {
    // Cheap deterministic pseudo-random sparse vector.
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let pairs = (0..6)
        .map(|_| ((next() % D as u64) as u32, (next() % 1000) as f32 / 100.0))
        .collect();
    Example {
        x: SparseVec::from_pairs(pairs),
        label: (next() % K as u64) as usize,
        subject,
    }
}

fn random_model(seed: u64) -> SoftmaxRegression {
    let mut src = NoiseSource::seeded_for_tests(seed);
    let mut w = vec![0.0f32; K * D];
    src.add_gaussian(&mut w, 0.5);
    SoftmaxRegression::from_parts(K, D, w, vec![0.0; K]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A subject's summed gradient is clipped to C whether they have 1 or 1,000 examples, so
    /// the subject with 1,000 examples moves the noiseless sum no more than one with 1.
    #[test]
    fn subject_with_many_examples_moves_the_sum_no_more_than_one_with_one(
        seed in any::<u64>(),
        n in 1usize..1000,
        clip in 0.01f64..5.0,
        fit_bias in any::<bool>(),
    ) {
        let model = random_model(seed);
        let many: Vec<Example> = (0..n as u64).map(|i| example(seed ^ i, 1)).collect();
        let refs: Vec<&Example> = many.iter().collect();
        let g_many = subject_gradient(&model, &refs, clip, fit_bias).unwrap();
        let g_one = subject_gradient(&model, &refs[..1], clip, fit_bias).unwrap();
        prop_assert!(g_many.l2_norm() <= clip * (1.0 + 1e-6), "{} > {clip}", g_many.l2_norm());
        prop_assert!(g_one.l2_norm() <= clip * (1.0 + 1e-6));
    }
}

/// End to end through one DP-SGD step with the same (test-seeded) noise: swapping a subject
/// who has 1 example for the same subject with 1,000 examples changes the model by at most
/// η/(qN)·2C, the bound the accountant assumes.
#[test]
fn one_step_difference_between_neighbouring_datasets_is_bounded_by_clip() {
    let base: Vec<Example> = (0..20).map(|i| example(1000 + i, i)).collect();
    let mut small = base.clone();
    small.push(example(7, 99));
    let mut big = base.clone();
    big.extend((0..1000).map(|i| example(7 + i * 31, 99)));
    let cfg = DpSgdConfig {
        sample_rate: 1.0,
        noise_multiplier: 1.0,
        clip_norm: 0.5,
        learning_rate: 1.0,
        steps: 1,
        average_tail: 0.0,
        threads: 1,
        ..DpSgdConfig::default()
    };
    let run = |data: &[Example]| {
        let mut m = random_model(3);
        train_dp_sgd(
            &mut m,
            data,
            &cfg,
            &mut NoiseSource::seeded_for_tests(5),
            None,
        )
        .unwrap();
        m
    };
    let (a, b) = (run(&small), run(&big));
    let diff: f64 = a
        .weights()
        .iter()
        .zip(b.weights().iter())
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let bound = cfg.learning_rate as f64 / (cfg.sample_rate * 21.0) * 2.0 * cfg.clip_norm;
    assert!(diff > 0.0, "the subject had no influence at all");
    assert!(diff <= bound * (1.0 + 1e-4), "moved {diff} > bound {bound}");
}

#[test]
fn dp_sgd_with_the_same_test_seed_is_reproducible() {
    let data: Vec<Example> = (0..50).map(|i| example(i, i)).collect();
    let cfg = DpSgdConfig {
        steps: 5,
        threads: 2,
        ..DpSgdConfig::default()
    };
    let run = |seed| {
        let mut m = SoftmaxRegression::zeros(K, D).unwrap();
        let r = train_dp_sgd(
            &mut m,
            &data,
            &cfg,
            &mut NoiseSource::seeded_for_tests(seed),
            None,
        )
        .unwrap();
        assert!(r.deterministic_noise);
        m
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}
