//! The intent classifier: [`Featuriser`] + [`SoftmaxRegression`] + label names.

use serde::{Deserialize, Serialize};

use crate::error::{LearnError, Result};
use crate::featurise::{FeatureConfig, Featuriser};
use crate::model_io::{FORMAT_VERSION, ModelHeader, read_model, write_model};
use crate::softmax::{SoftmaxRegression, top_k};

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
        let featuriser = Featuriser::new(features)?;
        let model = SoftmaxRegression::zeros(labels.len(), featuriser.dim())?;
        Ok(IntentModel {
            labels,
            featuriser,
            model,
        })
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
        let p = self.model.probabilities(&self.featuriser.featurise(text))?;
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
