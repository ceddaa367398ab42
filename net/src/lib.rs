//! amble-net: the one way amble's services speak mutual TLS.
//!
//! Both long-running services — the node (`amble node serve`) and the coordinator
//! (`amble coordinator serve`) — and every client of theirs (the CLI, the node's federation
//! client, the tests and benchmarks) build their TLS here, so there is one place that decides
//! what a connection must prove: TLS 1.3 only, the ring provider, a client certificate that
//! chains to a configured CA, is within its validity and is not on the CRL. No plaintext or
//! server-only mode can be built from this crate. It also holds the one [auth layer](AuthLayer)
//! that turns the verified certificate into an [`Actor`] and checks it against a service's
//! per-method table, by trust root (the organisation's own CA or the federation's) and
//! federation name, the one [health, readiness and metrics endpoint](metrics) with its
//! request counting layer, the one [serve loop](Shell) with its drain and fault handling, and
//! the one way a service waits for its [signals].
//!
//! On the map in `docs/ARCHITECTURE.md` this crate sits beside `proto`, below `node` and
//! `coordinator`.
//!
//! ```
//! use amble_net::{ServiceError, status};
//! use tonic::Code;
//!
//! #[derive(Debug)]
//! enum MyError { NotFound, Disk(std::io::Error) }
//! impl std::fmt::Display for MyError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
//!         match self { MyError::NotFound => write!(f, "no such person"), MyError::Disk(e) => write!(f, "disk: {e}") }
//!     }
//! }
//! // The gRPC code is decided beside the error's definition …
//! impl ServiceError for MyError {
//!     fn code(&self) -> Code {
//!         match self { MyError::NotFound => Code::NotFound, MyError::Disk(_) => Code::Internal }
//!     }
//! }
//! // … and an internal failure never reaches the caller in detail.
//! assert_eq!(status("node", MyError::NotFound).message(), "no such person");
//! let internal = status("node", MyError::Disk(std::io::Error::other("/srv/data: EIO")));
//! assert!(!internal.message().contains("/srv/data"));
//! ```

mod auth;
mod client;
mod incoming;
pub mod metrics;
mod serve;
#[cfg(unix)]
pub mod signals;
mod status;
mod tls;

pub use amble_audit::{Actor, Origin};
pub use amble_crypto::pki::{Role, TrustRoot};
pub use auth::{Auth, AuthLayer, Gatekeeper, MethodAccess, access_of, actor_of, refusal};
pub use client::{ClientIdentity, source_chain};
pub use incoming::{Activity, Conn, ConnLimits, InFlight, PeerInfo, TlsSlot, mtls_incoming};
pub use serve::{Drain, Ended, Incoming, Shell};
pub use status::{ServiceError, status};
pub use tls::{ServerTls, TlsFiles, dangerous, server_config};

use std::path::PathBuf;

/// What keeps a TLS endpoint from being set up; each message names the file or address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A setting is missing or contradicts another (the message names it).
    #[error("configuration: {0}")]
    Config(String),
    /// A certificate, key or CRL does not parse or does not fit (the message names the file).
    #[error("TLS: {0}")]
    Tls(String),
    /// A file could not be read.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
