//! Experiments, never on a production path: synthetic life archives with a planted rule
//! ([`generate`]) and the in-process federation ([`simulate`]).

mod simulate;
mod synth;

pub use simulate::*;
pub use synth::*;
