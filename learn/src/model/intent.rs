//! The intent classifier: [`Featuriser`] + [`SoftmaxRegression`] + label names.

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::model::{FORMAT_VERSION, ModelHeader, read_model, write_model};
use crate::model::{FeatureConfig, Featuriser, SparseVec};
use crate::model::{SoftmaxRegression, top_k};

/// An intent label as a phrase: `card_arrival` → "card arrival".
pub fn label_phrase(label: &str) -> String {
    label.replace('_', " ")
}

/// The mean raw sentence embedding of the label phrases: the public centre of the sentence block.
fn label_name_center(featuriser: &Featuriser, labels: &[String]) -> Result<Vec<f32>> {
    let Some(encoder) = featuriser.encoder() else {
        return Err(LearnError::InvalidConfig("no sentence encoder".into()));
    };
    let phrases: Vec<String> = labels.iter().map(|l| label_phrase(l)).collect();
    let texts: Vec<&str> = phrases.iter().map(String::as_str).collect();
    let embeddings = encoder.embed(&texts, 1, None)?;
    let mut center = vec![0.0f32; encoder.dim()];
    for e in &embeddings {
        for (c, v) in center.iter_mut().zip(e) {
            *c += v;
        }
    }
    let n = embeddings.len().max(1) as f32;
    center.iter_mut().for_each(|c| *c /= n);
    Ok(center)
}

/// Model kind string in the serialised header.
pub const INTENT_KIND: &str = "intent-softmax";

/// One ranked intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntentScore {
    /// Intent label.
    pub label: String,
    /// Model probability.
    pub probability: f32,
}

/// A text → intent classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentModel {
    labels: Vec<String>,
    featuriser: Featuriser,
    model: SoftmaxRegression,
}

impl IntentModel {
    /// A zero model over `labels` (distinct, at least two).
    pub fn new(labels: Vec<String>, features: FeatureConfig) -> Result<Self> {
        let mut sorted = labels.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != labels.len() {
            return Err(LearnError::InvalidConfig(
                "intent labels must be distinct".into(),
            ));
        }
        let mut featuriser = Featuriser::new(features)?;
        let needs_center = featuriser
            .config()
            .sentence
            .as_ref()
            .is_some_and(|s| s.center.is_empty());
        if needs_center {
            featuriser.set_center(label_name_center(&featuriser, &labels)?)?;
        }
        let model = SoftmaxRegression::zeros(labels.len(), featuriser.dim())?;
        Ok(IntentModel {
            labels,
            featuriser,
            model,
        })
    }

    /// The version-0 model of a federation: zeros plus, if `label_prior > 0`, the public
    /// label-name prior (see [`IntentModel::add_label_name_prior`]). Built only from public
    /// inputs, so every participant can rebuild it and check it.
    pub fn initial(labels: Vec<String>, features: FeatureConfig, label_prior: f32) -> Result<Self> {
        if !(label_prior >= 0.0 && label_prior.is_finite()) {
            return Err(LearnError::InvalidConfig(format!(
                "label_prior must be finite and ≥ 0, got {label_prior}"
            )));
        }
        let mut model = IntentModel::new(labels, features)?;
        if label_prior > 0.0 {
            model.add_label_name_prior(label_prior)?;
        }
        Ok(model)
    }

    /// Adds `beta ×` the features of each intent's *name* (`card_arrival` → "card arrival") to
    /// that intent's weights: public knowledge, so it costs no privacy.
    pub fn add_label_name_prior(&mut self, beta: f32) -> Result<()> {
        let phrases: Vec<String> = self.labels.iter().map(|l| label_phrase(l)).collect();
        let texts: Vec<&str> = phrases.iter().map(String::as_str).collect();
        let names: Vec<SparseVec> = self.featuriser.featurise_all(&texts, None)?;
        let k = names.len();
        let (w, _) = self.model.parts_mut()?;
        for (c, x) in names.iter().enumerate() {
            for (&j, &v) in x.indices.iter().zip(&x.values) {
                if let Some(slot) = w.get_mut(j as usize * k + c) {
                    *slot += beta * v;
                }
            }
        }
        Ok(())
    }

    /// Number of parameters (see [`SoftmaxRegression::flat_len`]).
    pub fn flat_len(&self) -> usize {
        self.model.flat_len()
    }

    /// Every parameter as one vector (see [`SoftmaxRegression::to_flat`]).
    pub fn to_flat(&self) -> Vec<f32> {
        self.model.to_flat()
    }

    /// `θ ← θ + scale · delta` (see [`SoftmaxRegression::add_flat`]).
    pub fn add_flat(&mut self, delta: &[f32], scale: f32) -> Result<()> {
        self.model.add_flat(delta, scale)
    }

    /// Labels in class-index order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Class index of `label`.
    pub fn label_index(&self, label: &str) -> Result<usize> {
        self.labels
            .iter()
            .position(|l| l == label)
            .ok_or_else(|| LearnError::UnknownLabel(label.to_string()))
    }

    /// The featuriser (its configuration is part of the model).
    pub fn featuriser(&self) -> &Featuriser {
        &self.featuriser
    }

    /// The underlying softmax model.
    pub fn softmax(&self) -> &SoftmaxRegression {
        &self.model
    }

    /// Mutable access for trainers.
    pub fn softmax_mut(&mut self) -> &mut SoftmaxRegression {
        &mut self.model
    }

    /// The `k` most likely intents for `text`, most likely first.
    pub fn predict(&self, text: &str, k: usize) -> Result<Vec<IntentScore>> {
        let p = self
            .model
            .probabilities(&self.featuriser.featurise(text)?)?;
        Ok(top_k(&p, k)
            .into_iter()
            .map(|i| IntentScore {
                label: self.labels[i].clone(),
                probability: p[i],
            })
            .collect())
    }

    /// Serialises the model (header with kind, version, shapes, labels, featuriser config).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let header = ModelHeader {
            kind: INTENT_KIND.into(),
            version: FORMAT_VERSION,
            classes: self.model.classes(),
            dim: self.model.dim(),
            labels: self.labels.clone(),
            config: serde_json::to_value(self.featuriser.config())
                .map_err(|e| LearnError::ModelFormat(e.to_string()))?,
        };
        write_model(&header, &self.model)
    }

    /// Reads a model written by [`IntentModel::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (header, model) = read_model(bytes, INTENT_KIND)?;
        let features: FeatureConfig = serde_json::from_value(header.config)
            .map_err(|e| LearnError::ModelFormat(format!("featuriser config: {e}")))?;
        let featuriser = Featuriser::new(features)?;
        if featuriser.dim() != model.dim() {
            return Err(LearnError::ModelFormat(
                "featuriser dimension differs from the weights".into(),
            ));
        }
        Ok(IntentModel {
            labels: header.labels,
            featuriser,
            model,
        })
    }
}
