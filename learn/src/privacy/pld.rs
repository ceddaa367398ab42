//! Privacy loss distribution (PLD) accounting for the Poisson-subsampled Gaussian: tighter
//! than RDP because it composes the exact distribution of the privacy loss instead of a bound
//! on its moments.
//!
//! Method (Koskela et al. 2020; Doroshenko et al. 2022, "Connect the Dots"): the privacy loss
//! L = ln(P(x)/Q(x)) is discretised on a grid of width `h`. The true probability mass that P puts
//! between two grid points is split between them so that both its P-mass and its Q-mass
//! (∫ e^{-L} dP) are preserved; the result is a *dominating* discrete PLD — its hockey-stick
//! curve δ(ε) is the chord of the true, convex curve — so ε computed from it is a valid upper
//! bound, and, unlike rounding every loss up, the discretisation error does not grow linearly
//! with the number of compositions. Composition is convolution, done by FFT with binary
//! exponentiation; after each convolution, negligible tails are moved pessimistically (lower
//! tail up to the first kept point, upper tail to "infinite loss").
//!
//! Both neighbouring directions of add/remove-one-subject are computed and the larger ε
//! reported, as `dp_accounting`'s PLD accountant does.

use crate::error::{LearnError, Result};
use crate::privacy::{Delta, Epsilon, SampledGaussian};

/// A discrete privacy loss distribution: mass `pmf[i]` at loss `(offset + i)·h`, plus the mass
/// of infinite loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Pld {
    h: f64,
    offset: i64,
    pmf: Vec<f64>,
    infinity_mass: f64,
}

/// Tail mass below which grid points are dropped after a convolution.
const TAIL: f64 = 1e-13;

fn phi_upper(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// P[a < Z ≤ b] for a standard normal Z, accurate in both tails.
fn normal_mass(a: f64, b: f64) -> f64 {
    if a >= b {
        return 0.0;
    }
    if a >= 0.0 {
        phi_upper(a) - phi_upper(b)
    } else if b <= 0.0 {
        phi_upper(-b) - phi_upper(-a)
    } else {
        1.0 - phi_upper(-a) - phi_upper(b)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// P = (1−q)N(0,σ²) + qN(1,σ²), Q = N(0,σ²): a subject's data is present in P.
    Remove,
    /// P = N(0,σ²), Q = the mixture.
    Add,
}

impl Pld {
    /// Single-step PLD of the sampled Gaussian in one direction.
    fn sampled_gaussian(m: &SampledGaussian, h: f64, dir: Direction) -> Result<Self> {
        let (q, s) = (m.sample_rate, m.noise_multiplier);
        let s2 = s * s;
        // Loss as a function of x, and its inverse.
        let mix_ratio = |x: f64| ((2.0 * x - 1.0) / (2.0 * s2)).exp();
        let loss = |x: f64| {
            let l = (1.0 - q + q * mix_ratio(x)).ln();
            if dir == Direction::Remove { l } else { -l }
        };
        // x at which the loss equals l; None outside the loss range.
        let x_of = |l: f64| -> Option<f64> {
            let e = if dir == Direction::Remove {
                l.exp()
            } else {
                (-l).exp()
            };
            let t = (e - (1.0 - q)) / q;
            (t > 0.0).then(|| s2 * t.ln() + 0.5)
        };
        // P- and Q-mass of an x-interval.
        let mass = |a: f64, b: f64| -> (f64, f64) {
            let n0 = normal_mass(a / s, b / s);
            let n1 = normal_mass((a - 1.0) / s, (b - 1.0) / s);
            let mix = (1.0 - q) * n0 + q * n1;
            match dir {
                Direction::Remove => (mix, n0),
                Direction::Add => (n0, mix),
            }
        };
        // The x-range that matters: beyond ±40σ around the means nothing is representable.
        let (x_lo, x_hi) = (-40.0 * s, 1.0 + 40.0 * s);
        let (l_a, l_b) = (loss(x_lo), loss(x_hi));
        let (l_min, l_max) = (l_a.min(l_b), l_a.max(l_b));
        if !(l_min.is_finite() && l_max.is_finite()) || q >= 1.0 {
            return Err(LearnError::Accounting(
                "PLD needs 0 < q < 1 and a moderate noise multiplier; use RDP".into(),
            ));
        }
        let i_lo = (l_min / h).floor() as i64;
        let i_hi = (l_max / h).ceil() as i64;
        let n = usize::try_from(i_hi - i_lo + 1)
            .map_err(|_| LearnError::Accounting("empty PLD grid".into()))?;
        if n > 50_000_000 {
            return Err(LearnError::Accounting(format!(
                "PLD grid of {n} points; raise the discretisation interval"
            )));
        }
        let mut pmf = vec![0.0; n];
        // x boundaries of each loss interval [l_j, l_{j+1}], clamped to the x-range.
        let x_at = |i: i64| -> f64 {
            let l = i as f64 * h;
            // Below the loss range (remove) or above it (add) is the x → −∞ end.
            x_of(l).map_or(x_lo, |x| x.clamp(x_lo, x_hi))
        };
        let mut p_total = 0.0;
        for j in 0..n - 1 {
            let (ia, ib) = (i_lo + j as i64, i_lo + j as i64 + 1);
            let (xa, xb) = (x_at(ia), x_at(ib));
            let (a, b) = if xa <= xb { (xa, xb) } else { (xb, xa) };
            let (p, qm) = mass(a, b);
            if p <= 0.0 {
                continue;
            }
            p_total += p;
            let (la, lb) = (ia as f64 * h, ib as f64 * h);
            // Split p between l_a and l_b preserving P-mass p and Q-mass qm.
            let (ea, eb) = ((-la).exp(), (-lb).exp());
            let wb = ((p * ea - qm) / (ea - eb)).clamp(0.0, p);
            pmf[j] += p - wb;
            pmf[j + 1] += wb;
        }
        // Mass beyond the x-range: the far tails, moved pessimistically.
        let outside = (1.0 - p_total).max(0.0);
        let mut pld = Pld {
            h,
            offset: i_lo,
            pmf,
            infinity_mass: 0.0,
        };
        pld.infinity_mass += outside;
        pld.trim();
        Ok(pld)
    }

    /// Drops negligible tails: the lower tail moves up to the first kept point, the upper
    /// tail becomes infinite loss (both pessimistic).
    fn trim(&mut self) {
        for v in &mut self.pmf {
            if *v < 0.0 {
                *v = 0.0;
            }
        }
        let mut lo = 0;
        let mut acc = 0.0;
        while lo + 1 < self.pmf.len() && acc + self.pmf[lo] < TAIL {
            acc += self.pmf[lo];
            lo += 1;
        }
        let mut hi = self.pmf.len();
        let mut up = 0.0;
        while hi > lo + 1 && up + self.pmf[hi - 1] < TAIL {
            up += self.pmf[hi - 1];
            hi -= 1;
        }
        self.pmf.truncate(hi);
        self.pmf.drain(..lo);
        if let Some(first) = self.pmf.first_mut() {
            *first += acc;
        }
        self.offset += lo as i64;
        self.infinity_mass += up;
    }

    fn compose(&self, other: &Pld) -> Pld {
        let pmf = convolve(&self.pmf, &other.pmf);
        let mut out = Pld {
            h: self.h,
            offset: self.offset + other.offset,
            pmf,
            infinity_mass: 1.0 - (1.0 - self.infinity_mass) * (1.0 - other.infinity_mass),
        };
        out.trim();
        out
    }

    fn self_compose(&self, times: u64) -> Pld {
        let mut result: Option<Pld> = None;
        let mut base = self.clone();
        let mut t = times;
        while t > 0 {
            if t & 1 == 1 {
                result = Some(match result {
                    None => base.clone(),
                    Some(r) => r.compose(&base),
                });
            }
            t >>= 1;
            if t > 0 {
                base = base.compose(&base);
            }
        }
        result.unwrap_or(Pld {
            h: self.h,
            offset: 0,
            pmf: vec![1.0],
            infinity_mass: 0.0,
        })
    }

    /// δ(ε) = P[L = ∞] + Σ m_i (1 − e^{ε − l_i})₊.
    pub fn delta(&self, epsilon: f64) -> f64 {
        let mut d = self.infinity_mass;
        for (i, &m) in self.pmf.iter().enumerate() {
            let l = (self.offset + i as i64) as f64 * self.h;
            if l > epsilon {
                d += m * (-(epsilon - l).exp_m1());
            }
        }
        d
    }

    /// The smallest ε with δ(ε) ≤ `delta` (bisection; δ(ε) is decreasing).
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        if self.infinity_mass > delta {
            return Err(LearnError::Accounting(format!(
                "mass of infinite loss {:e} exceeds δ",
                self.infinity_mass
            )));
        }
        let top = (self.offset + self.pmf.len() as i64) as f64 * self.h;
        if self.delta(0.0) <= delta {
            return Ok(0.0);
        }
        let (mut lo, mut hi) = (0.0, top.max(0.0));
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if self.delta(mid) <= delta {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }
}

/// ε of `steps` compositions of `mechanism` at `delta` by PLD, with loss grid width
/// `discretisation` (1e-4 is a good default; smaller is tighter and slower).
pub fn pld_epsilon(
    mechanism: &SampledGaussian,
    steps: u64,
    delta: Delta,
    discretisation: f64,
) -> Result<Epsilon> {
    if !(discretisation > 0.0 && discretisation < 1.0) {
        return Err(LearnError::InvalidConfig(format!(
            "PLD discretisation must be in (0, 1), got {discretisation}"
        )));
    }
    let mut worst: f64 = 0.0;
    for dir in [Direction::Remove, Direction::Add] {
        let single = Pld::sampled_gaussian(mechanism, discretisation, dir)?;
        let composed = single.self_compose(steps);
        worst = worst.max(composed.epsilon(delta.value())?);
    }
    Epsilon::new(worst)
}

/// Linear convolution of two real sequences by FFT.
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let out_len = a.len() + b.len() - 1;
    if a.len().min(b.len()) <= 32 {
        let mut out = vec![0.0; out_len];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        return out;
    }
    let n = out_len.next_power_of_two();
    // Pack a into the real part and b into the imaginary part: one forward FFT for both.
    let mut z: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            (
                a.get(i).copied().unwrap_or(0.0),
                b.get(i).copied().unwrap_or(0.0),
            )
        })
        .collect();
    fft(&mut z, false);
    // A(k) = (Z(k) + conj Z(n−k))/2, B(k) = (Z(k) − conj Z(n−k))/(2i); product A·B.
    let mut prod = vec![(0.0, 0.0); n];
    for k in 0..n {
        let (zr, zi) = z[k];
        let (cr, ci) = {
            let (r, i) = z[(n - k) % n];
            (r, -i)
        };
        let (ar, ai) = (0.5 * (zr + cr), 0.5 * (zi + ci));
        // (Z − conj Z')/(2i) = (d)/(2i) with d = (zr − cr, zi − ci); x/(i) = (xi, −xr)
        let (dr, di) = (zr - cr, zi - ci);
        let (br, bi) = (0.5 * di, -0.5 * dr);
        prod[k] = (ar * br - ai * bi, ar * bi + ai * br);
    }
    fft(&mut prod, true);
    prod.truncate(out_len);
    prod.into_iter().map(|(r, _)| r / n as f64).collect()
}

/// In-place iterative radix-2 FFT (length a power of two); `inverse` flips the sign only.
fn fft(x: &mut [(f64, f64)], inverse: bool) {
    let n = x.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            x.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let ang = sign * 2.0 * std::f64::consts::PI / len as f64;
        let half = len / 2;
        // Twiddles computed directly (not by repeated multiplication) for accuracy.
        let tw: Vec<(f64, f64)> = (0..half)
            .map(|k| {
                let (s, c) = (ang * k as f64).sin_cos();
                (c, s)
            })
            .collect();
        for start in (0..n).step_by(len) {
            for k in 0..half {
                let (wr, wi) = tw[k];
                let (ur, ui) = x[start + k];
                let (vr0, vi0) = x[start + k + half];
                let (vr, vi) = (vr0 * wr - vi0 * wi, vr0 * wi + vi0 * wr);
                x[start + k] = (ur + vr, ui + vi);
                x[start + k + half] = (ur - vr, ui - vi);
            }
        }
        len <<= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_convolution_matches_direct() {
        let a: Vec<f64> = (0..100).map(|i| ((i * 7) % 13) as f64 / 13.0).collect();
        let b: Vec<f64> = (0..77).map(|i| ((i * 5) % 11) as f64 / 11.0).collect();
        let fast = convolve(&a, &b);
        let mut slow = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                slow[i + j] += x * y;
            }
        }
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() < 1e-9, "{f} vs {s}");
        }
    }

    #[test]
    fn single_step_pld_is_a_probability_distribution() {
        let m = SampledGaussian::new(0.01, 4.0).unwrap();
        for dir in [Direction::Remove, Direction::Add] {
            let p = Pld::sampled_gaussian(&m, 1e-4, dir).unwrap();
            let total: f64 = p.pmf.iter().sum::<f64>() + p.infinity_mass;
            assert!((total - 1.0).abs() < 1e-9, "total mass {total}");
        }
    }
}
