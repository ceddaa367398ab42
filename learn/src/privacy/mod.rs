//! What a person's privacy costs and how it is protected: DP-SGD with per-person clipping
//! ([`train_dp_sgd`]), its noise ([`NoiseSource`]), the RDP accountant and the one σ
//! calibration every run uses ([`calibrate`]), PLD accounting as a cross-check, and the budget
//! ledger that refuses a run that would overspend ([`BudgetLedger`]).

mod accountant;
mod dpsgd;
mod ledger;
mod noise;
#[cfg(feature = "opendp-reference")]
mod opendp_ref;
mod pld;

pub use accountant::*;
pub use dpsgd::*;
pub use ledger::*;
pub use noise::*;
#[cfg(feature = "opendp-reference")]
pub use opendp_ref::*;
pub use pld::*;
