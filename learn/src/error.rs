//! One error enum for the crate; each variant names what went wrong and, where it helps,
//! what to do next.

use std::path::PathBuf;

/// Everything that can go wrong in `amble-learn`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LearnError {
    /// A configuration value is out of range; the message names the field and the allowed range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// Two things that must agree in shape do not (feature dimension, number of classes, …).
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// A label seen at prediction or evaluation time that the model was not trained on.
    #[error("unknown label {0:?}; the model knows only the labels it was trained with")]
    UnknownLabel(String),

    /// There is nothing to train on.
    #[error("no training examples{0}")]
    NoData(&'static str),

    /// A serialised model could not be read back.
    #[error("model bytes are not a valid amble model: {0}")]
    ModelFormat(String),

    /// The privacy accountant could not produce a finite guarantee or calibrate noise.
    #[error("privacy accounting failed: {0}")]
    Accounting(String),

    /// A training run would exceed the privacy budget.
    #[error(
        "privacy budget exceeded for {scope}: run needs epsilon {needed:.4} but only {remaining:.4} of {budget:.4} is left (delta {delta:e}); lower the number of steps or the sampling rate, raise the noise, or raise the configured budget"
    )]
    BudgetExceeded {
        /// What the budget belongs to (`model intent-v1`, `subject …`).
        scope: String,
        /// Epsilon the whole history would reach with this run.
        needed: f64,
        /// Epsilon still available before this run.
        remaining: f64,
        /// The configured budget.
        budget: f64,
        /// The delta all the epsilons are stated at.
        delta: f64,
    },

    /// The operating system could not seed the noise generator.
    #[error("could not seed the noise generator from the operating system: {0}")]
    Entropy(String),

    /// A data file could not be opened or parsed.
    #[error("cannot read {path}: {reason}")]
    Data {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// The OpenDP reference refused an input or failed.
    #[error("OpenDP reference: {0}")]
    OpenDp(String),
}

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, LearnError>;
