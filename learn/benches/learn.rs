//! Criterion benches: featuriser throughput, a non-private epoch, a DP-SGD step, the noise
//! generator per million coordinates (next to OpenDP's sampler), the accountant.
//! Run briefly: `cargo bench -p amble-learn --bench learn -- --warm-up-time 1 --measurement-time 3`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use std::path::PathBuf;

use amble_learn::model::IntentModel;
use amble_learn::model::{Example, SgdConfig, SoftmaxRegression};
use amble_learn::model::{FeatureConfig, Featuriser};
use amble_learn::privacy::NoiseSource;
use amble_learn::privacy::{Conversion, Delta, SampledGaussian, epsilon_for, orders_dp_accounting};
use amble_learn::privacy::{DpSgdConfig, train_dp_sgd};
use amble_learn::train::{examples_for, read_intent_csv};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn banking(dim_log2: u8) -> (IntentModel, Vec<Example>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77/train.csv");
    let rows = read_intent_csv(&path).expect("banking77 train.csv");
    let mut labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
    labels.sort();
    labels.dedup();
    let m = IntentModel::new(
        labels,
        FeatureConfig {
            dim_log2,
            ..FeatureConfig::default()
        },
    )
    .expect("model");
    let ex = examples_for(&m, &rows).expect("examples");
    (m, ex)
}

fn featurise(c: &mut Criterion) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77/train.csv");
    let rows = read_intent_csv(&path).expect("banking77 train.csv");
    let texts: Vec<&str> = rows.iter().take(1000).map(|r| r.text.as_str()).collect();
    let f = Featuriser::new(FeatureConfig::default()).expect("featuriser");
    let mut g = c.benchmark_group("featurise");
    g.throughput(Throughput::Elements(texts.len() as u64));
    g.bench_function("banking77_1000_texts", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| f.featurise(t).unwrap().nnz())
                .sum::<usize>()
        })
    });
    g.finish();
}

fn epoch(c: &mut Criterion) {
    let (m, ex) = banking(16);
    let cfg = SgdConfig {
        epochs: 1,
        ..SgdConfig::default()
    };
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ex.len() as u64));
    g.bench_function("non_private_epoch_10k_dim2^16", |b| {
        b.iter_batched(
            || m.softmax().clone(),
            |mut s| s.train_sgd(&ex, &cfg, None).expect("train"),
            BatchSize::LargeInput,
        )
    });
    for dim in [14u8, 16] {
        let (m, ex) = banking(dim);
        let cfg = DpSgdConfig {
            sample_rate: 0.3,
            noise_multiplier: 2.0,
            steps: 1,
            average_tail: 0.0,
            threads: 2,
            ..DpSgdConfig::default()
        };
        g.bench_function(format!("dp_step_q0.3_10k_dim2^{dim}"), |b| {
            let mut noise = NoiseSource::from_os().expect("os rng");
            b.iter_batched(
                || m.softmax().clone(),
                |mut s: SoftmaxRegression| {
                    train_dp_sgd(&mut s, &ex, &cfg, &mut noise, None).expect("dp step")
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn noise(c: &mut Criterion) {
    let mut g = c.benchmark_group("noise");
    let n = 1_000_000;
    g.throughput(Throughput::Elements(n as u64));
    let mut buf = vec![0.0f32; n];
    let mut src = NoiseSource::from_os().expect("os rng");
    g.bench_function("chacha20_polar_1M_1thread", |b| {
        b.iter(|| src.add_gaussian(&mut buf, 1.0))
    });
    g.bench_function("chacha20_polar_1M_2threads", |b| {
        b.iter(|| src.add_gaussian_parallel(&mut buf, 1.0, 2))
    });
    g.finish();
    #[cfg(feature = "opendp-reference")]
    {
        let mut g = c.benchmark_group("noise_opendp");
        g.sample_size(10);
        let n = 10_000;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("opendp_gaussian_10k", |b| {
            b.iter(|| amble_learn::privacy::gaussian_samples(n, 1.0).expect("opendp"))
        });
        g.finish();
    }
}

fn accountant(c: &mut Criterion) {
    let m = SampledGaussian::new(0.01, 4.0).expect("mechanism");
    let d = Delta::new(1e-5).expect("delta");
    let o = orders_dp_accounting();
    c.bench_function("accountant_rdp_epsilon_dp_accounting_orders", |b| {
        b.iter(|| epsilon_for(&m, 10_000, &o, d, Conversion::Improved).expect("eps"))
    });
}

criterion_group!(benches, featurise, epoch, noise, accountant);
criterion_main!(benches);
