//! The node as a long-running service: gRPC (tonic) over mutual TLS 1.3 (rustls, ring).
//!
//! Shape of a connection: the accept loop takes a TCP connection if the connection limit
//! allows, completes the TLS handshake within a deadline — the client's certificate must chain
//! to the configured CA, be within its validity and not be on the CRL, or the handshake fails
//! and the client's first RPC errors — and hands the stream to tonic. Every request then passes
//! a global concurrency limit and the [auth layer](auth), which turns the certificate into
//! an [`Actor`](crate::Actor) and refuses (PERMISSION_DENIED, logged in the audit log) a method
//! the role may not call. Handlers ([`services`]) see only authorised requests.
//!
//! There is no plaintext and no server-only-TLS mode: [`ServeConfig`] has no field that could
//! turn one on. SIGHUP reloads the policy and the TLS files (a bad file keeps the old ones);
//! SIGTERM or Ctrl-C stops accepting, lets requests in flight finish, and flushes the node.
//!
//! The optional `[metrics]` listener ([`amble_net::metrics`]) answers liveness, readiness and Prometheus
//! scrapes over plain HTTP; it carries counts and sizes only, never personal data or ids.

mod auth;
mod config;
mod federation;
mod metrics;
mod portal;
pub mod services;

/// Connecting to a node (or the coordinator) as a client; lives in `amble-net`.
pub mod client {
    pub use amble_net::{ClientIdentity, source_chain};
}

pub use amble_net::TlsFiles;
pub use amble_net::metrics::MetricsConfig;
pub use auth::{METHODS, local_role_may_call, method_access};
pub use config::{Limits, ServeConfig};
pub use federation::FederationConfig;
pub use portal::{PortalConfig, PortalLinks, decode_form};

use crate::{Actor, Node, NodeError};
use amble_net::{AuthLayer, ConnLimits, Ended, NetError, Shell, TlsSlot, server_config};
use amble_proto::v1 as pb;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// How long requests in flight get after a storage fault before the server stops.
const FAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// What stops the service from starting or running; each message says what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// `node.toml` is missing a setting or two settings contradict each other (the message
    /// names them).
    #[error("configuration: {0}")]
    Config(String),
    /// A certificate, key or CRL does not parse or does not fit (the message names the file).
    #[error("TLS: {0}")]
    Tls(String),
    /// A file could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}; is another process using the port?")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The node itself refused or failed (opening the data directory, a reload).
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The gRPC server or its final flush failed.
    #[error("the gRPC server stopped: {0}")]
    Serve(String),
    /// A bound was reached (e.g. too many open portal links for one issuer); try later.
    #[error("too busy: {0}")]
    Busy(String),
    /// A storage fault stopped the node without its final flush.
    #[error(
        "storage fault: {0}. The node stopped serving and must be restarted (its supervisor \
         does this); check the data directory's disk, free space and permissions"
    )]
    StorageFault(String),
}

impl From<NetError> for ServerError {
    fn from(e: NetError) -> Self {
        match e {
            NetError::Config(m) => ServerError::Config(m),
            NetError::Tls(m) => ServerError::Tls(m),
            NetError::Io { path, source } => ServerError::Io { path, source },
            other => ServerError::Config(other.to_string()),
        }
    }
}

/// The node shared by every request. Most operations need `&Node`; key rotation needs the
/// node alone, so it takes the write side.
pub(crate) struct Shared {
    node: RwLock<Node>,
    /// The federation named by the node's own certificate; callers must name the same.
    federation: String,
    /// The largest piece of a chunked document (a projection, an export) in one message.
    chunk_bytes: usize,
}

/// A chunk that fits in one message of at most `max_message_bytes` with the protobuf field's
/// framing, and no bigger than 1 MiB so a slow reader holds little.
fn chunk_bytes(max_message_bytes: usize) -> usize {
    max_message_bytes.saturating_sub(16).clamp(1, 1 << 20)
}

impl Shared {
    pub(crate) fn with_node<T>(&self, f: impl FnOnce(&Node) -> T) -> T {
        match self.node.read() {
            Ok(g) => f(&g),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    pub(crate) fn with_node_mut<T>(&self, f: impl FnOnce(&mut Node) -> T) -> T {
        match self.node.write() {
            Ok(mut g) => f(&mut g),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// A bound, not yet running service.
pub struct Server {
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Arc<TlsSlot>,
    config: ServeConfig,
    portal: Option<portal::Portal>,
    metrics: Option<amble_net::metrics::MetricsEndpoint>,
    /// Request counts and latencies: the metrics registry, held here and nowhere else.
    grpc_stats: Arc<amble_net::metrics::GrpcStats>,
}

/// Reloads the policy and TLS files of a running server (what SIGHUP does).
#[derive(Clone)]
pub struct Reloader {
    shared: Arc<Shared>,
    tls: Arc<TlsSlot>,
    files: TlsFiles,
}

/// What a reload did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// The version of the policy now in force.
    pub policy_version: u64,
}

impl Reloader {
    /// Loads the policy and the TLS files again. Each is checked whole before it replaces the
    /// one in force; on any error the old one stays and the error says which file is wrong.
    pub fn reload(&self) -> Result<ReloadReport, ServerError> {
        let new_tls = server_config(&self.files)?;
        let actor = Actor::local("node:sighup", amble_policy::Role::Admin);
        let policy_version = self.shared.with_node(|n| n.reload_policy(&actor))?;
        self.tls.replace(new_tls);
        Ok(ReloadReport { policy_version })
    }
}

impl Server {
    /// Opens the node's data directory, loads the TLS files and binds the listen address.
    pub async fn bind(config: ServeConfig) -> Result<Server, ServerError> {
        Self::bind_with_clock(config, amble_audit::clock::system()).await
    }

    /// [`Server::bind`] with the clock the node and its portal read (tests move a
    /// [`amble_audit::ManualClock`] to expire links and consent without sleeping).
    pub async fn bind_with_clock(
        config: ServeConfig,
        clock: Arc<dyn amble_audit::Clock>,
    ) -> Result<Server, ServerError> {
        config.check_trust_roots()?;
        let tls = server_config(&config.tls)?;
        let federation = config.own_identity()?.federation;
        let node = Node::open(
            &config.data_dir,
            config.key_file.as_deref(),
            config.policy.as_deref(),
        )?
        .with_clock(clock);
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let shared = Arc::new(Shared {
            node: RwLock::new(node),
            federation,
            chunk_bytes: chunk_bytes(config.limits.max_message_bytes),
        });
        let portal = match &config.portal {
            Some(p) => Some(portal::Portal::bind(p, Arc::clone(&shared)).await?),
            None => None,
        };
        let metrics = match &config.metrics {
            Some(m) => Some(amble_net::metrics::MetricsEndpoint::bind(m).await.map_err(
                |source| ServerError::Bind {
                    addr: m.listen,
                    source,
                },
            )?),
            None => None,
        };
        Ok(Server {
            shared,
            listener,
            tls: TlsSlot::new(tls),
            config,
            portal,
            metrics,
            grpc_stats: Arc::new(amble_net::metrics::GrpcStats::new(
                metrics::PREFIX,
                METHODS.iter().map(|m| m.path),
            )),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: self.config.listen,
                source,
            })
    }

    /// The self-service page's address, if `[portal]` is configured.
    pub fn portal_addr(&self) -> Option<SocketAddr> {
        self.portal.as_ref().and_then(|p| p.local_addr().ok())
    }

    /// Issues one-time links to the self-service page, if `[portal]` is configured.
    pub fn portal_links(&self) -> Option<PortalLinks> {
        self.portal.as_ref().map(|p| p.links.clone())
    }

    /// The health, readiness and metrics endpoint's address, if `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// What SIGHUP runs: reloads the policy and the TLS files while the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            shared: Arc::clone(&self.shared),
            tls: Arc::clone(&self.tls),
            files: self.config.tls.clone(),
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight
    /// finish, and flushes the node. Every acknowledged append was already durable; the
    /// final flush covers the rest (e.g. consent state written without its own flush).
    ///
    /// A storage fault ([`crate::fault`]) also stops it: readiness turns false, new calls are
    /// refused, requests in flight get a few seconds, and `run` returns
    /// [`ServerError::StorageFault`] without the final flush (which would never finish). The
    /// caller should then end the process at once.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        crate::fault::arm();
        let limits = self.config.limits.clone();
        let mut shell = Shell::start(
            self.listener,
            Arc::clone(&self.tls),
            ConnLimits {
                max_connections: limits.max_connections,
                handshake_timeout: limits.handshake_timeout(),
                idle_timeout: Duration::from_secs(limits.idle_timeout_secs.max(1)),
                max_lifetime: Duration::from_secs(limits.max_connection_secs.max(1)),
            },
        );
        if let Some(f) = &self.config.federation {
            let identity = amble_net::ClientIdentity::load(
                &self.config.tls.cert,
                &self.config.tls.key,
                self.config.federation_ca()?,
            )?;
            // The client stops on the same signal; a training run in progress finishes first.
            shell.finish_on_drain(tokio::spawn(federation::run(
                Arc::clone(&self.shared),
                f.clone(),
                identity,
                shell.stopping(),
            )));
        }
        let portal_links = self.portal.as_ref().map(|p| p.links.clone());
        if let Some(p) = self.portal {
            let stopping = shell.stopping();
            shell.abort_on_stop(tokio::spawn(p.run(
                limits.max_connections,
                limits.handshake_timeout(),
                stopping,
            )));
        }
        if let Some(endpoint) = self.metrics {
            let (shared, grpc) = (Arc::clone(&self.shared), Arc::clone(&self.grpc_stats));
            shell.metrics(endpoint, move || metrics::render(&shared, &grpc));
        }
        let m = limits.max_message_bytes;
        let shared = &self.shared;
        let layer = tower::ServiceBuilder::new()
            .layer(amble_net::metrics::GrpcMetricsLayer::new(Arc::clone(
                &self.grpc_stats,
            )))
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests,
            ))
            .layer(AuthLayer::new(METHODS, Arc::clone(shared)))
            .into_inner();
        let router = tonic::transport::Server::builder()
            .timeout(limits.request_timeout())
            .max_concurrent_streams(limits.max_streams_per_connection)
            .concurrency_limit_per_connection(limits.max_streams_per_connection as usize)
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
            .layer(layer)
            .add_service(
                pb::archive_server::ArchiveServer::new(services::ArchiveService(Arc::clone(
                    shared,
                )))
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            )
            .add_service(
                pb::subject_server::SubjectServer::new(services::SubjectService(
                    Arc::clone(shared),
                    portal_links,
                ))
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            )
            .add_service(
                pb::audit_server::AuditServer::new(services::AuditService(Arc::clone(shared)))
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m),
            )
            .add_service(
                pb::admin_server::AdminServer::new(services::AdminService(Arc::clone(shared)))
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m),
            )
            .add_service(
                pb::register_server::RegisterServer::new(services::RegisterService(Arc::clone(
                    shared,
                )))
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            )
            .add_service(
                pb::assist_server::AssistServer::new(services::AssistService(Arc::clone(shared)))
                    .max_decoding_message_size(m)
                    .max_encoding_message_size(m),
            );
        let flush_node = Arc::clone(shared);
        shell
            .run(
                |incoming, drain| router.serve_with_incoming_shutdown(incoming, drain),
                shutdown,
                async { crate::fault::wait().await.to_owned() },
                FAULT_GRACE,
                move || {
                    flush_node
                        .with_node(|n| n.flush())
                        .map_err(|e| e.to_string())
                },
            )
            .await
            .map_err(|e| match e {
                Ended::Abandoned(why) => ServerError::StorageFault(why),
                other => ServerError::Serve(other.to_string()),
            })?;
        tracing::info!("node stopped and flushed");
        Ok(())
    }

    /// Serves until SIGTERM or Ctrl-C; SIGHUP reloads the policy and TLS files.
    #[cfg(unix)]
    pub async fn run_until_signalled(self) -> Result<(), ServerError> {
        let signals = amble_net::signals::Signals::install().map_err(|source| ServerError::Io {
            path: PathBuf::from("<signal handler>"),
            source,
        })?;
        let reloader = self.reloader();
        let (shutdown, reload_task) = signals.split(move || {
            reloader
                .reload()
                .map(|r| format!("policy version {} and the TLS files", r.policy_version))
                .map_err(|e| e.to_string())
        });
        let result = self.run(shutdown).await;
        reload_task.abort();
        result
    }
}
