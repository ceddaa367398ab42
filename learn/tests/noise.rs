//! The fast noise path: right variance, same distribution as OpenDP's sampler, reproducible
//! only in test mode.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_learn::privacy::NoiseSource;

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, v)
}

/// DP-SGD adds N(0, σ²C²) per coordinate: with σ = 1.3 and C = 2 the sample variance of 400k
/// draws must be within 1.5 % of 6.76 (its standard error is 0.22 %) and the mean near 0.
#[test]
fn noise_variance_matches_sigma_squared_c_squared() {
    let (sigma, clip) = (1.3, 2.0);
    let mut src = NoiseSource::from_os().unwrap();
    let mut buf = vec![0.0f32; 400_000];
    src.add_gaussian_parallel(&mut buf, sigma * clip, 2);
    let x: Vec<f64> = buf.iter().map(|&v| f64::from(v)).collect();
    let (m, v) = mean_var(&x);
    let want = (sigma * clip) * (sigma * clip);
    assert!((v - want).abs() / want < 0.015, "variance {v}, want {want}");
    assert!(m.abs() < 5.0 * (want / x.len() as f64).sqrt(), "mean {m}");
}

/// Two-sample Kolmogorov–Smirnov statistic.
#[cfg(feature = "opendp-reference")]
fn ks(mut a: Vec<f64>, mut b: Vec<f64>) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

/// Our sampler against OpenDP's (exact discrete Gaussian on a 2^-k grid): the two-sample KS
/// statistic must stay below the α = 1e-4 critical value. Also checks the test has power: a
/// sampler with 10 % too much spread fails it.
#[cfg(feature = "opendp-reference")]
#[test]
fn noise_distribution_matches_opendp_sampler() {
    let (n, scale) = (20_000, 2.5);
    let theirs = amble_learn::privacy::gaussian_samples(n, scale).unwrap();
    let mut ours = vec![0.0; n];
    NoiseSource::from_os()
        .unwrap()
        .fill_gaussian(&mut ours, scale);
    let crit = (-(1e-4f64 / 2.0).ln() / 2.0).sqrt() * (2.0 / n as f64).sqrt();
    let d = ks(ours.clone(), theirs.clone());
    assert!(d < crit, "KS D = {d} ≥ critical {crit}");
    let wide: Vec<f64> = ours.iter().map(|v| v * 1.2).collect();
    assert!(
        ks(wide, theirs) > crit,
        "the KS test cannot tell σ from 1.2σ"
    );
}

#[test]
fn same_seed_same_noise_only_in_test_mode() {
    let draw = |mut s: NoiseSource| {
        let mut v = vec![0.0f64; 64];
        s.fill_gaussian(&mut v, 1.0);
        v
    };
    let a = NoiseSource::seeded_for_tests(42);
    assert!(a.is_deterministic());
    assert_eq!(draw(a), draw(NoiseSource::seeded_for_tests(42)));
    assert_ne!(
        draw(NoiseSource::seeded_for_tests(42)),
        draw(NoiseSource::seeded_for_tests(43))
    );
    let os = NoiseSource::from_os().unwrap();
    assert!(!os.is_deterministic());
    assert_ne!(draw(os), draw(NoiseSource::from_os().unwrap()));
}

#[test]
fn bernoulli_rate_matches_sampling_rate() {
    let mut s = NoiseSource::from_os().unwrap();
    let n = 200_000;
    let hits = (0..n).filter(|_| s.bernoulli(0.05)).count() as f64;
    let se = (0.05 * 0.95 / n as f64).sqrt();
    assert!((hits / n as f64 - 0.05).abs() < 5.0 * se);
}
