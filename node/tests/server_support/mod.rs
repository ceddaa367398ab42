//! A node service on 127.0.0.1 with an ephemeral port, its own PKI and a few client
//! identities, started and stopped inside one test.
//!
//! The PKI has the layout of docs/THREAT_MODEL.md: the node's organisation CA (`pki/`) signs
//! the node and its local clients ([`CLIENTS`]); a federation CA (`fed-pki/`) signs another
//! organisation's node, the coordinator and a federation admin ([`FEDERATION_CLIENTS`]), and
//! the node names it as `tls.federation_ca`.
#![allow(dead_code)]

use amble_crypto::pki::{Ca, IssueRequest};
use amble_node::Node;
use amble_node::server::client::ClientIdentity;
use amble_node::server::{
    Limits, MetricsConfig, PortalConfig, PortalLinks, Reloader, ServeConfig, Server, ServerError,
    TlsFiles,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const MAX_MESSAGE: usize = 64 * 1024;

/// Clients every fixture has: name → role.
pub const CLIENTS: [(&str, &str); 6] = [
    ("crm", "app"),
    ("dpo", "privacy-officer"),
    ("auditor-1", "auditor"),
    ("portal", "subject-portal"),
    ("ops", "admin"),
    ("desk", "agent"),
];

/// Federation participants the fixture has: name → role (all from the federation CA).
pub const FEDERATION_CLIENTS: [(&str, &str); 3] = [
    ("node-b", "node"),
    ("coordinator", "coordinator"),
    ("fed-ops", "admin"),
];

pub fn fed_pki_dir(tmp: &TempDir) -> PathBuf {
    tmp.path().join("fed-pki")
}

/// The fixture node's clock: the system's, plus however far a test has moved it ahead (so time
/// still flows for TLS and the audit log, and a test skips ahead instead of sleeping).
#[derive(Clone, Default)]
pub struct AheadClock(Arc<std::sync::atomic::AtomicU64>);

impl AheadClock {
    pub fn advance(&self, by: std::time::Duration) {
        self.0
            .fetch_add(by.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }
}

impl amble_audit::Clock for AheadClock {
    fn now_ms(&self) -> u64 {
        amble_audit::SystemClock.now_ms() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub struct Fixture {
    pub tmp: TempDir,
    /// The node's clock; `clock.advance(…)` moves the node's time forward.
    pub clock: AheadClock,
    pub ca: Ca,
    pub fed_ca: Ca,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub reloader: Reloader,
    /// The self-service page's address and link issuer (only from `start_with_portal`).
    pub portal: Option<(SocketAddr, PortalLinks)>,
    /// The health, readiness and metrics endpoint (plain HTTP on 127.0.0.1).
    pub metrics: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

pub fn pki_dir(tmp: &TempDir) -> PathBuf {
    tmp.path().join("pki")
}

impl Fixture {
    pub async fn start() -> Fixture {
        Fixture::start_with(None, Fixture::limits()).await
    }

    /// The limits every fixture has unless a test sets its own.
    pub fn limits() -> Limits {
        Limits {
            max_message_bytes: MAX_MESSAGE,
            ..Limits::default()
        }
    }

    /// A fixture with these limits.
    pub async fn start_with_limits(limits: Limits) -> Fixture {
        Fixture::start_with(None, limits).await
    }

    /// Also serves the self-service page on 127.0.0.1 with the node's certificate.
    pub async fn start_with_portal() -> Fixture {
        Fixture::start_with(Some(900), Fixture::limits()).await
    }

    /// As `start_with_portal`, with links that expire after `link_ttl_secs`.
    pub async fn start_with_portal_ttl(link_ttl_secs: u64) -> Fixture {
        Fixture::start_with(Some(link_ttl_secs), Fixture::limits()).await
    }

    async fn start_with(portal_link_ttl: Option<u64>, limits: Limits) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let ca = Ca::init_organisation(&pki_dir(&tmp), "test-fed", "org-1").unwrap();
        let fed_ca = Ca::init(&fed_pki_dir(&tmp), "test-fed").unwrap();
        for (name, role) in FEDERATION_CLIENTS {
            fed_ca.issue(&IssueRequest::new(name, role)).unwrap();
        }
        let mut node_req = IssueRequest::new("node-1", "node");
        node_req.ips.push("127.0.0.1".parse().unwrap());
        node_req.dns.push("localhost".into());
        ca.issue(&node_req).unwrap();
        for (name, role) in CLIENTS {
            ca.issue(&IssueRequest::new(name, role)).unwrap();
        }
        let data_dir = tmp.path().join("data");
        drop(Node::init(&data_dir, None).unwrap());
        let certs = pki_dir(&tmp).join("certs");
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.clone(),
            key_file: None,
            policy: None,
            tls: TlsFiles {
                cert: certs.join("node-1.pem"),
                key: certs.join("node-1.key"),
                client_ca: ca.cert_path(),
                crl: ca.crl_path(),
                federation_ca: Some(fed_ca.cert_path()),
                federation_crl: Some(fed_ca.crl_path()),
            },
            limits,
            portal: portal_link_ttl.map(|link_ttl_secs| PortalConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                cert: certs.join("node-1.pem"),
                key: certs.join("node-1.key"),
                link_ttl_secs,
                session_ttl_secs: 1800,
            }),
            federation: None,
            metrics: Some(MetricsConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
            }),
        };
        // sled's background thread may hold the directory lock a moment after `init`'s
        // handle is dropped; wait for it rather than fail.
        let clock = AheadClock::default();
        let mut tries = 0;
        let server = loop {
            match Server::bind_with_clock(config.clone(), Arc::new(clock.clone())).await {
                Ok(s) => break s,
                Err(ServerError::Node(e)) if tries < 100 && e.to_string().contains("lock") => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot start the node: {e}"),
            }
        };
        let addr = server.local_addr().unwrap();
        let reloader = server.reloader();
        let metrics = server.metrics_addr().unwrap();
        let portal = server.portal_addr().zip(server.portal_links());
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        Fixture {
            tmp,
            clock,
            ca,
            fed_ca,
            addr,
            data_dir,
            reloader,
            portal,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn identity(&self, name: &str) -> ClientIdentity {
        let certs = pki_dir(&self.tmp).join("certs");
        ClientIdentity::load(
            &certs.join(format!("{name}.pem")),
            &certs.join(format!("{name}.key")),
            &self.ca.cert_path(),
        )
        .unwrap()
    }

    /// A federation participant's identity (see [`FEDERATION_CLIENTS`]).
    pub fn fed_identity(&self, name: &str) -> ClientIdentity {
        let certs = fed_pki_dir(&self.tmp).join("certs");
        ClientIdentity::load(
            &certs.join(format!("{name}.pem")),
            &certs.join(format!("{name}.key")),
            &self.ca.cert_path(),
        )
        .unwrap()
    }

    /// A channel of a federation participant, connecting on first use.
    pub fn fed_channel(&self, name: &str) -> Channel {
        self.fed_identity(name)
            .endpoint(&self.url())
            .unwrap()
            .connect_lazy()
    }

    /// A channel that connects on first use, so a refused certificate shows on the first RPC.
    pub fn channel(&self, name: &str) -> Channel {
        self.identity(name)
            .endpoint(&self.url())
            .unwrap()
            .connect_lazy()
    }

    /// `GET path` on the metrics endpoint: the status code and the body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path).await
    }

    /// Stops the server and waits until it has flushed.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

/// A one-shot HTTP/1.0 GET (the connection closes after the answer): status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// A portal answer: status, headers and the body as text.
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// A TLS 1.3 connection to the portal, trusting only the test CA.
pub async fn portal_tls(fx: &Fixture) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let (addr, _) = fx.portal.as_ref().unwrap();
    let ca = std::fs::read(fx.ca.cert_path()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTPS/1.1 request to the portal, trusting only the test CA.
pub async fn portal_request(
    fx: &Fixture,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Reply {
    portal_request_with(fx, method, path, cookie, form, &[]).await
}

/// [`portal_request`] with further request headers (`Accept-Language`…).
pub async fn portal_request_with(
    fx: &Fixture,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    headers: &[(&str, &str)],
) -> Reply {
    let (addr, _) = fx.portal.as_ref().unwrap();
    let tls = portal_tls(fx).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, format!("127.0.0.1:{}", addr.port()));
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("__Host-amble_portal={c}"));
    }
    if form.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = Full::new(Bytes::from(form.unwrap_or("").to_owned()));
    let resp = sender.send_request(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}
