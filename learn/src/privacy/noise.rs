//! The noise generator DP-SGD draws from: ChaCha20 seeded from the operating system, Gaussian
//! samples by Marsaglia's polar method in `f64`.
//!
//! Why not OpenDP's sampler on the hot path: OpenDP samples the exact discrete Gaussian with
//! arbitrary-precision arithmetic, which costs microseconds per coordinate; one DP-SGD step noises
//! every coordinate of a 77 × 2^16 model (5 M draws). OpenDP stays the reference this sampler is
//! statistically tested against (`tests/noise.rs`).
//!
//! Known limitation, stated so nobody has to rediscover it: floating-point Gaussian samplers
//! leak through the low-order bits of their output (Mironov 2012 for Laplace; the same argument
//! applies here). The model update is rounded to `f32` and mixed with the sum of many clipped
//! gradients before anyone sees it, which blunts that attack but does not formally remove it.

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};

use crate::error::{LearnError, Result};

/// A cryptographically secure source of uniform and Gaussian randomness.
///
/// Built with [`NoiseSource::from_os`] everywhere real data is involved. The only other
/// constructor, [`NoiseSource::seeded_for_tests`], is deterministic and exists so tests can
/// assert exact values; a report of any training run says which kind was used.
pub struct NoiseSource {
    rng: ChaCha20Rng,
    deterministic: bool,
    spare: Option<f64>,
}

impl std::fmt::Debug for NoiseSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSource")
            .field("deterministic", &self.deterministic)
            .field("state", &"[redacted]")
            .finish()
    }
}

impl NoiseSource {
    /// ChaCha20 keyed with 32 bytes from the operating system's generator.
    pub fn from_os() -> Result<Self> {
        let mut seed = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| LearnError::Entropy(e.to_string()))?;
        let rng = ChaCha20Rng::from_seed(seed);
        seed.fill(0);
        Ok(NoiseSource {
            rng,
            deterministic: false,
            spare: None,
        })
    }

    /// **Tests only.** A deterministic generator: the same seed gives the same noise, which
    /// voids any privacy guarantee. Training reports flag runs made with it.
    pub fn seeded_for_tests(seed: u64) -> Self {
        NoiseSource {
            rng: ChaCha20Rng::seed_from_u64(seed),
            deterministic: true,
            spare: None,
        }
    }

    /// Whether this source came from [`NoiseSource::seeded_for_tests`].
    pub fn is_deterministic(&self) -> bool {
        self.deterministic
    }

    /// A child generator for another thread: a fresh key drawn from this one.
    pub fn fork(&mut self) -> Self {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        NoiseSource {
            rng: ChaCha20Rng::from_seed(seed),
            deterministic: self.deterministic,
            spare: None,
        }
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform `u64`.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Uniform index in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = n as u64;
        if n64 <= 1 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX - n64 + 1) % n64;
        loop {
            let v = self.rng.next_u64();
            if v <= zone {
                return (v % n64) as usize;
            }
        }
    }

    /// Standard normal sample.
    #[inline]
    pub fn standard_normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (a, b) = self.normal_pair();
        self.spare = Some(b);
        a
    }

    /// Two independent standard normals (Marsaglia polar method).
    #[inline]
    fn normal_pair(&mut self) -> (f64, f64) {
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let m = (-2.0 * s.ln() / s).sqrt();
                return (u * m, v * m);
            }
        }
    }

    /// Adds `N(0, std²)` independently to every element of `out`.
    pub fn add_gaussian(&mut self, out: &mut [f32], std: f64) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] += (a * std) as f32;
            pair[1] += (b * std) as f32;
        }
        for x in chunks.into_remainder() {
            *x += (self.standard_normal() * std) as f32;
        }
    }

    /// Fills `out` with `N(0, std²)` samples in `f64` (used by tests and benches).
    pub fn fill_gaussian(&mut self, out: &mut [f64], std: f64) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = a * std;
            pair[1] = b * std;
        }
        for x in chunks.into_remainder() {
            *x = self.standard_normal() * std;
        }
    }

    /// Like [`add_gaussian`](Self::add_gaussian) but split across `threads` scoped threads, each
    /// with a generator forked from this one. Worth it above a few hundred thousand elements.
    pub fn add_gaussian_parallel(&mut self, out: &mut [f32], std: f64, threads: usize) {
        let threads = threads.max(1);
        if threads == 1 || out.len() < 1 << 16 {
            self.add_gaussian(out, std);
            return;
        }
        let chunk = out.len().div_ceil(threads);
        let mut forks: Vec<NoiseSource> = (0..threads).map(|_| self.fork()).collect();
        std::thread::scope(|s| {
            for (part, src) in out.chunks_mut(chunk).zip(forks.iter_mut()) {
                s.spawn(move || src.add_gaussian(part, std));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range() {
        let mut n = NoiseSource::seeded_for_tests(1);
        for k in 1..50 {
            assert!(n.below(k) < k);
        }
    }

    #[test]
    fn os_source_is_not_marked_deterministic() {
        let n = NoiseSource::from_os().unwrap();
        assert!(!n.is_deterministic());
        assert!(format!("{n:?}").contains("[redacted]"));
    }
}
