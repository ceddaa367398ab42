//! Privacy accounting for DP-SGD: the Poisson-subsampled Gaussian mechanism under Rényi DP.
//!
//! RDP of the sampled Gaussian mechanism follows Mironov, Talwar and Zhang, "Rényi Differential
//! Privacy of the Sampled Gaussian Mechanism" (2019): integer orders by the binomial expansion
//! in log space (their Sec. 3.2), fractional orders by their convergent series (Sec. 3.3).
//! RDP composes by adding the per-order vectors, so the state worth storing is the vector
//! ([`RdpAccountant`]), not an ε.
//!
//! Two conversions to (ε, δ):
//! - [`Conversion::Classic`]: ε = RDP(α) + ln(1/δ)/(α−1) (Mironov 2017, Prop. 3). With the order
//!   grid of Abadi et al. 2016 this is their moments accountant.
//! - [`Conversion::Improved`]: ε = RDP(α) + ln(1−1/α) − ln(δ·α)/(α−1) (Balle et al. 2020,
//!   Thm. 21; Canonne, Kamath, Steinke 2020), the one `dp_accounting` and Opacus use.
//!
//! The reproductions of published values live in `tests/accountant.rs`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};

/// Privacy-loss bound ε ≥ 0 (finite).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Epsilon(f64);

impl Epsilon {
    /// Refuses negative, NaN and infinite values.
    pub fn new(value: f64) -> Result<Self> {
        if value.is_finite() && value >= 0.0 {
            Ok(Epsilon(value))
        } else {
            Err(LearnError::InvalidConfig(format!(
                "epsilon must be finite and ≥ 0, got {value}"
            )))
        }
    }
    /// The number.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Epsilon {
    type Error = LearnError;
    fn try_from(v: f64) -> Result<Self> {
        Epsilon::new(v)
    }
}
impl From<Epsilon> for f64 {
    fn from(e: Epsilon) -> f64 {
        e.0
    }
}
impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ε = {:.4}", self.0)
    }
}

/// Failure probability δ in (0, 1).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Delta(f64);

impl Delta {
    /// Refuses values outside (0, 1).
    pub fn new(value: f64) -> Result<Self> {
        if value > 0.0 && value < 1.0 {
            Ok(Delta(value))
        } else {
            Err(LearnError::InvalidConfig(format!(
                "delta must be in (0, 1), got {value}"
            )))
        }
    }
    /// The number.
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Delta {
    type Error = LearnError;
    fn try_from(v: f64) -> Result<Self> {
        Delta::new(v)
    }
}
impl From<Delta> for f64 {
    fn from(d: Delta) -> f64 {
        d.0
    }
}
impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "δ = {:e}", self.0)
    }
}

/// How an RDP curve is turned into (ε, δ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conversion {
    /// Mironov 2017, Prop. 3.
    Classic,
    /// Balle et al. 2020, Thm. 21 / Canonne–Kamath–Steinke 2020 (dp_accounting, Opacus).
    Improved,
}

/// An (ε, δ) guarantee together with how it was obtained; prints as a sentence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Guarantee {
    /// ε.
    pub epsilon: Epsilon,
    /// δ.
    pub delta: Delta,
    /// The Rényi order that gave the smallest ε (0 when nothing was spent).
    pub order: f64,
    /// The conversion used.
    pub conversion: Conversion,
}

impl fmt::Display for Guarantee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "({}, {})-DP per subject [RDP, optimal order {}, {:?} conversion]",
            self.epsilon, self.delta, self.order, self.conversion
        )
    }
}

/// One step of DP-SGD as a mechanism: each subject is included with probability
/// `sample_rate`, the clipped sum is released with Gaussian noise of standard deviation
/// `noise_multiplier × clip`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SampledGaussian {
    /// Poisson sampling rate q ∈ (0, 1].
    pub sample_rate: f64,
    /// σ = noise standard deviation / clip bound.
    pub noise_multiplier: f64,
}

impl SampledGaussian {
    /// Validates q ∈ (0, 1] and σ > 0.
    pub fn new(sample_rate: f64, noise_multiplier: f64) -> Result<Self> {
        if !(sample_rate > 0.0 && sample_rate <= 1.0) {
            return Err(LearnError::InvalidConfig(format!(
                "sample rate must be in (0, 1], got {sample_rate}"
            )));
        }
        if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
            return Err(LearnError::InvalidConfig(format!(
                "noise multiplier must be finite and > 0, got {noise_multiplier}"
            )));
        }
        Ok(SampledGaussian {
            sample_rate,
            noise_multiplier,
        })
    }

    /// RDP ε(α) of one step at order `alpha` > 1 (may be +∞ if the series does not converge).
    pub fn rdp(&self, alpha: f64) -> f64 {
        let (q, sigma) = (self.sample_rate, self.noise_multiplier);
        if alpha.is_infinite() {
            return f64::INFINITY;
        }
        if q >= 1.0 {
            return alpha / (2.0 * sigma * sigma);
        }
        let log_a = if alpha.fract() == 0.0 && alpha <= 10_000.0 {
            log_a_int(q, sigma, alpha as u64)
        } else {
            log_a_frac(q, sigma, alpha)
        };
        log_a / (alpha - 1.0)
    }
}

/// ln(e^a + e^b).
fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

/// Signed log-space accumulator: (is_positive, ln|x|).
fn signed_add(acc: (bool, f64), term: (bool, f64)) -> (bool, f64) {
    let (sa, la) = acc;
    let (sb, lb) = term;
    if lb == f64::NEG_INFINITY {
        return acc;
    }
    if la == f64::NEG_INFINITY {
        return term;
    }
    if sa == sb {
        return (sa, log_add(la, lb));
    }
    // Opposite signs: the larger magnitude wins.
    if la > lb {
        (sa, la + (-(lb - la).exp()).ln_1p())
    } else if lb > la {
        (sb, lb + (-(la - lb).exp()).ln_1p())
    } else {
        (true, f64::NEG_INFINITY)
    }
}

/// ln(erfc(x)), accurate far into the tail.
fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        libm::erfc(x).ln()
    } else {
        log_erfc_asymptotic(x)
    }
}

/// erfc(x) = e^{-x²}/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸) − …), in logs.
fn log_erfc_asymptotic(x: f64) -> f64 {
    let x2 = x * x;
    let series = 1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2) - 15.0 / (8.0 * x2 * x2 * x2)
        + 105.0 / (16.0 * x2 * x2 * x2 * x2);
    -x2 - x.ln() - 0.5 * std::f64::consts::PI.ln() + series.ln()
}

/// ln A_α for integer α (Mironov et al. 2019, Sec. 3.2).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let two_s2 = 2.0 * sigma * sigma;
    let a = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    let mut log_coef = 0.0; // ln C(α, 0)
    for i in 0..=alpha {
        let fi = i as f64;
        if i > 0 {
            log_coef += (a - fi + 1.0).ln() - fi.ln();
        }
        let s = log_coef + fi * lq + (a - fi) * l1q + (fi * fi - fi) / two_s2;
        log_a = log_add(log_a, s);
    }
    log_a
}

/// ln A_α for fractional α (Mironov et al. 2019, Sec. 3.3); +∞ if the series fails to converge.
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (lq, l1q) = (q.ln(), (-q).ln_1p());
    let s2 = sigma * sigma;
    let z0 = s2 * (1.0 / q - 1.0).ln() + 0.5;
    let sqrt2s = std::f64::consts::SQRT_2 * sigma;
    let ln_half = 0.5f64.ln();
    let mut a0 = (true, f64::NEG_INFINITY);
    let mut a1 = (true, f64::NEG_INFINITY);
    // Generalised binomial coefficient C(α, i), carried as sign and ln|·|.
    let mut coef_pos = true;
    let mut log_coef = 0.0;
    for i in 0..2000u32 {
        let fi = f64::from(i);
        if i > 0 {
            let factor = (alpha - fi + 1.0) / fi;
            if factor == 0.0 {
                break; // integer α reached its last term (not expected here)
            }
            if factor < 0.0 {
                coef_pos = !coef_pos;
            }
            log_coef += factor.abs().ln();
        }
        let j = alpha - fi;
        let log_t0 = log_coef + fi * lq + j * l1q;
        let log_t1 = log_coef + j * lq + fi * l1q;
        let log_e0 = ln_half + log_erfc((fi - z0) / sqrt2s);
        let log_e1 = ln_half + log_erfc((z0 - j) / sqrt2s);
        let log_s0 = log_t0 + (fi * fi - fi) / (2.0 * s2) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * s2) + log_e1;
        a0 = signed_add(a0, (coef_pos, log_s0));
        a1 = signed_add(a1, (coef_pos, log_s1));
        if log_s0.max(log_s1) < -30.0 && i > 0 {
            let total = signed_add(a0, a1);
            return if total.0 { total.1 } else { f64::INFINITY };
        }
    }
    f64::INFINITY
}

/// Accumulated RDP over a fixed grid of orders. Serialisable: this is what a ledger stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        RdpAccountant::with_orders(orders_dp_accounting())
    }
}

/// The order grid of `dp_accounting`'s `RdpAccountant` (also TF Privacy since 2021):
/// 1.1, 1.2, …, 10.9, 11, 12, …, 63, 128, 256, 512, 1024.
pub fn orders_dp_accounting() -> Vec<f64> {
    let mut o: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    o.extend((11..64).map(f64::from));
    o.extend([128.0, 256.0, 512.0, 1024.0]);
    o
}

/// Opacus' `DEFAULT_ALPHAS` (and TF Privacy's tutorial grid before 2021):
/// 1.1, 1.2, …, 10.9, 12, 13, …, 63.
pub fn orders_opacus() -> Vec<f64> {
    let mut o: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    o.extend((12..64).map(f64::from));
    o
}

/// The moments accountant of Abadi et al. 2016: moments λ = 1..=32, i.e. integer orders 2..=33.
pub fn orders_abadi() -> Vec<f64> {
    (2..=33).map(f64::from).collect()
}

/// A finer grid than `dp_accounting`'s: steps of 0.05 up to 11, 0.5 up to 64, then powers of
/// two to 4096. Never worse than the coarser grids it contains.
pub fn orders_fine() -> Vec<f64> {
    let mut o: Vec<f64> = (1..=200).map(|x| 1.0 + f64::from(x) * 0.05).collect();
    o.extend((1..=106).map(|x| 11.0 + f64::from(x) * 0.5));
    o.extend([96.0, 128.0, 192.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0]);
    o.extend(orders_dp_accounting());
    o.sort_by(f64::total_cmp);
    o.dedup();
    o
}

impl RdpAccountant {
    /// An empty accountant over `orders` (each > 1).
    pub fn with_orders(orders: Vec<f64>) -> Self {
        let orders: Vec<f64> = orders.into_iter().filter(|&a| a > 1.0).collect();
        let rdp = vec![0.0; orders.len()];
        RdpAccountant { orders, rdp }
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The accumulated RDP per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Whether nothing has been composed yet.
    pub fn is_empty(&self) -> bool {
        self.rdp.iter().all(|&r| r == 0.0)
    }

    /// Adds `steps` applications of `mechanism`.
    pub fn compose(&mut self, mechanism: &SampledGaussian, steps: u64) {
        let s = steps as f64;
        for (r, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *r += s * mechanism.rdp(a);
        }
    }

    /// Adds another accountant's history (same order grid required).
    pub fn compose_with(&mut self, other: &RdpAccountant) -> Result<()> {
        if self.orders != other.orders {
            return Err(LearnError::Accounting(
                "cannot compose accountants over different order grids".into(),
            ));
        }
        for (r, o) in self.rdp.iter_mut().zip(&other.rdp) {
            *r += o;
        }
        Ok(())
    }

    /// The best (ε, δ) guarantee over the grid.
    pub fn epsilon(&self, delta: Delta, conversion: Conversion) -> Result<Guarantee> {
        epsilon_from_rdp(&self.orders, &self.rdp, delta, conversion)
    }
}

/// Converts an RDP curve to the smallest ε over the grid at `delta`.
pub fn epsilon_from_rdp(
    orders: &[f64],
    rdp: &[f64],
    delta: Delta,
    conversion: Conversion,
) -> Result<Guarantee> {
    if orders.len() != rdp.len() {
        return Err(LearnError::Shape(format!(
            "{} orders but {} RDP values",
            orders.len(),
            rdp.len()
        )));
    }
    let d = delta.value();
    let mut best = (f64::INFINITY, 0.0);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r <= 0.0 {
            0.0
        } else {
            match conversion {
                Conversion::Classic => r + (1.0 / d).ln() / (a - 1.0),
                Conversion::Improved => {
                    if d * d + (-r).exp_m1() > 0.0 {
                        0.0
                    } else if a > 1.01 {
                        r + (-1.0 / a).ln_1p() - (d * a).ln() / (a - 1.0)
                    } else {
                        f64::INFINITY
                    }
                }
            }
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    if !best.0.is_finite() {
        return Err(LearnError::Accounting(
            "no order gives a finite epsilon; the noise is too small for this many steps".into(),
        ));
    }
    Ok(Guarantee {
        epsilon: Epsilon::new(best.0.max(0.0))?,
        delta,
        order: best.1,
        conversion,
    })
}

/// ε after `steps` of `mechanism` over `orders` (convenience for one homogeneous run).
pub fn epsilon_for(
    mechanism: &SampledGaussian,
    steps: u64,
    orders: &[f64],
    delta: Delta,
    conversion: Conversion,
) -> Result<Guarantee> {
    let mut acc = RdpAccountant::with_orders(orders.to_vec());
    acc.compose(mechanism, steps);
    acc.epsilon(delta, conversion)
}

/// The smallest noise multiplier σ (to relative precision 1e-4) such that `steps` of the
/// sampled Gaussian at `sample_rate` are (target, δ)-DP. Bisection on ln σ in [0.05, 1000].
pub fn noise_multiplier_for(
    target: Epsilon,
    delta: Delta,
    sample_rate: f64,
    steps: u64,
    orders: &[f64],
    conversion: Conversion,
) -> Result<f64> {
    let prior = RdpAccountant::with_orders(orders.to_vec());
    noise_multiplier_after(&prior, target, delta, sample_rate, steps, conversion)
}

/// Like [`noise_multiplier_for`], for a run that follows what `prior` already spent (e.g. a
/// private statistic released before training): the composition must meet the target.
pub fn noise_multiplier_after(
    prior: &RdpAccountant,
    target: Epsilon,
    delta: Delta,
    sample_rate: f64,
    steps: u64,
    conversion: Conversion,
) -> Result<f64> {
    let eps_at = |sigma: f64| -> Result<f64> {
        let m = SampledGaussian::new(sample_rate, sigma)?;
        let mut acc = prior.clone();
        acc.compose(&m, steps);
        Ok(acc
            .epsilon(delta, conversion)
            .map(|g| g.epsilon.value())
            .unwrap_or(f64::INFINITY))
    };
    let (mut lo, mut hi) = (0.05f64, 1000.0f64);
    if eps_at(hi)? > target.value() {
        return Err(LearnError::Accounting(format!(
            "even σ = {hi} does not reach {target} at {delta} with q = {sample_rate} over {steps} steps; \
             lower the sampling rate or the number of steps"
        )));
    }
    if eps_at(lo)? <= target.value() {
        return Ok(lo);
    }
    while hi / lo > 1.0 + 1e-4 {
        let mid = (lo * hi).sqrt();
        if eps_at(mid)? <= target.value() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi)
}

/// The one σ calibration of every training run (central, federated, need model): the
/// sampled Gaussian at rate `q` whose `steps` cost at most `target` at `delta` (RDP over
/// `dp_accounting`'s orders, improved conversion), with σ as small as that allows.
///
/// σ has ε(σ) ∈ [target − 1e-7, target − 1e-9]: [`noise_multiplier_after`] brackets it to a
/// relative 1e-4 in σ, which is up to ~1e-3 in ε; bisection then closes in. The last 1e-9
/// of headroom absorbs the rounding of a ledger that adds the rounds' RDP curves one by one.
pub fn calibrate(target: Epsilon, delta: Delta, q: f64, steps: u64) -> Result<SampledGaussian> {
    let orders = orders_dp_accounting();
    let eps_at = |sigma: f64| -> Result<f64> {
        let m = SampledGaussian::new(q, sigma)?;
        Ok(epsilon_for(&m, steps, &orders, delta, Conversion::Improved)
            .map(|g| g.epsilon.value())
            .unwrap_or(f64::INFINITY))
    };
    let goal = target.value() - 1e-9;
    let mut hi = noise_multiplier_after(
        &RdpAccountant::with_orders(orders.clone()),
        target,
        delta,
        q,
        steps,
        Conversion::Improved,
    )?;
    if eps_at(hi)? > goal {
        hi *= 1.0 + 1e-6;
    }
    let mut lo = hi / (1.0 + 2e-4);
    for _ in 0..64 {
        if eps_at(lo)? > goal || lo < 1e-3 {
            break;
        }
        lo /= 1.01;
    }
    for _ in 0..200 {
        let e_hi = eps_at(hi)?;
        if e_hi <= goal && goal - e_hi < 1e-7 - 1e-9 {
            return SampledGaussian::new(q, hi);
        }
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if eps_at(mid)? <= goal {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if eps_at(hi)? <= target.value() {
        // The curve is flat here (e.g. ε reached through the lowest order); good enough.
        return SampledGaussian::new(q, hi);
    }
    Err(LearnError::Accounting(format!(
        "could not calibrate σ for {target} at {delta} with q = {q} over {steps} steps"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_batch_rdp_is_the_gaussian_curve() {
        let m = SampledGaussian::new(1.0, 2.0).unwrap();
        assert!((m.rdp(3.0) - 3.0 / 8.0).abs() < 1e-12);
    }

    #[test]
    fn integer_and_fractional_series_agree_near_integers() {
        let m = SampledGaussian::new(0.01, 1.5).unwrap();
        let int = m.rdp(8.0);
        let frac = log_a_frac(0.01, 1.5, 8.000_001) / 7.000_001;
        assert!((int - frac).abs() / int < 1e-3, "{int} vs {frac}");
    }

    #[test]
    fn log_erfc_branches_agree_where_they_meet() {
        for x in [10.0, 20.0, 25.0] {
            let exact = libm::erfc(x).ln();
            let asym = log_erfc_asymptotic(x);
            assert!(
                (exact - asym).abs() < 1e-9 * exact.abs(),
                "{x}: {exact} vs {asym}"
            );
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(SampledGaussian::new(0.0, 1.0).is_err());
        assert!(SampledGaussian::new(0.1, 0.0).is_err());
        assert!(Delta::new(1.0).is_err());
        assert!(Epsilon::new(f64::NAN).is_err());
    }
}
