//! OpenDP as the reference (feature `opendp-reference`, on by default).
//!
//! OpenDP's Gaussian mechanism carries its own privacy map (zCDP) and its zCDP → (ε, δ)
//! conversion is proven; its sampler draws the exact discrete Gaussian on a fine grid from
//! OpenSSL's generator. amble uses it to cross-check the accountant (no subsampling, where both
//! must agree) and as the distribution the fast noise path is tested against. It is too slow
//! for the hot path (microseconds per coordinate against nanoseconds).

use opendp::combinators::make_zCDP_to_approxDP;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

use crate::error::{LearnError, Result};

fn odp<E: std::fmt::Debug>(e: E) -> LearnError {
    LearnError::OpenDp(format!("{e:?}"))
}

/// The ρ-zCDP guarantee OpenDP's Gaussian mechanism with standard deviation `scale` gives a
/// query of L2 sensitivity `sensitivity` (ρ = Δ²/(2σ²) for the continuous Gaussian).
pub fn gaussian_rho(scale: f64, sensitivity: f64) -> Result<f64> {
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )
    .map_err(odp)?;
    m.map(&sensitivity).map_err(odp)
}

/// ε at `delta` for `compositions` adaptive uses of that Gaussian mechanism (σ = noise
/// multiplier, sensitivity 1), through OpenDP's zCDP → approximate-DP conversion.
pub fn gaussian_epsilon(noise_multiplier: f64, compositions: u64, delta: f64) -> Result<f64> {
    // ρ composes additively, and scaling σ by 1/√k has exactly k times the ρ.
    let scale = noise_multiplier / (compositions as f64).sqrt();
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )
    .map_err(odp)?;
    let approx = make_zCDP_to_approxDP(m).map_err(odp)?;
    let profile = approx.map(&1.0).map_err(odp)?;
    profile.epsilon(delta).map_err(odp)
}

/// `n` samples of OpenDP's Gaussian noise with standard deviation `scale` (noise added to a
/// zero vector).
pub fn gaussian_samples(n: usize, scale: f64) -> Result<Vec<f64>> {
    let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
        VectorDomain::new(AtomDomain::<f64>::new_non_nan()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )
    .map_err(odp)?;
    m.invoke(&vec![0.0; n]).map_err(odp)
}
