//! # amble-learn
//!
//! The learning half of amble: everything that turns a person's archived records into model
//! updates, and the arithmetic that says what that cost them in privacy. It sits between the
//! node (which reads training data through the `train.intent` / `train.needs` purposes, holds
//! the budget ledger in its store and sends updates) and the coordinator (which aggregates them);
//! it depends on no other amble crate and does no I/O except reading the evaluation CSVs.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`encoder`]: the default features, sentence embeddings from a public pretrained encoder
//!   (all-MiniLM-L6-v2, weights vendored under `data/models/`, run by this crate's own code
//!   with `ndarray`, never downloaded): they let a private classifier learn from few people.
//! - [`featurise`]: the other features, text → hashed character and word n-grams, identical on
//!   every machine (FNV-1a, not a randomly keyed hasher), Unicode-aware so Chinese needs no
//!   segmentation; chosen with `--features hashed`.
//! - [`softmax`] and [`intent`]: a multinomial logistic regression over sparse features
//!   (`ndarray`, classes × dim, sparse updates) and the intent classifier built on it.
//! - [`needs`]: the explainable need predictor (ranked needs, each with the features that
//!   drove it); [`synth`] generates life archives with a planted rule to measure it against.
//! - [`dpsgd`]: DP-SGD with **per-subject** clipping — the unit of privacy is one person, so all
//!   of a person's examples are summed before clipping — Poisson sampling and Gaussian noise
//!   from [`noise`] (ChaCha20 seeded by the OS; a deterministic source exists for tests only).
//! - [`accountant`]: RDP of the Poisson-subsampled Gaussian (Mironov–Talwar–Zhang 2019), both
//!   (ε, δ) conversions, the inverse (σ for a target ε). Reproduces published values; see
//!   `tests/accountant.rs`. [`opendp_ref`] cross-checks it and the sampler against OpenDP.
//! - [`pld`]: privacy loss distribution accounting, tighter than RDP, as a cross-check.
//! - [`ledger`]: per-model and per-subject budgets that compose RDP curves across runs and
//!   refuse a run that would overspend, saying how much is left.
//! - [`federated`]: federated averaging, the maths a node and the coordinator call each round
//!   (and the simulator used by the experiments); [`aggregate`]: the coordinator's checks of
//!   each streamed update and the in-memory sum, plus robust rules (trimmed mean, median).
//! - [`model_io`]: the self-describing binary form of a model; [`eval`]: the entry points
//!   the CLI calls (`train_intent_csv`, `train_needs_helpdesk`).
//!
//! Privacy types carry their rules: [`accountant::Epsilon`] and [`accountant::Delta`] refuse
//! invalid values, and a [`accountant::Guarantee`] prints as a sentence.
#![warn(missing_docs)]

pub mod accountant;
pub mod aggregate;
pub mod dpsgd;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod featurise;
pub mod federated;
pub mod intent;
pub mod ledger;
pub mod model_io;
pub mod needs;
pub mod noise;
#[cfg(feature = "opendp-reference")]
pub mod opendp_ref;
pub mod pld;
pub mod softmax;
pub mod synth;

pub use error::{LearnError, Result};
