//! amble-coordinator: where the nodes of several organisations train together.
//!
//! The coordinator runs a federation plan (`coordinator.toml`): a model built from public
//! information, a number of rounds, the bound on every update and what each node runs
//! locally (DP-SGD with per-person clipping, σ calibrated so that all rounds together cost
//! the plan's ε at each node). Each round it hands nodes a task over the `Federation` gRPC
//! service, receives their updates as streams, checks every one (round, version, shape,
//! finite values, L2 norm within the clip bound, one per node per round, no replays), sums
//! them as they arrive — memory O(model), not O(nodes × model) — or aggregates robustly
//! (trimmed mean, median) block by block from its spool, and publishes the next version.
//! It never sees raw data: only clipped, noised updates.
//!
//! It is also the federation's witness: it cosigns each node's audit checkpoint after checking
//! that the node's log only grew, so a node cannot silently rewrite its history. Every model
//! download, update, refusal and cosignature goes into the coordinator's own Merkle log.
//!
//! The round machine ([`state`]) keeps its state behind one storage seam (`store.rs`, sled
//! today) and reads time from an injected clock; a crash at any point resumes the round without counting an
//! update twice or losing one. On the map in `docs/ARCHITECTURE.md` this crate sits beside
//! `node`, above `learn`, `audit` and `net`.
//!
//! ```
//! use amble_coordinator::server::metrics::refusal_class;
//!
//! // A refused update is counted by the class of the reason the coordinator logged.
//! assert_eq!(refusal_class("replay: this exact update was already accepted in round 1"), "replay");
//! assert_eq!(refusal_class("update has 5 values, the model has 4 parameters"), "shape");
//! ```

pub mod config;
mod key;
pub mod server;
pub mod service;
pub mod state;
mod store;

pub use config::{CoordinatorConfig, Plan};
pub use server::CoordinatorServer;
pub use state::{Acceptance, Coordinator, FederationStatus, Phase, RoundSummary, TrainingRecord};

use std::path::PathBuf;

/// Who is calling, as the shared auth layer read it from the verified client certificate.
pub use amble_net::Caller;

/// What went wrong; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] amble_audit::StorageError),
    #[error("audit log: {0}")]
    Audit(#[from] amble_audit::AuditError),
    #[error("note: {0}")]
    Note(#[from] amble_audit::NoteError),
    #[error("model: {0}")]
    Learn(#[from] amble_learn::LearnError),
    #[error("key: {0}")]
    Crypto(#[from] amble_crypto::CryptoError),
    #[error("the coordinator's state is damaged: {0}")]
    Corrupt(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("node {0} has not joined; call Join first")]
    NotMember(String),
    #[error("model version {0} does not exist")]
    NoSuchVersion(u64),
    #[error(transparent)]
    Net(#[from] amble_net::NetError),
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server stopped: {0}")]
    Serve(String),
}

/// The gRPC code of each error, beside its definition (`amble_net::status` sends it).
impl amble_net::ServiceError for CoordinatorError {
    fn code(&self) -> tonic::Code {
        match self {
            CoordinatorError::Refused(_) | CoordinatorError::NotMember(_) => {
                tonic::Code::FailedPrecondition
            }
            CoordinatorError::NoSuchVersion(_) => tonic::Code::NotFound,
            CoordinatorError::Config(_) => tonic::Code::InvalidArgument,
            _ => tonic::Code::Internal,
        }
    }

    /// A refusal and a configuration error say their reason alone.
    fn message(&self) -> String {
        match self {
            CoordinatorError::Refused(m) | CoordinatorError::Config(m) => m.clone(),
            _ => self.to_string(),
        }
    }
}

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_refusal_says_its_reason_and_an_internal_failure_says_nothing_of_the_coordinator() {
        let s = amble_net::status("coordinator", CoordinatorError::Refused("replay: x".into()));
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "replay: x")
        );
        let s = amble_net::status("coordinator", CoordinatorError::NoSuchVersion(9));
        assert_eq!(s.code(), Code::NotFound);
        // Before the shared rule, the coordinator answered "coordinator error: {inner}".
        let s = amble_net::status(
            "coordinator",
            CoordinatorError::Corrupt("spooled block under /srv/amble/db missing".into()),
        );
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("/srv/amble"), "{}", s.message());
    }
}
