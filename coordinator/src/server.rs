//! Running the coordinator: mutual TLS 1.3 (see `amble-net`), the `Federation` and `Audit`
//! services, and a ticker that closes rounds at their deadline. The optional `[metrics]`
//! listener ([`amble_net::metrics`], the coordinator's values in [`metrics`]) answers liveness, readiness and Prometheus scrapes over plain HTTP;
//! it carries counts only, never ids, model bytes or keys.

pub mod metrics;

pub use amble_net::metrics::MetricsConfig;

use crate::config::CoordinatorConfig;
use crate::service::FederationService;
use crate::state::Coordinator;
use crate::{CoordinatorError, Result};
use amble_net::{ConnLimits, Shell, server_config};
use amble_proto::v1 as pb;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest gRPC message (a model or update chunk is 1 MiB; headers are small).
const MAX_MESSAGE: usize = 8 << 20;

/// A bound, not yet running coordinator.
pub struct CoordinatorServer {
    coordinator: Arc<Coordinator>,
    listener: TcpListener,
    tls: Arc<amble_net::TlsSlot>,
    tls_files: amble_net::TlsFiles,
    listen: SocketAddr,
    metrics: Option<amble_net::metrics::MetricsEndpoint>,
    /// Request counts, latencies and refusals: the metrics registry, held here only.
    grpc_stats: Arc<amble_net::metrics::GrpcStats>,
}

/// The path of the method whose refusals are counted by class.
const SUBMIT_UPDATE: &str = "/amble.v1.Federation/SubmitUpdate";

impl CoordinatorServer {
    /// Loads the TLS files, opens (or resumes) the state in `data_dir` and binds the address.
    /// The coordinator's federation and id come from its own certificate.
    pub async fn bind(config: CoordinatorConfig) -> Result<CoordinatorServer> {
        let plan = config.plan()?;
        if config.tls.federation_ca.is_some() || config.tls.federation_crl.is_some() {
            return Err(CoordinatorError::Config(
                "tls.federation_ca and tls.federation_crl are for nodes; the coordinator's \
                 tls.client_ca is the federation CA itself"
                    .into(),
            ));
        }
        let tls = server_config(&config.tls)?;
        let cert_pem =
            std::fs::read_to_string(&config.tls.cert).map_err(|source| CoordinatorError::Io {
                path: config.tls.cert.clone(),
                source,
            })?;
        let der = amble_crypto::pki::first_cert_der(&cert_pem)
            .map_err(|e| CoordinatorError::Config(format!("{}: {e}", config.tls.cert.display())))?;
        let me = amble_crypto::pki::identity_of(&der)
            .map_err(|e| CoordinatorError::Config(format!("{}: {e}", config.tls.cert.display())))?;
        if me.role != amble_net::Role::Coordinator {
            return Err(CoordinatorError::Config(format!(
                "{} is a {} certificate; issue one with `amble pki issue NAME --role coordinator`",
                config.tls.cert.display(),
                me.role
            )));
        }
        let data_dir = config.data_dir.clone();
        let (fed, id) = (me.federation.clone(), me.id.clone());
        let coordinator =
            tokio::task::spawn_blocking(move || Coordinator::open(&data_dir, plan, &fed, &id))
                .await
                .map_err(|e| CoordinatorError::Serve(e.to_string()))??;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| CoordinatorError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics = match &config.metrics {
            Some(m) => Some(amble_net::metrics::MetricsEndpoint::bind(m).await.map_err(
                |source| CoordinatorError::Bind {
                    addr: m.listen,
                    source,
                },
            )?),
            None => None,
        };
        Ok(CoordinatorServer {
            coordinator: Arc::new(coordinator),
            listener,
            tls: amble_net::TlsSlot::new(tls),
            tls_files: config.tls.clone(),
            listen: config.listen,
            metrics,
            grpc_stats: Arc::new(metrics::grpc_stats(
                crate::service::METHODS.iter().map(|m| m.path),
                SUBMIT_UPDATE,
            )),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|source| CoordinatorError::Bind {
                addr: self.listen,
                source,
            })
    }

    /// The health, readiness and metrics endpoint's address, if `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|m| m.local_addr().ok())
    }

    /// The round machine this server serves (tests and the lab read its state).
    pub fn coordinator(&self) -> Arc<Coordinator> {
        Arc::clone(&self.coordinator)
    }

    /// Serves until `shutdown` completes, drains ([`amble_net::Shell`]), then flushes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut shell = Shell::start(
            self.listener,
            Arc::clone(&self.tls),
            ConnLimits {
                max_connections: 1024,
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(300),
                max_lifetime: Duration::from_secs(3600),
            },
        );
        let c = Arc::clone(&self.coordinator);
        shell.abort_on_stop(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let c = Arc::clone(&c);
                match tokio::task::spawn_blocking(move || c.tick()).await {
                    Ok(Err(e)) => tracing::error!(error = %e, "closing a round failed"),
                    Err(e) => tracing::error!(error = %e, "round ticker failed"),
                    Ok(Ok(())) => {}
                }
            }
        }));
        if let Some(endpoint) = self.metrics {
            let (c, grpc) = (Arc::clone(&self.coordinator), Arc::clone(&self.grpc_stats));
            shell.metrics(endpoint, move || metrics::render(&c, &grpc));
        }
        let svc = FederationService(Arc::clone(&self.coordinator));
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(amble_net::metrics::GrpcMetricsLayer::new(Arc::clone(
                &self.grpc_stats,
            )))
            .layer(amble_net::AuthLayer::new(
                crate::service::METHODS,
                Arc::clone(&self.coordinator),
            ))
            .add_service(
                pb::federation_server::FederationServer::new(svc.clone())
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                pb::audit_server::AuditServer::new(svc)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            );
        let c = Arc::clone(&self.coordinator);
        shell
            .run(
                |incoming, drain| router.serve_with_incoming_shutdown(incoming, drain),
                shutdown,
                // The coordinator has no storage-fault trip: a failed write is returned to
                // its caller as an error.
                std::future::pending(),
                Duration::ZERO,
                move || c.flush().map_err(|e| e.to_string()),
            )
            .await
            .map_err(|e| CoordinatorError::Serve(e.to_string()))?;
        tracing::info!("coordinator stopped and flushed");
        Ok(())
    }

    /// Loads the TLS files again (certificate, key, CA, CRL) and uses them for new
    /// connections; on any error the old ones stay and the error names the file.
    pub fn reload_tls(&self) -> Result<()> {
        reload(&self.tls, &self.tls_files)
    }

    /// Serves until SIGTERM or Ctrl-C; SIGHUP reloads the TLS files (certificate renewal and a
    /// new CRL without downtime).
    #[cfg(unix)]
    pub async fn run_until_signalled(self) -> Result<()> {
        let signals =
            amble_net::signals::Signals::install().map_err(|source| CoordinatorError::Io {
                path: "<signal handler>".into(),
                source,
            })?;
        let (slot, files) = (Arc::clone(&self.tls), self.tls_files.clone());
        let (shutdown, reloader) = signals.split(move || {
            reload(&slot, &files)
                .map(|()| "the TLS files".to_owned())
                .map_err(|e| e.to_string())
        });
        let result = self.run(shutdown).await;
        reloader.abort();
        result
    }
}

fn reload(slot: &amble_net::TlsSlot, files: &amble_net::TlsFiles) -> Result<()> {
    slot.replace(server_config(files)?);
    Ok(())
}
