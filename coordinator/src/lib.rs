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
pub use amble_net::Actor;

/// What went wrong; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// `coordinator.toml` is invalid, the plan differs from the one the data directory was started
    /// with, or the TLS certificate is not a coordinator's. Holds what is wrong; it is sent to the
    /// caller as is.
    #[error("configuration: {0}")]
    Config(String),
    /// A file the coordinator reads or writes (its config, certificate, key file, data
    /// directory) could not be read or written, or signal handlers could not be installed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator's database failed to read, write or flush.
    #[error("storage: {0}")]
    Store(#[from] amble_audit::StorageError),
    /// Appending to or reading the coordinator's own audit log failed.
    #[error("audit log: {0}")]
    Audit(#[from] amble_audit::AuditError),
    /// The coordinator's witness key or a checkpoint note could not be built or signed.
    #[error("note: {0}")]
    Note(#[from] amble_audit::NoteError),
    /// Building, aggregating or serialising the model failed.
    #[error("model: {0}")]
    Learn(#[from] amble_learn::LearnError),
    /// The coordinator's key file is readable by group or others, or its key could not be
    /// loaded or generated.
    #[error("key: {0}")]
    Crypto(#[from] amble_crypto::CryptoError),
    /// Stored state contradicts itself (a missing model version, a spooled update that does not
    /// parse, a pinned key that no longer parses). Holds what was found.
    #[error("the coordinator's state is damaged: {0}")]
    Corrupt(String),
    /// A node's request was refused: a round that is not open, a second upload, an update that
    /// fails a check, a log key that differs from the pinned one, a checkpoint that does not
    /// extend the last one cosigned. The refusal is in the audit log; holds the reason, which is
    /// sent to the node as is.
    #[error("refused: {0}")]
    Refused(String),
    /// A node that has not joined the federation made a call that needs membership. Holds the
    /// node's id.
    #[error("node {0} has not joined; call Join first")]
    NotMember(String),
    /// A model version that was never published was asked for. Holds the version.
    #[error("model version {0} does not exist")]
    NoSuchVersion(u64),
    /// The TLS setup failed: a certificate, key or CRL is missing, unreadable or does not fit.
    #[error(transparent)]
    Net(#[from] amble_net::NetError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server stopped with an error. Holds its message.
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

/// The coordinator's result type: [`CoordinatorError`] unless another error is named.
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
