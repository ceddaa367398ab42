//! DP-SGD with per-subject clipping: the unit of privacy is one person, not one record.
//!
//! Each step: every subject is included independently with probability q (Poisson sampling,
//! decided by the secure generator); for each included subject the gradients of *all* their
//! examples are summed and that sum is clipped to L2 norm C; the clipped sums are added up,
//! Gaussian noise N(0, σ²C²) is added to every coordinate of the (dense) gradient, and the
//! result is divided by the expected batch size q·N before the step. The accountant charges
//! exactly this mechanism ([`SampledGaussian`]).
//!
//! Noise is added densely — every one of the classes × dim weights and the biases, every step.
//! The pass that adds it also applies the accumulated gradient, so one step reads the model
//! once; with 77 × 2^16 weights a step costs tens of milliseconds (see `benches/`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::{Example, ProgressFn, SoftmaxRegression, probabilities_into, report};
use crate::privacy::NoiseSource;
use crate::privacy::{RdpAccountant, SampledGaussian};

/// DP-SGD settings. The privacy-relevant ones are `sample_rate`, `noise_multiplier` and
/// `steps`; `clip_norm` scales the noise with the sensitivity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSgdConfig {
    /// Poisson sampling rate q of subjects per step.
    pub sample_rate: f64,
    /// σ: noise standard deviation in units of `clip_norm`.
    pub noise_multiplier: f64,
    /// C: L2 bound on one subject's summed gradient.
    pub clip_norm: f64,
    /// Step size applied to the noised mean gradient.
    pub learning_rate: f32,
    /// Number of steps.
    pub steps: u64,
    /// Average the iterates of the last fraction of steps (0 = keep the last iterate).
    /// Post-processing: costs no privacy.
    pub average_tail: f64,
    /// The learning rate decays linearly from `learning_rate` to `learning_rate × final_lr_fraction`
    /// over the run (1 = constant).
    pub final_lr_fraction: f32,
    /// Whether the per-class bias is trained. Off by default: the bias gradient would take
    /// half of every subject's clipping budget (‖∂b‖ = ‖∂W‖ for unit-norm features), and the
    /// classes it serves are roughly balanced.
    pub fit_bias: bool,
    /// Threads for the dense noise pass (1 = current thread only).
    pub threads: usize,
}

impl Default for DpSgdConfig {
    fn default() -> Self {
        DpSgdConfig {
            sample_rate: 0.1,
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            learning_rate: 2.0,
            steps: 50,
            average_tail: 0.5,
            final_lr_fraction: 1.0,
            fit_bias: false,
            threads: 2,
        }
    }
}

impl DpSgdConfig {
    /// The mechanism one step of this configuration is.
    pub fn mechanism(&self) -> Result<SampledGaussian> {
        SampledGaussian::new(self.sample_rate, self.noise_multiplier)
    }

    /// The RDP this run will spend, over `orders` (for a ledger check *before* training).
    pub fn planned_rdp(&self, orders: Vec<f64>) -> Result<RdpAccountant> {
        let mut acc = RdpAccountant::with_orders(orders);
        acc.compose(&self.mechanism()?, self.steps);
        Ok(acc)
    }

    fn validate(&self) -> Result<()> {
        self.mechanism()?;
        if !(self.clip_norm > 0.0 && self.clip_norm.is_finite()) {
            return Err(LearnError::InvalidConfig(format!(
                "clip_norm must be finite and > 0, got {}",
                self.clip_norm
            )));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) || self.steps == 0 {
            return Err(LearnError::InvalidConfig(
                "DP-SGD needs steps ≥ 1 and a positive finite learning rate".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.average_tail) {
            return Err(LearnError::InvalidConfig(format!(
                "average_tail must be in [0, 1), got {}",
                self.average_tail
            )));
        }
        Ok(())
    }
}

/// What a DP-SGD run did and spent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpSgdReport {
    /// Steps taken.
    pub steps: u64,
    /// The per-step mechanism.
    pub mechanism: SampledGaussian,
    /// Number of distinct subjects N.
    pub subjects: usize,
    /// Mean number of subjects sampled per step.
    pub mean_batch: f64,
    /// Fraction of sampled subjects whose gradient sum was clipped.
    pub clipped_fraction: f64,
    /// True if the noise came from [`NoiseSource::seeded_for_tests`]: no privacy at all.
    pub deterministic_noise: bool,
}

/// One subject's clipped gradient sum, sparse over feature columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubjectGradient {
    /// Feature columns touched, in first-seen order.
    pub columns: Vec<u32>,
    /// `classes` values per column.
    pub values: Vec<f32>,
    /// Bias gradient (`classes` values).
    pub bias: Vec<f32>,
    /// Norm before clipping.
    pub raw_norm: f64,
}

impl SubjectGradient {
    /// L2 norm (after clipping).
    pub fn l2_norm(&self) -> f64 {
        self.values
            .iter()
            .chain(&self.bias)
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }
}

/// Reusable buffers for [`subject_gradient_into`].
#[derive(Default)]
struct Scratch {
    slot: std::collections::HashMap<u32, usize>,
    p: Vec<f32>,
}

/// The clipped sum of the cross-entropy gradients of all of one subject's `examples`
/// at the current model. Public so its bound can be tested: its norm never exceeds `clip`.
pub fn subject_gradient(
    model: &SoftmaxRegression,
    examples: &[&Example],
    clip: f64,
    fit_bias: bool,
) -> Result<SubjectGradient> {
    for e in examples {
        model.check(&e.x)?;
        if e.label >= model.classes() {
            return Err(LearnError::Shape(format!("label {} out of range", e.label)));
        }
    }
    let mut out = SubjectGradient::default();
    subject_gradient_into(
        model,
        examples,
        clip,
        fit_bias,
        &mut Scratch::default(),
        &mut out,
    )?;
    Ok(out)
}

fn subject_gradient_into(
    model: &SoftmaxRegression,
    examples: &[&Example],
    clip: f64,
    fit_bias: bool,
    scratch: &mut Scratch,
    out: &mut SubjectGradient,
) -> Result<()> {
    let k = model.classes();
    let (w, b) = (model.w()?, model.b()?);
    out.columns.clear();
    out.values.clear();
    out.bias.clear();
    out.bias.resize(k, 0.0);
    scratch.slot.clear();
    scratch.p.resize(k, 0.0);
    if let [e] = examples {
        // One example (the common case): its nonzero columns are already distinct.
        probabilities_into(w, b, &e.x, &mut scratch.p);
        scratch.p[e.label] -= 1.0;
        if fit_bias {
            out.bias.copy_from_slice(&scratch.p);
        }
        out.columns.extend_from_slice(&e.x.indices);
        out.values.reserve(e.x.indices.len() * k);
        for &v in &e.x.values {
            out.values.extend(scratch.p.iter().map(|pc| pc * v));
        }
    }
    for e in examples.iter().filter(|_| examples.len() > 1) {
        probabilities_into(w, b, &e.x, &mut scratch.p);
        scratch.p[e.label] -= 1.0;
        if fit_bias {
            for (bc, pc) in out.bias.iter_mut().zip(&scratch.p) {
                *bc += pc;
            }
        }
        for (&j, &v) in e.x.indices.iter().zip(&e.x.values) {
            let s = *scratch.slot.entry(j).or_insert_with(|| {
                out.columns.push(j);
                out.values.resize(out.values.len() + k, 0.0);
                out.columns.len() - 1
            });
            for (g, pc) in out.values[s * k..s * k + k].iter_mut().zip(&scratch.p) {
                *g += pc * v;
            }
        }
    }
    let norm = out.l2_norm();
    out.raw_norm = norm;
    if norm > clip {
        let f = (clip / norm) as f32;
        // f32 rounding can leave the product a hair above `clip`; shrink by one ulp-ish margin.
        let f = f * (1.0 - 4.0 * f32::EPSILON);
        for v in out.values.iter_mut().chain(out.bias.iter_mut()) {
            *v *= f;
        }
    }
    Ok(())
}

/// Groups example indices by subject (deterministic order).
pub fn group_by_subject(data: &[Example]) -> Vec<Vec<usize>> {
    let mut m: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, e) in data.iter().enumerate() {
        m.entry(e.subject).or_default().push(i);
    }
    m.into_values().collect()
}

/// Trains `model` in place with DP-SGD. The caller charges the privacy ledger *before*
/// calling (see [`DpSgdConfig::planned_rdp`]); the report says what was done.
pub fn train_dp_sgd(
    model: &mut SoftmaxRegression,
    data: &[Example],
    cfg: &DpSgdConfig,
    noise: &mut NoiseSource,
    progress: ProgressFn<'_>,
) -> Result<DpSgdReport> {
    cfg.validate()?;
    if data.is_empty() {
        return Err(LearnError::NoData(" for DP-SGD"));
    }
    for e in data {
        model.check(&e.x)?;
        if e.label >= model.classes() {
            return Err(LearnError::Shape(format!("label {} out of range", e.label)));
        }
    }
    let subjects = group_by_subject(data);
    let n = subjects.len();
    let k = model.classes();
    let dim = model.dim();
    let denom = cfg.sample_rate * n as f64;
    let avg_start = ((1.0 - cfg.average_tail) * cfg.steps as f64).floor() as u64;

    let mut grad_w = vec![0.0f32; k * dim];
    let mut grad_b = vec![0.0f32; k];
    let mut avg: Option<(Vec<f32>, Vec<f32>, u64)> = None;
    let mut scratch = Scratch::default();
    let mut g = SubjectGradient::default();
    let mut sampled_total = 0u64;
    let mut clipped_total = 0u64;
    let mut members: Vec<&Example> = Vec::new();
    let mut p = vec![0.0f32; k];

    for step in 0..cfg.steps {
        for idx in &subjects {
            if !noise.bernoulli(cfg.sample_rate) {
                continue;
            }
            sampled_total += 1;
            if let [only] = idx.as_slice() {
                // One example: scale p − e_y by the clip factor and add it straight into the
                // buffer; ‖(p − e_y) ⊗ x‖ = ‖p − e_y‖·‖x‖, so nothing is materialised.
                let e = &data[*only];
                probabilities_into(model.w()?, model.b()?, &e.x, &mut p);
                p[e.label] -= 1.0;
                let r2: f64 = p.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let x2: f64 =
                    e.x.values
                        .iter()
                        .map(|&v| f64::from(v) * f64::from(v))
                        .sum();
                let norm = (r2 * (x2 + if cfg.fit_bias { 1.0 } else { 0.0 })).sqrt();
                let f = if norm > cfg.clip_norm {
                    clipped_total += 1;
                    ((cfg.clip_norm / norm) as f32) * (1.0 - 4.0 * f32::EPSILON)
                } else {
                    1.0
                };
                for (&j, &v) in e.x.indices.iter().zip(&e.x.values) {
                    let dst = &mut grad_w[j as usize * k..j as usize * k + k];
                    let fv = f * v;
                    for (d, pc) in dst.iter_mut().zip(&p) {
                        *d += fv * pc;
                    }
                }
                if cfg.fit_bias {
                    for (d, pc) in grad_b.iter_mut().zip(&p) {
                        *d += f * pc;
                    }
                }
                continue;
            }
            members.clear();
            members.extend(idx.iter().map(|&i| &data[i]));
            subject_gradient_into(
                model,
                &members,
                cfg.clip_norm,
                cfg.fit_bias,
                &mut scratch,
                &mut g,
            )?;
            if g.raw_norm > cfg.clip_norm {
                clipped_total += 1;
            }
            for (c, &j) in g.columns.iter().enumerate() {
                let dst = &mut grad_w[j as usize * k..j as usize * k + k];
                for (d, s) in dst.iter_mut().zip(&g.values[c * k..c * k + k]) {
                    *d += s;
                }
            }
            for (d, s) in grad_b.iter_mut().zip(&g.bias) {
                *d += s;
            }
        }
        // W ← W − η/(qN) · (Σ clipped + N(0, σ²C²)): noise goes into the gradient buffer, which
        // is then applied and cleared in the same pass.
        noise.add_gaussian_parallel(
            &mut grad_w,
            cfg.noise_multiplier * cfg.clip_norm,
            cfg.threads,
        );
        if cfg.fit_bias {
            noise.add_gaussian(&mut grad_b, cfg.noise_multiplier * cfg.clip_norm);
        }
        let frac = if cfg.steps > 1 {
            step as f32 / (cfg.steps - 1) as f32
        } else {
            0.0
        };
        let lr = cfg.learning_rate * (1.0 - frac * (1.0 - cfg.final_lr_fraction));
        let s = (f64::from(lr) / denom) as f32;
        let (w, b) = model.parts_mut()?;
        for (wi, gi) in w.iter_mut().zip(grad_w.iter_mut()) {
            *wi -= s * *gi;
            *gi = 0.0;
        }
        for (bi, gi) in b.iter_mut().zip(grad_b.iter_mut()) {
            *bi -= s * *gi;
            *gi = 0.0;
        }
        if step >= avg_start && cfg.average_tail > 0.0 {
            let (aw, ab, cnt) = avg.get_or_insert_with(|| (vec![0.0; k * dim], vec![0.0; k], 0));
            *cnt += 1;
            let f = 1.0 / *cnt as f32;
            for (a, x) in aw.iter_mut().zip(w.iter()) {
                *a += (x - *a) * f;
            }
            for (a, x) in ab.iter_mut().zip(b.iter()) {
                *a += (x - *a) * f;
            }
        }
        report(progress, "dp-train", step + 1, cfg.steps);
    }
    if let Some((aw, ab, _)) = avg {
        *model = SoftmaxRegression::from_parts(k, dim, aw, ab)?;
    }
    Ok(DpSgdReport {
        steps: cfg.steps,
        mechanism: cfg.mechanism()?,
        subjects: n,
        mean_batch: sampled_total as f64 / cfg.steps as f64,
        clipped_fraction: if sampled_total > 0 {
            clipped_total as f64 / sampled_total as f64
        } else {
            0.0
        },
        deterministic_noise: noise.is_deterministic(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SparseVec;

    /// The single-example fast path must add exactly what [`subject_gradient`] computes.
    #[test]
    fn single_example_fast_path_matches_the_general_subject_gradient() {
        let (k, d) = (4, 32);
        let mut src = NoiseSource::seeded_for_tests(9);
        let mut w = vec![0.0f32; k * d];
        src.add_gaussian(&mut w, 1.0);
        let model = SoftmaxRegression::from_parts(k, d, w, vec![0.1, -0.2, 0.0, 0.3]).unwrap();
        let data: Vec<Example> = (0..12u32)
            .map(|i| Example {
                x: SparseVec::from_pairs(vec![(i, 2.0), ((i * 7 + 3) % 32, 1.5), (31, 0.5)]),
                label: (i % 4) as usize,
                subject: u64::from(i),
            })
            .collect();
        for fit_bias in [false, true] {
            let cfg = DpSgdConfig {
                sample_rate: 1.0,
                noise_multiplier: 1e-12,
                clip_norm: 0.7,
                learning_rate: 1.0,
                steps: 1,
                average_tail: 0.0,
                fit_bias,
                threads: 1,
                ..DpSgdConfig::default()
            };
            let mut trained = model.clone();
            train_dp_sgd(
                &mut trained,
                &data,
                &cfg,
                &mut NoiseSource::seeded_for_tests(1),
                None,
            )
            .unwrap();
            let mut want_w = model.w().unwrap().to_vec();
            let mut want_b = model.b().unwrap().to_vec();
            let s = (1.0 / data.len() as f64) as f32;
            for e in &data {
                let g = subject_gradient(&model, &[e], 0.7, fit_bias).unwrap();
                for (c, &j) in g.columns.iter().enumerate() {
                    for cls in 0..k {
                        want_w[j as usize * k + cls] -= s * g.values[c * k + cls];
                    }
                }
                for (wb, gb) in want_b.iter_mut().zip(&g.bias) {
                    *wb -= s * gb;
                }
            }
            for (a, b) in trained.w().unwrap().iter().zip(&want_w) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
            for (a, b) in trained.b().unwrap().iter().zip(&want_b) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
