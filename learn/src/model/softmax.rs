//! Multinomial logistic regression (softmax) over sparse features, trained by plain SGD.
//!
//! The weight matrix is logically `classes × dim` (an `ndarray::Array2<f32>`), stored in
//! column-major order so that the `classes` weights of one feature are contiguous: a sparse
//! example touches only its nonzero columns, each one cache-friendly run of floats.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ShapeBuilder};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::SparseVec;

/// A training example: features, class index and the person it belongs to (the unit of
/// privacy in DP-SGD; any stable per-person number, e.g. derived from the node's pseudonym).
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Features.
    pub x: SparseVec,
    /// Class index.
    pub label: usize,
    /// The data subject.
    pub subject: u64,
}

/// Where a long-running operation is, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is running (`"featurise"`, `"train"`, `"dp-train"`, `"evaluate"`).
    pub phase: &'static str,
    /// Units done.
    pub done: u64,
    /// Units in total.
    pub total: u64,
}

/// Optional progress callback.
pub type ProgressFn<'a> = Option<&'a dyn Fn(Progress)>;

pub(crate) fn report(progress: ProgressFn<'_>, phase: &'static str, done: u64, total: u64) {
    if let Some(p) = progress {
        p(Progress { phase, done, total });
    }
}

/// Softmax regression: `p = softmax(W x + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftmaxRegression {
    weights: Array2<f32>,
    bias: Array1<f32>,
}

impl SoftmaxRegression {
    /// Zero-initialised model (the usual choice for DP-SGD: no information before training).
    pub fn zeros(classes: usize, dim: usize) -> Result<Self> {
        if classes < 2 || dim == 0 {
            return Err(LearnError::InvalidConfig(format!(
                "a softmax model needs ≥ 2 classes and dim ≥ 1 (got {classes} classes, dim {dim})"
            )));
        }
        Ok(SoftmaxRegression {
            weights: Array2::zeros((classes, dim).f()),
            bias: Array1::zeros(classes),
        })
    }

    /// Rebuilds a model from feature-major weights (`dim` runs of `classes` floats) and bias.
    pub fn from_parts(
        classes: usize,
        dim: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
    ) -> Result<Self> {
        if bias.len() != classes || weights.len() != classes.saturating_mul(dim) {
            return Err(LearnError::Shape(format!(
                "expected {classes}×{dim} weights and {classes} biases, got {} and {}",
                weights.len(),
                bias.len()
            )));
        }
        let weights = Array2::from_shape_vec((classes, dim).f(), weights)
            .map_err(|e| LearnError::Shape(e.to_string()))?;
        Ok(SoftmaxRegression {
            weights,
            bias: Array1::from(bias),
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.weights.nrows()
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.weights.ncols()
    }

    /// The `classes × dim` weights.
    pub fn weights(&self) -> ArrayView2<'_, f32> {
        self.weights.view()
    }

    /// The per-class bias.
    pub fn bias(&self) -> ArrayView1<'_, f32> {
        self.bias.view()
    }

    /// Weights as one feature-major slice (`w[j * classes + c]`).
    pub(crate) fn w(&self) -> Result<&[f32]> {
        self.weights
            .as_slice_memory_order()
            .ok_or_else(|| LearnError::Shape("weights are not contiguous".into()))
    }

    pub(crate) fn parts_mut(&mut self) -> Result<(&mut [f32], &mut [f32])> {
        let w = self
            .weights
            .as_slice_memory_order_mut()
            .ok_or_else(|| LearnError::Shape("weights are not contiguous".into()))?;
        let b = self
            .bias
            .as_slice_mut()
            .ok_or_else(|| LearnError::Shape("bias is not contiguous".into()))?;
        Ok((w, b))
    }

    pub(crate) fn b(&self) -> Result<&[f32]> {
        self.bias
            .as_slice()
            .ok_or_else(|| LearnError::Shape("bias is not contiguous".into()))
    }

    /// Checks that every index of `x` is inside the model.
    pub fn check(&self, x: &SparseVec) -> Result<()> {
        if x.indices.len() != x.values.len() {
            return Err(LearnError::Shape(
                "sparse vector has different numbers of indices and values".into(),
            ));
        }
        if let Some(&m) = x.indices.iter().max() {
            if m as usize >= self.dim() {
                return Err(LearnError::Shape(format!(
                    "feature index {m} outside model dimension {}",
                    self.dim()
                )));
            }
        }
        Ok(())
    }

    /// Class probabilities for `x`.
    pub fn probabilities(&self, x: &SparseVec) -> Result<Vec<f32>> {
        self.check(x)?;
        let mut p = vec![0.0; self.classes()];
        probabilities_into(self.w()?, self.b()?, x, &mut p);
        Ok(p)
    }

    /// Per-feature contribution `W[class, j] · x_j` for every nonzero `j` of `x`.
    pub fn contributions(&self, x: &SparseVec, class: usize) -> Result<Vec<(u32, f32)>> {
        self.check(x)?;
        if class >= self.classes() {
            return Err(LearnError::Shape(format!("class {class} out of range")));
        }
        let k = self.classes();
        let w = self.w()?;
        Ok(x.indices
            .iter()
            .zip(&x.values)
            .map(|(&j, &v)| (j, w[j as usize * k + class] * v))
            .collect())
    }

    /// Number of parameters: `classes × dim` weights plus `classes` biases.
    pub fn flat_len(&self) -> usize {
        self.weights.len() + self.bias.len()
    }

    /// Every parameter as one vector: the weights in memory order (feature-major,
    /// `w[j * classes + c]`), then the bias. The form model updates travel in.
    pub fn to_flat(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.flat_len());
        // The transpose of the column-major `classes × dim` array iterates in memory order.
        v.extend(self.weights.t().iter());
        v.extend(self.bias.iter());
        v
    }

    /// `θ ← θ + scale · delta` for a vector in the [`to_flat`](Self::to_flat) layout.
    pub fn add_flat(&mut self, delta: &[f32], scale: f32) -> Result<()> {
        if delta.len() != self.flat_len() {
            return Err(LearnError::Shape(format!(
                "update has {} values but the model has {} parameters ({} classes × {} features + {} biases)",
                delta.len(),
                self.flat_len(),
                self.classes(),
                self.dim(),
                self.classes()
            )));
        }
        let (w, b) = self.parts_mut()?;
        let (dw, db) = delta.split_at(w.len());
        for (x, d) in w.iter_mut().chain(b.iter_mut()).zip(dw.iter().chain(db)) {
            *x += scale * d;
        }
        Ok(())
    }

    /// Fraction of `data` whose arg-max class equals the label.
    pub fn accuracy(&self, data: &[Example]) -> Result<f64> {
        if data.is_empty() {
            return Err(LearnError::NoData(" to evaluate"));
        }
        let mut right = 0usize;
        for e in data {
            if argmax(&self.probabilities(&e.x)?) == e.label {
                right += 1;
            }
        }
        Ok(right as f64 / data.len() as f64)
    }
}

/// Writes softmax(W x + b) into `p` (indices already checked).
pub(crate) fn probabilities_into(w: &[f32], b: &[f32], x: &SparseVec, p: &mut [f32]) {
    let k = b.len();
    p.copy_from_slice(b);
    for (&j, &v) in x.indices.iter().zip(&x.values) {
        let col = &w[j as usize * k..j as usize * k + k];
        for (pc, wc) in p.iter_mut().zip(col) {
            *pc += wc * v;
        }
    }
    softmax_in_place(p);
}

/// Numerically stable softmax.
pub(crate) fn softmax_in_place(p: &mut [f32]) {
    let m = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0;
    for v in p.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    if s > 0.0 {
        for v in p.iter_mut() {
            *v /= s;
        }
    }
}

/// Index of the largest value (first one on ties; 0 for an empty slice).
pub fn argmax(p: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in p.iter().enumerate() {
        if v > p[best] {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest values, largest first.
pub fn top_k(p: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    idx.truncate(k);
    idx
}

/// Non-private SGD settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Initial learning rate.
    pub learning_rate: f32,
    /// Learning rate at epoch e is `learning_rate / (1 + decay · e)`.
    pub decay: f32,
    /// L2 penalty (weight decay) per example step; 0 disables it.
    pub l2: f32,
    /// Seed of the shuffling order (not a privacy parameter: this mode gives no privacy).
    pub shuffle_seed: u64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            epochs: 12,
            learning_rate: 1.0,
            decay: 0.2,
            l2: 0.0,
            shuffle_seed: 0,
        }
    }
}

impl SoftmaxRegression {
    /// Plain per-example SGD on the cross-entropy loss, touching only the nonzero columns
    /// of each example. Returns the mean training loss of the last epoch.
    pub fn train_sgd(
        &mut self,
        data: &[Example],
        cfg: &SgdConfig,
        progress: ProgressFn<'_>,
    ) -> Result<f64> {
        if data.is_empty() {
            return Err(LearnError::NoData(" for SGD"));
        }
        if !(cfg.learning_rate > 0.0 && cfg.learning_rate.is_finite()) || cfg.epochs == 0 {
            return Err(LearnError::InvalidConfig(
                "SGD needs epochs ≥ 1 and a positive finite learning rate".into(),
            ));
        }
        let k = self.classes();
        for e in data {
            self.check(&e.x)?;
            if e.label >= k {
                return Err(LearnError::Shape(format!(
                    "label {} ≥ {k} classes",
                    e.label
                )));
            }
        }
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.shuffle_seed);
        let mut p = vec![0.0f32; k];
        let mut last_loss = 0.0;
        // Weight decay is applied lazily through a global scale: W_true = scale · W_stored.
        let mut scale = 1.0f32;
        let (w, b) = self.parts_mut()?;
        for epoch in 0..cfg.epochs {
            shuffle(&mut order, &mut rng);
            let lr = cfg.learning_rate / (1.0 + cfg.decay * epoch as f32);
            let mut loss = 0.0f64;
            for &i in &order {
                let e = &data[i];
                p.copy_from_slice(b);
                for (&j, &v) in e.x.indices.iter().zip(&e.x.values) {
                    let col = &w[j as usize * k..j as usize * k + k];
                    let sv = scale * v;
                    for (pc, wc) in p.iter_mut().zip(col) {
                        *pc += wc * sv;
                    }
                }
                softmax_in_place(&mut p);
                loss -= f64::from(p[e.label].max(1e-12).ln());
                p[e.label] -= 1.0;
                if cfg.l2 > 0.0 {
                    scale *= 1.0 - lr * cfg.l2;
                    if scale < 1e-3 {
                        for x in w.iter_mut() {
                            *x *= scale;
                        }
                        scale = 1.0;
                    }
                }
                for (&j, &v) in e.x.indices.iter().zip(&e.x.values) {
                    let col = &mut w[j as usize * k..j as usize * k + k];
                    let g = lr * v / scale;
                    for (wc, pc) in col.iter_mut().zip(&p) {
                        *wc -= g * pc;
                    }
                }
                for (bc, pc) in b.iter_mut().zip(&p) {
                    *bc -= lr * pc;
                }
            }
            last_loss = loss / data.len() as f64;
            report(progress, "train", epoch as u64 + 1, cfg.epochs as u64);
        }
        if scale != 1.0 {
            for x in w.iter_mut() {
                *x *= scale;
            }
        }
        Ok(last_loss)
    }
}

/// Fisher–Yates with a seeded generator.
pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut impl RngCore) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(i: u32, label: usize) -> Example {
        Example {
            x: SparseVec {
                indices: vec![i],
                values: vec![1.0],
            },
            label,
            subject: u64::from(i),
        }
    }

    #[test]
    fn sgd_learns_a_separable_toy_problem() {
        let data: Vec<Example> = (0..40).map(|i| ex(i, (i % 2) as usize)).collect();
        let mut m = SoftmaxRegression::zeros(2, 64).unwrap();
        m.train_sgd(&data, &SgdConfig::default(), None).unwrap();
        assert_eq!(m.accuracy(&data).unwrap(), 1.0);
    }

    #[test]
    fn out_of_range_feature_is_an_error_not_a_panic() {
        let m = SoftmaxRegression::zeros(2, 8).unwrap();
        assert!(m.probabilities(&ex(9, 0).x).is_err());
    }

    #[test]
    fn top_k_orders_by_probability() {
        assert_eq!(top_k(&[0.1, 0.5, 0.2, 0.2], 2), vec![1, 2]);
    }
}
