//! `node.toml`: what `amble node serve` reads. See `deploy/node.example.toml`.

use super::{ServerError, TlsFiles};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole service configuration. There is deliberately no switch for plaintext or for
/// TLS without client certificates: every field of `[tls]` is required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on, e.g. `0.0.0.0:7443` (port 0 picks a free one).
    pub listen: SocketAddr,
    /// The node's data directory (`amble node init`).
    pub data_dir: PathBuf,
    /// Defaults to `DATA_DIR/node.key`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Defaults to `DATA_DIR/policy.toml`.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// `[tls]`: the node's certificate and key, its organisation's CA and CRL, and in a
    /// federation the federation's CA and CRL.
    pub tls: TlsFiles,
    /// `[limits]`: connections, streams, message sizes and timeouts (safe defaults).
    #[serde(default)]
    pub limits: Limits,
    /// The optional self-service web page (`[portal]`); without it there is none.
    #[serde(default)]
    pub portal: Option<super::portal::PortalConfig>,
    /// The optional federation (`[federation]`): the coordinator to join and this node's
    /// ε budget for the federated model. The node's own certificate is its identity there.
    #[serde(default)]
    pub federation: Option<super::federation::FederationConfig>,
    /// The optional health, readiness and metrics endpoint (`[metrics]`, plain HTTP: it
    /// exposes no personal data and no identifiers; see [`amble_net::metrics`]).
    #[serde(default)]
    pub metrics: Option<amble_net::metrics::MetricsConfig>,
}

/// Bounds that keep a slow or hostile client from exhausting the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Requests in flight across all connections; more wait.
    pub max_concurrent_requests: usize,
    /// Open connections; more are closed at once.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_streams_per_connection: u32,
    /// A request running longer is cancelled with DEADLINE_EXCEEDED.
    pub request_timeout_secs: u64,
    /// A TLS handshake taking longer is dropped.
    pub handshake_timeout_secs: u64,
    /// A connection with no request in flight for this long is closed (HTTP/2 pings do not
    /// count), so idle connections cannot hold every slot under `max_connections`.
    pub idle_timeout_secs: u64,
    /// A connection older than this is closed at its first moment with no request in flight;
    /// clients reconnect.
    pub max_connection_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 256,
            max_connections: 1024,
            max_streams_per_connection: 64,
            request_timeout_secs: 30,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 300,
            max_connection_secs: 3600,
        }
    }
}

impl Limits {
    /// `request_timeout_secs` (at least 1 s).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }

    /// `handshake_timeout_secs` (at least 1 s).
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }

    fn check(&self) -> Result<(), ServerError> {
        let bad = |what: &str| {
            Err(ServerError::Config(format!(
                "limits.{what} must be at least 1"
            )))
        };
        if self.max_message_bytes < 1024 {
            return Err(ServerError::Config(
                "limits.max_message_bytes must be at least 1024".into(),
            ));
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests");
        }
        if self.max_connections == 0 {
            return bad("max_connections");
        }
        if self.max_streams_per_connection == 0 {
            return bad("max_streams_per_connection");
        }
        Ok(())
    }
}

impl ServeConfig {
    /// Who the node's own certificate says it is (its federation is the one callers must name).
    pub fn own_identity(&self) -> Result<amble_crypto::pki::Identity, ServerError> {
        let pem = std::fs::read_to_string(&self.tls.cert).map_err(|source| ServerError::Io {
            path: self.tls.cert.clone(),
            source,
        })?;
        amble_crypto::pki::first_cert_der(&pem)
            .and_then(|der| amble_crypto::pki::identity_of(&der))
            .map_err(|e| {
                ServerError::Tls(format!(
                    "{}: the node's certificate must carry its spiffe:// identity from `amble pki issue`: {e}",
                    self.tls.cert.display()
                ))
            })
    }

    /// The CA that signed the coordinator's certificate: `tls.federation_ca`.
    pub fn federation_ca(&self) -> Result<&Path, ServerError> {
        self.tls.federation_ca.as_deref().ok_or_else(|| {
            ServerError::Config(
                "[federation] needs tls.federation_ca and tls.federation_crl: the federation \
                 CA's certificate and CRL (the coordinator's certificate chains to it)"
                    .into(),
            )
        })
    }

    /// The layout of docs/THREAT_MODEL.md: the node's local root (`tls.client_ca`) is its
    /// organisation's CA, never the federation CA, which signs every member's node; and a
    /// node in a federation names the federation CA separately.
    pub fn check_trust_roots(&self) -> Result<(), ServerError> {
        let pem =
            std::fs::read_to_string(&self.tls.client_ca).map_err(|source| ServerError::Io {
                path: self.tls.client_ca.clone(),
                source,
            })?;
        let kind = amble_crypto::pki::first_cert_der(&pem)
            .and_then(|der| amble_crypto::pki::ca_kind_of(&der))
            .map_err(|e| ServerError::Tls(format!("{}: {e}", self.tls.client_ca.display())))?;
        if kind == Some(amble_crypto::pki::CaKind::Federation) {
            return Err(ServerError::Config(format!(
                "tls.client_ca ({}) is a federation CA: it signs every member's certificates, so \
                 other organisations could reach this node's archive. Create your \
                 organisation's CA (`amble pki init --dir org-pki --federation FED \
                 --organisation ORG`), issue your apps, agents, admins and auditors from it, \
                 set tls.client_ca to it, and name the federation CA as tls.federation_ca",
                self.tls.client_ca.display()
            )));
        }
        if self.federation.is_some() {
            self.federation_ca()?;
        }
        Ok(())
    }

    /// Reads and checks a `node.toml`; relative paths are taken from the file's folder.
    pub fn load(path: &Path) -> Result<ServeConfig, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mut c: ServeConfig = toml::from_str(&text).map_err(|e| {
            ServerError::Config(format!(
                "{} is not a valid node config: {e}; see deploy/node.example.toml",
                path.display()
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        abs(&mut c.data_dir);
        if let Some(k) = c.key_file.as_mut() {
            abs(k);
        }
        if let Some(p) = c.policy.as_mut() {
            abs(p);
        }
        c.tls.absolutize(base);
        if let Some(p) = c.portal.as_mut() {
            p.absolutize(base);
        }
        c.limits.check()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ServeConfig, ServerError> {
        let dir = tempfile::tempdir().map_err(|e| ServerError::Config(e.to_string()))?;
        let p = dir.path().join("node.toml");
        std::fs::write(&p, text).map_err(|e| ServerError::Config(e.to_string()))?;
        ServeConfig::load(&p)
    }

    const GOOD: &str = r#"listen = "127.0.0.1:0"
data_dir = "data"
[tls]
cert = "n.pem"
key = "n.key"
client_ca = "ca.pem"
crl = "crl.pem"
"#;

    #[test]
    fn relative_paths_are_taken_from_the_config_folder_and_limits_default() {
        let c = load(GOOD).unwrap();
        assert!(c.data_dir.is_absolute() && c.data_dir.ends_with("data"));
        assert!(c.tls.crl.is_absolute());
        assert_eq!(
            c.limits.max_message_bytes,
            Limits::default().max_message_bytes
        );
    }

    #[test]
    fn there_is_no_way_to_configure_plaintext_or_tls_without_client_certificates() {
        let no_ca = GOOD.replace("client_ca = \"ca.pem\"\n", "");
        assert!(matches!(load(&no_ca), Err(ServerError::Config(_))));
        let no_crl = GOOD.replace("crl = \"crl.pem\"\n", "");
        assert!(matches!(load(&no_crl), Err(ServerError::Config(_))));
        let plaintext = GOOD.replace("[tls]", "plaintext = true\n[tls]");
        assert!(matches!(load(&plaintext), Err(ServerError::Config(_))));
        let optional = GOOD.replace("[tls]", "[tls]\nclient_auth = \"optional\"");
        assert!(matches!(load(&optional), Err(ServerError::Config(_))));
    }

    #[test]
    fn the_portal_is_off_without_its_section_and_its_paths_are_resolved() {
        assert!(load(GOOD).unwrap().portal.is_none());
        let with = format!(
            "{GOOD}[portal]\nlisten = \"127.0.0.1:0\"\ncert = \"p.pem\"\nkey = \"p.key\"\n"
        );
        let p = load(&with).unwrap().portal.unwrap();
        assert!(p.cert.is_absolute() && p.key.is_absolute());
        assert_eq!(p.link_ttl_secs, 900);
        let plaintext = format!("{with}plaintext = true\n");
        assert!(matches!(load(&plaintext), Err(ServerError::Config(_))));
    }

    #[test]
    fn the_example_config_parses_with_its_federation_section() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/node.example.toml"),
        )
        .unwrap();
        let c = load(&text).unwrap();
        let f = c.federation.unwrap();
        assert!(f.coordinator.starts_with("https://"));
        assert!((f.epsilon_budget - 8.0).abs() < 1e-12);
        assert!(
            load(&text.replace("epsilon_budget = 8.0", "epsilon_budget = -1.0"))
                .unwrap()
                .federation
                .unwrap()
                .budget()
                .is_err()
        );
        assert!(
            load(&format!(
                "{GOOD}[federation]\ncoordinator = \"https://c:1\"\n"
            ))
            .is_err()
        );
    }

    #[test]
    fn metrics_are_off_without_their_section_and_take_only_an_address() {
        assert!(load(GOOD).unwrap().metrics.is_none());
        let with = format!("{GOOD}[metrics]\nlisten = \"127.0.0.1:9090\"\n");
        let m = load(&with).unwrap().metrics.unwrap();
        assert_eq!(m.listen.port(), 9090);
        let extra = format!("{with}tls = false\n");
        assert!(matches!(load(&extra), Err(ServerError::Config(_))));
    }

    #[test]
    fn absurd_limits_are_refused_with_the_field_named() {
        let bad = format!("{GOOD}[limits]\nmax_concurrent_requests = 0\n");
        let err = load(&bad).unwrap_err().to_string();
        assert!(err.contains("max_concurrent_requests"), "{err}");
    }
}
