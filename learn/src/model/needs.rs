//! The need predictor: from a subject's recent events (or intents) and tags (life stage, …),
//! a ranked list of likely next needs, each with the features that drove it.
//!
//! A softmax regression over named, hashed indicator features of the history: the last k
//! events by position, the last two as a pair, every event seen so far, the history length
//! and the tags. Because the model is linear, a prediction's explanation is exact: the logit
//! of need c is Σ_f W[c, f]·x_f + b_c, and each term W[c, f]·x_f is reported under the
//! feature's name.

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::{Example, ProgressFn, SgdConfig, SoftmaxRegression, top_k};
use crate::model::{FORMAT_VERSION, ModelHeader, read_model, write_model};
use crate::model::{SparseVec, hash_name};

/// Model kind string in the serialised header.
pub const NEEDS_KIND: &str = "needs-softmax";

/// Feature settings of the need predictor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedFeatureConfig {
    /// log2 of the hashed feature dimension.
    pub dim_log2: u8,
    /// How many of the most recent events get positional features.
    pub last_k: u8,
}

impl Default for NeedFeatureConfig {
    fn default() -> Self {
        NeedFeatureConfig {
            dim_log2: 14,
            last_k: 3,
        }
    }
}

/// One input to the predictor: a history (oldest first) and tags.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NeedContext {
    /// Events or intents, oldest first.
    pub events: Vec<String>,
    /// Tags such as `stage=student`.
    pub tags: Vec<String>,
}

/// One feature's share in a prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Driver {
    /// Human-readable feature name (`last1=Resolve ticket`, `tag=stage:student`).
    pub feature: String,
    /// Its contribution to the need's logit (weight × value).
    pub contribution: f32,
}

/// A ranked need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeedPrediction {
    /// The need.
    pub need: String,
    /// Model probability.
    pub probability: f32,
    /// The features that pushed it up most, largest contribution first.
    pub drivers: Vec<Driver>,
}

/// The most recent events of a context that its features look at. Older ones are dropped, so
/// a context — and every prefix built for training — is bounded whatever an event log holds
/// (a log without case ids is one case of every event).
pub const MAX_CONTEXT_EVENTS: usize = 64;

/// Names of the features of a context (before hashing); only its last
/// [`MAX_CONTEXT_EVENTS`] events count.
pub fn feature_names(ctx: &NeedContext, last_k: usize) -> Vec<String> {
    let mut f = Vec::new();
    let events = &ctx.events[ctx.events.len().saturating_sub(MAX_CONTEXT_EVENTS)..];
    let n = events.len();
    for k in 1..=last_k.min(n) {
        f.push(format!("last{k}={}", events[n - k]));
    }
    if n >= 2 {
        f.push(format!("pair={}>{}", events[n - 2], events[n - 1]));
    }
    if n == 0 {
        f.push("empty-history".into());
    }
    let mut seen: Vec<&String> = events.iter().collect();
    seen.sort();
    seen.dedup();
    for e in seen {
        f.push(format!("seen={e}"));
    }
    let len_bucket = match n {
        0..=4 => n.to_string(),
        5..=7 => "5-7".into(),
        _ => "8+".into(),
    };
    f.push(format!("len={len_bucket}"));
    for t in &ctx.tags {
        f.push(format!("tag={t}"));
        if let Some(last) = events.last() {
            f.push(format!("tag={t}&last1={last}"));
        }
    }
    f
}

/// The need predictor.
#[derive(Debug, Clone, PartialEq)]
pub struct NeedModel {
    labels: Vec<String>,
    config: NeedFeatureConfig,
    model: SoftmaxRegression,
}

impl NeedModel {
    /// A zero model over `labels`.
    pub fn new(labels: Vec<String>, config: NeedFeatureConfig) -> Result<Self> {
        if !(4..=24).contains(&config.dim_log2) {
            return Err(LearnError::InvalidConfig(format!(
                "need dim_log2 = {} must be in 4..=24",
                config.dim_log2
            )));
        }
        let model = SoftmaxRegression::zeros(labels.len(), 1usize << config.dim_log2)?;
        Ok(NeedModel {
            labels,
            config,
            model,
        })
    }

    /// Labels in class-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The underlying softmax model.
    pub fn softmax(&self) -> &SoftmaxRegression {
        &self.model
    }

    /// Mutable access for trainers (e.g. DP-SGD).
    pub fn softmax_mut(&mut self) -> &mut SoftmaxRegression {
        &mut self.model
    }

    /// Class index of `label`.
    pub fn label_index(&self, label: &str) -> Result<usize> {
        self.labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| LearnError::UnknownLabel(label.to_string()))
    }

    /// Features of a context, with the name behind each index (unit-norm values).
    pub fn featurise(&self, ctx: &NeedContext) -> (SparseVec, Vec<(u32, String)>) {
        let mask = (1u64 << self.config.dim_log2) - 1;
        let names = feature_names(ctx, usize::from(self.config.last_k));
        let named: Vec<(u32, String)> = names
            .into_iter()
            .map(|n| (hash_name(&n, mask), n))
            .collect();
        let mut x = SparseVec::from_pairs(named.iter().map(|(i, _)| (*i, 1.0)).collect());
        x.normalise();
        (x, named)
    }

    /// A training example for `ctx` whose next need is `label`.
    pub fn example(&self, ctx: &NeedContext, label: &str, subject: u64) -> Result<Example> {
        Ok(Example {
            x: self.featurise(ctx).0,
            label: self.label_index(label)?,
            subject,
        })
    }

    /// Non-private training on examples built with [`NeedModel::example`].
    pub fn train(
        &mut self,
        data: &[Example],
        cfg: &SgdConfig,
        progress: ProgressFn<'_>,
    ) -> Result<f64> {
        self.model.train_sgd(data, cfg, progress)
    }

    /// Top-`k` needs with up to `drivers` explaining features each.
    pub fn predict(
        &self,
        ctx: &NeedContext,
        k: usize,
        drivers: usize,
    ) -> Result<Vec<NeedPrediction>> {
        let (x, named) = self.featurise(ctx);
        let p = self.model.probabilities(&x)?;
        let mut out = Vec::new();
        for c in top_k(&p, k) {
            let contrib = self.model.contributions(&x, c)?;
            let mut ds: Vec<Driver> = named
                .iter()
                .filter_map(|(idx, name)| {
                    let v = contrib.iter().find(|(j, _)| j == idx)?.1;
                    // A hash collision merges features; the shared weight is split evenly.
                    let share = named.iter().filter(|(j, _)| j == idx).count() as f32;
                    Some(Driver {
                        feature: name.clone(),
                        contribution: v / share,
                    })
                })
                .collect();
            ds.sort_by(|a, b| b.contribution.total_cmp(&a.contribution));
            ds.truncate(drivers);
            out.push(NeedPrediction {
                need: self.labels[c].clone(),
                probability: p[c],
                drivers: ds,
            });
        }
        Ok(out)
    }

    /// Serialises the model.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = ModelHeader {
            kind: NEEDS_KIND.into(),
            version: FORMAT_VERSION,
            classes: self.model.classes(),
            dim: self.model.dim(),
            labels: self.labels.clone(),
            config: serde_json::to_value(&self.config)
                .map_err(|e| LearnError::ModelFormat(e.to_string()))?,
        };
        write_model(&header, &self.model)
    }

    /// Reads a model written by [`NeedModel::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (header, model) = read_model(bytes, NEEDS_KIND)?;
        let config: NeedFeatureConfig = serde_json::from_value(header.config)
            .map_err(|e| LearnError::ModelFormat(format!("need config: {e}")))?;
        if model.dim() != 1usize << config.dim_log2 {
            return Err(LearnError::ModelFormat(
                "config dimension differs from weights".into(),
            ));
        }
        Ok(NeedModel {
            labels: header.labels,
            config,
            model,
        })
    }
}
