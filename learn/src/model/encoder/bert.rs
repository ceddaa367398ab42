//! A BERT encoder's forward pass (inference only), for the sentence encoders amble ships.
//!
//! The sentences of a batch are laid end to end as the rows of one matrix — no padding, so no
//! attention mask — and every dense layer is one `ndarray` matrix product over all of them;
//! only self-attention looks at one sentence at a time. Weights load from safetensors
//! (float32, float16 or bfloat16) and are kept as float32, transposed to `[in, out]`.

use ndarray::{Array1, Array2, ArrayView2, Axis, Slice};
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::error::{LearnError, Result};

/// The fields of a Hugging Face `config.json` the forward pass needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Width of every token state.
    pub hidden_size: usize,
    /// Attention heads per layer (`hidden_size` must divide evenly).
    pub num_attention_heads: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Longest input the position table covers.
    pub max_position_embeddings: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
    /// Activation; only the exact (erf) `gelu` is implemented.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LearnError::ModelFormat(format!("encoder config: {m}")));
        if self.hidden_act != "gelu" {
            return bad(format!(
                "activation {:?} is not supported (only \"gelu\")",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || self.hidden_size == 0
            || self.hidden_size % self.num_attention_heads != 0
        {
            return bad(format!(
                "hidden_size {} is not a multiple of {} heads",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return bad("no layers".into());
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return bad(format!(
                "layer_norm_eps {} out of range",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }
}

struct Linear {
    /// `[in, out]`.
    w: Array2<f32>,
    b: Array1<f32>,
}

impl Linear {
    fn apply(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut y = x.dot(&self.w);
        y += &self.b;
        y
    }
}

struct LayerNorm {
    gamma: Array1<f32>,
    beta: Array1<f32>,
    eps: f32,
}

impl LayerNorm {
    fn apply_in_place(&self, x: &mut Array2<f32>) {
        let (g, b) = (&self.gamma, &self.beta);
        for mut row in x.rows_mut() {
            let n = row.len() as f32;
            let mean = row.sum() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, gi), bi) in row.iter_mut().zip(g).zip(b) {
                *v = (*v - mean) * inv * gi + bi;
            }
        }
    }
}

struct Layer {
    /// Query, key and value projections side by side: `[hidden, 3·hidden]`.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    up: Linear,
    down: Linear,
    out_norm: LayerNorm,
}

/// Loaded weights of a BERT encoder.
pub struct Bert {
    config: BertConfig,
    word: Array2<f32>,
    position: Array2<f32>,
    token_type: Array1<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("config", &self.config)
            .finish()
    }
}

struct Tensors<'a> {
    st: SafeTensors<'a>,
    prefix: &'static str,
}

impl Tensors<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .st
            .tensor(&full)
            .map_err(|e| LearnError::ModelFormat(format!("encoder weights: {full}: {e}")))?;
        if t.shape() != shape {
            return Err(LearnError::ModelFormat(format!(
                "encoder weights: {full} has shape {:?}, the config says {shape:?}",
                t.shape()
            )));
        }
        let data = t.data();
        let out: Vec<f32> = match t.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(LearnError::ModelFormat(format!(
                    "encoder weights: {full} has dtype {other:?} (need F32, F16 or BF16)"
                )));
            }
        };
        if out.iter().any(|v| !v.is_finite()) {
            return Err(LearnError::ModelFormat(format!(
                "encoder weights: {full} holds a non-finite value"
            )));
        }
        Ok(out)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>> {
        Array2::from_shape_vec((rows, cols), self.get(name, &[rows, cols])?)
            .map_err(|e| LearnError::ModelFormat(e.to_string()))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Array1<f32>> {
        Ok(Array1::from(self.get(name, &[len])?))
    }

    /// A PyTorch `Linear` (`weight` is `[out, in]`), stored transposed.
    fn linear(&self, name: &str, inp: usize, out: usize) -> Result<Linear> {
        let w = self.matrix(&format!("{name}.weight"), out, inp)?;
        Ok(Linear {
            w: w.t().as_standard_layout().into_owned(),
            b: self.vector(&format!("{name}.bias"), out)?,
        })
    }

    fn norm(&self, name: &str, len: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: self.vector(&format!("{name}.weight"), len)?,
            beta: self.vector(&format!("{name}.bias"), len)?,
            eps,
        })
    }
}

impl Bert {
    /// Loads weights named as Hugging Face's `BertModel` saves them (with or without the
    /// `bert.` prefix), checking every shape against `config`.
    pub fn load(config: BertConfig, safetensors: &[u8]) -> Result<Self> {
        config.validate()?;
        let st = SafeTensors::deserialize(safetensors)
            .map_err(|e| LearnError::ModelFormat(format!("encoder weights: {e}")))?;
        let prefix = if st.names().iter().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        let t = Tensors { st, prefix };
        let (h, f) = (config.hidden_size, config.intermediate_size);
        let eps = config.layer_norm_eps as f32;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let (q, k, v) = (
                t.linear(&format!("{p}attention.self.query"), h, h)?,
                t.linear(&format!("{p}attention.self.key"), h, h)?,
                t.linear(&format!("{p}attention.self.value"), h, h)?,
            );
            let mut w = Array2::zeros((h, 3 * h));
            let mut b = Array1::zeros(3 * h);
            for (i, part) in [q, k, v].into_iter().enumerate() {
                w.slice_axis_mut(Axis(1), Slice::from(i * h..(i + 1) * h))
                    .assign(&part.w);
                b.slice_axis_mut(Axis(0), Slice::from(i * h..(i + 1) * h))
                    .assign(&part.b);
            }
            layers.push(Layer {
                qkv: Linear { w, b },
                attn_out: t.linear(&format!("{p}attention.output.dense"), h, h)?,
                attn_norm: t.norm(&format!("{p}attention.output.LayerNorm"), h, eps)?,
                up: t.linear(&format!("{p}intermediate.dense"), h, f)?,
                down: t.linear(&format!("{p}output.dense"), f, h)?,
                out_norm: t.norm(&format!("{p}output.LayerNorm"), h, eps)?,
            });
        }
        let types = t.matrix("embeddings.token_type_embeddings.weight", 2, h)?;
        Ok(Bert {
            word: t.matrix("embeddings.word_embeddings.weight", config.vocab_size, h)?,
            position: t.matrix(
                "embeddings.position_embeddings.weight",
                config.max_position_embeddings,
                h,
            )?,
            token_type: types.row(0).to_owned(),
            embed_norm: t.norm("embeddings.LayerNorm", h, eps)?,
            layers,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Mean-pooled, L2-normalised last-layer states of each sentence (token ids, `[CLS]` and
    /// `[SEP]` included; each non-empty and no longer than the position table).
    pub fn embed(&self, sentences: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let h = self.config.hidden_size;
        let mut bounds = Vec::with_capacity(sentences.len() + 1);
        bounds.push(0usize);
        for s in sentences {
            if s.is_empty() || s.len() > self.config.max_position_embeddings {
                return Err(LearnError::InvalidConfig(format!(
                    "a sentence of {} tokens (need 1..={})",
                    s.len(),
                    self.config.max_position_embeddings
                )));
            }
            if let Some(&bad) = s.iter().find(|&&t| t as usize >= self.config.vocab_size) {
                return Err(LearnError::InvalidConfig(format!(
                    "token id {bad} outside the vocabulary"
                )));
            }
            bounds.push(bounds[bounds.len() - 1] + s.len());
        }
        let total = bounds[bounds.len() - 1];
        let mut x = Array2::<f32>::zeros((total, h));
        for (s, ids) in sentences.iter().enumerate() {
            for (p, &id) in ids.iter().enumerate() {
                let mut row = x.row_mut(bounds[s] + p);
                row.assign(&self.word.row(id as usize));
                row += &self.position.row(p);
                row += &self.token_type;
            }
        }
        self.embed_norm.apply_in_place(&mut x);
        for layer in &self.layers {
            x = self.layer(layer, x, &bounds)?;
        }
        Ok(bounds
            .windows(2)
            .map(|w| {
                let mut v = x
                    .slice_axis(Axis(0), Slice::from(w[0]..w[1]))
                    .mean_axis(Axis(0))
                    .map(|m| m.to_vec())
                    .unwrap_or_else(|| vec![0.0; h]);
                let n = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|a| *a /= n);
                v
            })
            .collect())
    }

    fn layer(&self, layer: &Layer, x: Array2<f32>, bounds: &[usize]) -> Result<Array2<f32>> {
        let h = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let qkv = layer.qkv.apply(x.view());
        let not_contiguous = || LearnError::Shape("encoder activations are not contiguous".into());
        let qkv = qkv.as_slice().ok_or_else(not_contiguous)?;
        let mut ctx = Array2::<f32>::zeros((x.nrows(), h));
        let out = ctx.as_slice_mut().ok_or_else(not_contiguous)?;
        let row = 3 * h;
        let mut scores = Vec::new();
        for w in bounds.windows(2) {
            let (r0, len) = (w[0], w[1] - w[0]);
            scores.resize(len, 0.0f32);
            for head in 0..heads {
                let (qo, ko, vo) = (head * d, h + head * d, 2 * h + head * d);
                for i in 0..len {
                    let q = &qkv[(r0 + i) * row + qo..][..d];
                    let mut max = f32::NEG_INFINITY;
                    for (j, sc) in scores.iter_mut().enumerate() {
                        let k = &qkv[(r0 + j) * row + ko..][..d];
                        *sc = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                        max = max.max(*sc);
                    }
                    let mut sum = 0.0;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - max).exp();
                        sum += *sc;
                    }
                    let o = &mut out[(r0 + i) * h + qo..][..d];
                    for (j, sc) in scores.iter().enumerate() {
                        let p = sc / sum;
                        let v = &qkv[(r0 + j) * row + vo..][..d];
                        for (oi, vi) in o.iter_mut().zip(v) {
                            *oi += p * vi;
                        }
                    }
                }
            }
        }
        let mut y = layer.attn_out.apply(ctx.view());
        y += &x;
        layer.attn_norm.apply_in_place(&mut y);
        let mut up = layer.up.apply(y.view());
        up.mapv_inplace(gelu);
        let mut out = layer.down.apply(up.view());
        out += &y;
        layer.out_norm.apply_in_place(&mut out);
        Ok(out)
    }
}

/// The exact GELU, `x·Φ(x) = x/2·(1 + erf(x/√2))`.
#[inline]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as `x·P(x²)/Q(x²)` on [−4, 4] (±1 beyond, to within f32): a rational fit made for
/// amble (reweighted least squares), max abs error 4e-7 in f32 — below the rounding of
/// the half-precision weights it is applied after — and free of branches, so it vectorises.
#[inline]
fn erf(x: f32) -> f32 {
    const P: [f32; 6] = [
        std::f32::consts::FRAC_2_SQRT_PI,
        0.196_209_85,
        0.053_463_23,
        0.004_002_219,
        0.000_288_051_44,
        1.975_681_2e-6,
    ];
    const Q: [f32; 6] = [
        1.0,
        0.507_217_65,
        0.116_461_08,
        0.015_441_54,
        0.001_216_092,
        3.749_021_6e-5,
    ];
    let x = x.clamp(-4.0, 4.0);
    let z = x * x;
    let p = ((((P[5] * z + P[4]) * z + P[3]) * z + P[2]) * z + P[1]) * z + P[0];
    let q = ((((Q[5] * z + Q[4]) * z + Q[3]) * z + Q[2]) * z + Q[1]) * z + Q[0];
    (x * p / q).clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_libm_to_half_a_millionth() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f64 / 10_000.0;
            let e = (f64::from(erf(x as f32)) - libm::erf(x)).abs();
            worst = worst.max(e);
        }
        assert!(worst < 5e-7, "max error {worst}");
    }

    #[test]
    fn gelu_is_odd_around_its_linear_part() {
        for &x in &[-3.0f32, -0.5, 0.0, 0.7, 2.5] {
            assert!((gelu(x) - gelu(-x) - x).abs() < 1e-6);
        }
    }
}
