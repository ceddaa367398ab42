//! Connecting to an amble service (node or coordinator) as a client: the client's certificate
//! and key, and the CA that must have signed the service's certificate. Used by the CLI, the
//! node's federation client, the tests and the benchmarks, so there is one way to make an
//! mTLS channel.

use crate::NetError;
use std::path::Path;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

/// A client certificate, its key and the CA to trust, read from PEM files.
pub struct ClientIdentity {
    cert_pem: String,
    key_pem: Zeroizing<String>,
    ca_pem: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentity { key: [redacted], .. }")
    }
}

fn read(path: &Path) -> Result<String, NetError> {
    std::fs::read_to_string(path).map_err(|source| NetError::Io {
        path: path.to_owned(),
        source,
    })
}

impl ClientIdentity {
    /// Reads the three PEM files; refuses a key file others can read.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, NetError> {
        amble_crypto::check_private(key).map_err(|e| NetError::Tls(e.to_string()))?;
        Ok(ClientIdentity {
            cert_pem: read(cert)?,
            key_pem: Zeroizing::new(read(key)?),
            ca_pem: read(ca)?,
        })
    }

    /// An endpoint for `url` (`https://HOST:PORT`) that presents this identity.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, NetError> {
        if !url.starts_with("https://") {
            return Err(NetError::Config(format!(
                "address {url:?} must start with https:// (amble services speak only mutual TLS)"
            )));
        }
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, self.key_pem.as_bytes()));
        Endpoint::from_shared(url.to_owned())
            .map_err(|e| NetError::Config(format!("address {url:?}: {e}")))?
            .tls_config(tls)
            .map_err(|e| NetError::Tls(e.to_string()))
    }

    /// Connects now (TCP and TLS); the node may still refuse the certificate on the first call.
    pub async fn connect(&self, url: &str) -> Result<Channel, NetError> {
        self.endpoint(url)?
            .connect()
            .await
            .map_err(|e| NetError::Tls(format!("cannot connect to {url}: {}", source_chain(&e))))
    }
}

/// An error with its causes, for messages that name the real reason (e.g. a TLS alert).
pub fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !msg.contains(&s) {
            msg.push_str(": ");
            msg.push_str(&s);
        }
        cur = c.source();
    }
    msg
}
