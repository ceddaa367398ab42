//! # amble-learn
//!
//! The learning half of amble: everything that turns a person's archived records into model
//! updates, and the arithmetic that says what that cost them in privacy. It sits between the
//! node (which reads training data through the `train.intent` / `train.needs` purposes, holds
//! the budget ledger in its store and sends updates) and the coordinator (which aggregates them);
//! it depends on no other amble crate and does no I/O except reading the evaluation CSVs.
//!
//! Five parts, each a folder whose files are private and whose `mod.rs` says what it offers:
//!
//! - [`model`]: the default features, sentence embeddings from a public pretrained encoder
//!   ([`model::SentenceEncoder`]: all-MiniLM-L6-v2, weights vendored under `data/models/`, run
//!   by this crate's own code with `ndarray`, never downloaded), which let a private classifier
//!   learn from few people; the other features, hashed character and word n-grams identical on
//!   every machine (FNV-1a), Unicode-aware so Chinese needs no segmentation
//!   ([`model::FeatureConfig`]); a multinomial logistic regression over them
//!   ([`model::SoftmaxRegression`]); the intent classifier ([`model::IntentModel`]); the
//!   explainable need predictor ([`model::NeedModel`]); and their self-describing binary form.
//! - [`privacy`]: DP-SGD with **per-subject** clipping — the unit of privacy is one person, so
//!   all of a person's examples are summed before clipping — with Poisson sampling and Gaussian
//!   noise ([`privacy::NoiseSource`], ChaCha20 seeded by the OS; a deterministic source exists
//!   for tests only); RDP of the Poisson-subsampled Gaussian (Mironov–Talwar–Zhang 2019), both
//!   (ε, δ) conversions and the one σ calibration every run uses ([`privacy::calibrate`]),
//!   reproducing published values (`tests/accountant.rs`) and cross-checked against OpenDP and
//!   PLD accounting; the ledger of per-model and per-subject budgets that refuses a run that
//!   would overspend ([`privacy::BudgetLedger`]).
//! - [`federation`]: the protocol's maths — what a node runs each round
//!   ([`federation::local_update`]), the coordinator's checks of each streamed update, the sum
//!   and the robust rules (trimmed mean, median), and the one server step the coordinator and
//!   the simulator both take ([`federation::ServerStep`]).
//! - [`train`]: the production entry points — intent and need training runs, their
//!   configurations and reports, the CSV and event-log readers the CLI calls.
//! - [`experiment`]: never on a production path — synthetic life archives with a planted rule,
//!   and the in-process federation ([`experiment::simulate`]) the experiments measure with.
//!
//! Privacy types carry their rules: [`privacy::Epsilon`] and [`privacy::Delta`] refuse invalid
//! values, and a [`privacy::Guarantee`] prints as a sentence.
//!
//! ```
//! use amble_learn::privacy::{Delta, Epsilon, calibrate, epsilon_for, orders_dp_accounting, Conversion};
//!
//! // The noise for 1,000 steps at sampling rate 1 % that cost at most ε = 8 at δ = 1e-5 …
//! let (target, delta) = (Epsilon::new(8.0)?, Delta::new(1e-5)?);
//! let mechanism = calibrate(target, delta, 0.01, 1_000)?;
//! // … and the accountant agrees that those steps stay within it.
//! let spent = epsilon_for(&mechanism, 1_000, &orders_dp_accounting(), delta, Conversion::Improved)?;
//! assert!(spent.epsilon.value() <= 8.0 && spent.epsilon.value() > 7.99);
//! assert!(Epsilon::new(-1.0).is_err(), "privacy types refuse invalid values");
//! # Ok::<(), amble_learn::LearnError>(())
//! ```

mod error;
pub mod experiment;
pub mod federation;
pub mod model;
pub mod privacy;
pub mod train;

pub use error::{LearnError, Result};
