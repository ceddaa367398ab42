//! The federation protocol's maths: what a node runs each round ([`local_update`] under
//! [`LocalTraining`], the budget of a whole federation [`FederatedDp`]), the coordinator's
//! checks of each streamed update ([`UpdateCheck`]), the sum and the robust rules
//! ([`WeightedSum`], [`Rule`]), and the one server step both the coordinator and the
//! simulator take ([`ServerStep`]).

mod aggregate;
mod protocol;

pub use aggregate::*;
pub use protocol::*;
