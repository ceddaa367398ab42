//! `coordinator.toml`: what `amble coordinator serve` reads. See
//! `deploy/coordinator.example.toml` for a commented example.

use crate::CoordinatorError;
use amble_learn::federation::Rule;
use amble_learn::federation::{FederatedDp, LocalTraining};
use amble_learn::model::{FeatureConfig, FeatureKind};
use amble_net::TlsFiles;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The whole configuration. As for the node, there is no plaintext switch: `[tls]` is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the coordinator keeps its database and its witness key.
    pub data_dir: PathBuf,
    /// `[tls]`: the coordinator's certificate and key, and as `client_ca` the federation CA
    /// (with its CRL) that node certificates must chain to.
    pub tls: TlsFiles,
    /// `[federation]`: rounds, their size and deadline, the clip bound and the aggregation.
    pub federation: FederationSection,
    /// `[model]`: the model the federation trains.
    pub model: ModelSection,
    /// `[training]`: what each node runs locally per round.
    pub training: TrainingSection,
    /// The optional health, readiness and metrics endpoint (`[metrics]`, plain HTTP: it
    /// exposes no personal data and no identifiers; see [`crate::server::metrics`]).
    #[serde(default)]
    pub metrics: Option<crate::server::MetricsConfig>,
}

/// `[federation]`: how rounds run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Rounds to run; the federation is done after the last one is published.
    pub rounds: u64,
    /// A round closes as soon as this many updates were accepted.
    pub nodes_per_round: usize,
    /// …or at its deadline, if at least this many were (otherwise the deadline moves on).
    pub min_nodes: usize,
    /// Seconds a round stays open for stragglers.
    #[serde(default = "default_deadline")]
    pub round_deadline_secs: u64,
    /// L2 bound on every update (nodes clip to it; the coordinator refuses anything above).
    pub clip_bound: f64,
    /// `{ rule = "mean" }` (FedAvg), `{ rule = "trimmed_mean", trim = 0.1 }` or `{ rule = "median" }`.
    #[serde(default = "default_rule")]
    pub aggregation: Rule,
    /// The aggregate is added to the global model times this (post-processing: no privacy cost).
    #[serde(default = "one")]
    pub server_learning_rate: f32,
    /// The server learning rate decays linearly to this fraction of itself by the last round
    /// (1 = constant). Also post-processing.
    #[serde(default = "one")]
    pub server_final_lr_fraction: f32,
    /// Heavy-ball momentum on the aggregate, in [0, 1) (0 = none). Post-processing too.
    #[serde(default)]
    pub server_momentum: f32,
}

fn default_deadline() -> u64 {
    600
}
fn default_rule() -> Rule {
    Rule::Mean
}
fn one() -> f32 {
    1.0
}

/// `[model]`: the model the federation trains, built from public information only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Only `"intent"` so far.
    pub kind: String,
    /// JSON array of intent labels (e.g. `data/banking77/categories.json`).
    pub labels_file: PathBuf,
    /// What the model reads from a text: `"sentence"` (the built-in public sentence encoder,
    /// the default and by far the most accurate under differential privacy), `"hashed"`
    /// (character and word n-grams, any language) or `"both"`.
    #[serde(default)]
    pub features: FeatureKind,
    /// With `"both"`: the share of each feature vector's squared norm the sentence block gets.
    #[serde(default = "default_share")]
    pub sentence_share: f32,
    /// With `"hashed"` or `"both"`: 2^dim_log2 n-gram buckets.
    #[serde(default = "default_dim")]
    pub dim_log2: u8,
    /// Initial weights from the intents' names (public knowledge, no privacy cost); 0 = zeros.
    #[serde(default)]
    pub label_prior: f32,
}

fn default_dim() -> u8 {
    14
}

fn default_share() -> f32 {
    0.85
}

impl ModelSection {
    /// The featuriser every participant uses.
    pub fn feature_config(&self) -> FeatureConfig {
        self.features.config(self.dim_log2, self.sentence_share)
    }
}

/// `[training]`: what each node runs per round.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrainingSection {
    /// Plain local SGD: no privacy guarantee. Only for public or synthetic data.
    Plain {
        /// Passes over the node's data per round.
        epochs: usize,
        /// Initial local learning rate.
        learning_rate: f32,
        /// Learning rate at local epoch e is `learning_rate / (1 + decay · e)`; 0 (the default)
        /// keeps it constant.
        #[serde(default)]
        decay: f32,
        /// L2 penalty per example step; 0 (the default) disables it.
        #[serde(default)]
        l2: f32,
    },
    /// DP-SGD with per-person clipping at every node; σ is calibrated so that all rounds
    /// together cost `epsilon` at `delta` for each person at each node.
    Dp {
        /// ε per person at each node, over all rounds together.
        epsilon: f64,
        /// δ the ε is stated at (default 1e-5).
        #[serde(default = "default_delta")]
        delta: f64,
        /// Poisson sampling rate of a node's people per DP-SGD step, in (0, 1].
        sample_rate: f64,
        /// DP-SGD steps each node runs per round.
        steps_per_round: u64,
        /// L2 bound on each person's gradient contribution per step (the C of DP-SGD).
        clip_norm: f64,
        /// Local DP-SGD learning rate.
        learning_rate: f32,
        /// Average the iterates of the last fraction of a round's steps (0, the default, keeps the
        /// last one). Post-processing: no privacy cost.
        #[serde(default)]
        average_tail: f64,
        /// The local learning rate decays linearly to this fraction of itself over a round (1, the
        /// default, keeps it constant).
        #[serde(default = "one")]
        final_lr_fraction: f32,
    },
}

fn default_delta() -> f64 {
    1e-5
}

/// The plan every node is told at Join: the resolved, validated configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The model kind (`intent`).
    pub model: String,
    /// The intent labels, in the order of the model's outputs.
    pub labels: Vec<String>,
    /// How every participant turns a text into features.
    pub features: FeatureConfig,
    /// Weight of the initial model built from the labels' names (0 = zero weights).
    pub label_prior: f32,
    /// Rounds to run.
    pub rounds: u64,
    /// A round closes as soon as this many updates were accepted.
    pub nodes_per_round: usize,
    /// At the deadline, a round closes if at least this many updates were accepted.
    pub min_nodes: usize,
    /// Seconds a round stays open (at least 1).
    pub round_deadline_secs: u64,
    /// L2 bound on every update; the coordinator refuses anything above it.
    pub clip_bound: f64,
    /// How accepted updates are combined (mean, trimmed mean or median).
    pub aggregation: Rule,
    /// The aggregate is added to the global model times this.
    pub server_learning_rate: f32,
    /// The server learning rate decays linearly to this fraction of itself by the last round.
    pub server_final_lr_fraction: f32,
    /// Heavy-ball momentum on the aggregate (0 = none; absent in plans stored before it).
    #[serde(default)]
    pub server_momentum: f32,
    /// What a node runs in one round.
    pub local: LocalTraining,
    /// The DP budget, if private: (ε, δ) per person at each node over all rounds.
    pub privacy: Option<FederatedDp>,
}

impl Plan {
    /// The step the coordinator takes on each round's aggregate (the simulator's, too).
    pub fn server_step(&self) -> amble_learn::federation::ServerStep {
        amble_learn::federation::ServerStep {
            learning_rate: self.server_learning_rate,
            final_lr_fraction: self.server_final_lr_fraction,
            momentum: self.server_momentum,
            rounds: self.rounds,
        }
    }
}

impl Plan {
    /// ε per person at each node after all rounds (None if not private).
    pub fn epsilon(&self) -> Option<f64> {
        self.privacy.as_ref().map(|p| p.epsilon)
    }
}

impl CoordinatorConfig {
    /// Reads and checks a `coordinator.toml`; relative paths are taken from its folder.
    pub fn load(path: &Path) -> Result<CoordinatorConfig, CoordinatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| CoordinatorError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut c: CoordinatorConfig = toml::from_str(&text).map_err(|e| {
            CoordinatorError::Config(format!(
                "{} is not a valid coordinator config: {e}; see deploy/coordinator.example.toml",
                path.display()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        if c.data_dir.is_relative() {
            c.data_dir = base.join(&c.data_dir);
        }
        if c.model.labels_file.is_relative() {
            c.model.labels_file = base.join(&c.model.labels_file);
        }
        c.tls.absolutize(base);
        c.plan()?;
        Ok(c)
    }

    /// Resolves the plan: reads the labels, calibrates σ for a DP plan, checks every bound.
    pub fn plan(&self) -> Result<Plan, CoordinatorError> {
        let bad = |m: String| Err(CoordinatorError::Config(m));
        let f = &self.federation;
        if self.model.kind != "intent" {
            return bad(format!(
                "model.kind {:?} is not supported; only \"intent\" is",
                self.model.kind
            ));
        }
        if f.rounds == 0 {
            return bad("federation.rounds must be at least 1".into());
        }
        if f.min_nodes == 0 || f.nodes_per_round < f.min_nodes {
            return bad(format!(
                "federation.min_nodes ({}) must be ≥ 1 and ≤ nodes_per_round ({})",
                f.min_nodes, f.nodes_per_round
            ));
        }
        if !(f.clip_bound > 0.0 && f.clip_bound.is_finite()) {
            return bad("federation.clip_bound must be a positive number".into());
        }
        if !(f.server_learning_rate > 0.0 && f.server_learning_rate.is_finite()) {
            return bad("federation.server_learning_rate must be a positive number".into());
        }
        if !(f.server_final_lr_fraction > 0.0 && f.server_final_lr_fraction <= 1.0) {
            return bad("federation.server_final_lr_fraction must be in (0, 1]".into());
        }
        if !(0.0..1.0).contains(&f.server_momentum) {
            return bad("federation.server_momentum must be in [0, 1)".into());
        }
        f.aggregation
            .validate()
            .map_err(|e| CoordinatorError::Config(format!("federation.aggregation: {e}")))?;
        let text = std::fs::read_to_string(&self.model.labels_file).map_err(|source| {
            CoordinatorError::Io {
                path: self.model.labels_file.clone(),
                source,
            }
        })?;
        let labels: Vec<String> = serde_json::from_str(&text).map_err(|e| {
            CoordinatorError::Config(format!(
                "{}: expected a JSON array of intent labels: {e}",
                self.model.labels_file.display()
            ))
        })?;
        let features = self.model.feature_config();
        features
            .validate()
            .map_err(|e| CoordinatorError::Config(format!("[model]: {e}")))?;
        let (local, privacy) = match &self.training {
            TrainingSection::Plain {
                epochs,
                learning_rate,
                decay,
                l2,
            } => (
                LocalTraining::Plain {
                    epochs: *epochs,
                    learning_rate: *learning_rate,
                    decay: *decay,
                    l2: *l2,
                },
                None,
            ),
            TrainingSection::Dp {
                epsilon,
                delta,
                sample_rate,
                steps_per_round,
                clip_norm,
                learning_rate,
                average_tail,
                final_lr_fraction,
            } => {
                let dp = FederatedDp {
                    epsilon: *epsilon,
                    delta: *delta,
                    rounds: f.rounds,
                    sample_rate: *sample_rate,
                    steps_per_round: *steps_per_round,
                    clip_norm: *clip_norm,
                    learning_rate: *learning_rate,
                    average_tail: *average_tail,
                    final_lr_fraction: *final_lr_fraction,
                    fit_bias: false,
                    threads: 1,
                };
                let round = dp
                    .round_config()
                    .map_err(|e| CoordinatorError::Config(format!("[training]: {e}")))?;
                (LocalTraining::Dp(round), Some(dp))
            }
        };
        let plan = Plan {
            model: self.model.kind.clone(),
            labels,
            features,
            label_prior: self.model.label_prior,
            rounds: f.rounds,
            nodes_per_round: f.nodes_per_round,
            min_nodes: f.min_nodes,
            round_deadline_secs: f.round_deadline_secs.max(1),
            clip_bound: f.clip_bound,
            aggregation: f.aggregation,
            server_learning_rate: f.server_learning_rate,
            server_final_lr_fraction: f.server_final_lr_fraction,
            server_momentum: f.server_momentum,
            local,
            privacy,
        };
        // Building the initial model checks labels and features once, at load time.
        crate::state::initial_model(&plan)?;
        Ok(plan)
    }
}
