//! A service's TLS: 1.3 only, ring provider, client certificates required and checked against
//! the configured CAs and their CRLs. No other mode can be built from this module.
//!
//! A listener trusts one or two roots. `client_ca` is its **local** root: the organisation's
//! CA at a node, the federation CA at the coordinator (whose own principals are the
//! federation's). A node in a federation also names `federation_ca`: certificates from it
//! pass the handshake but are marked [`TrustRoot::Federation`], and the auth layer lets them
//! reach only the federation's methods.

use crate::NetError;
use amble_crypto::pki::TrustRoot;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A service's certificate and key, and what it accepts from clients. Every field is
/// required: there is no way to leave out client authentication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The service's certificate chain (PEM).
    pub cert: PathBuf,
    /// The service's private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The CA whose certificates clients must present (PEM).
    pub client_ca: PathBuf,
    /// The CA's revocation list (PEM), as written by `amble pki revoke`.
    pub crl: PathBuf,
    /// A second root whose certificates reach only federation methods (a node in a
    /// federation: the federation CA, which also signed the coordinator's certificate).
    #[serde(default)]
    pub federation_ca: Option<PathBuf>,
    /// The federation CA's revocation list; required with `federation_ca`.
    #[serde(default)]
    pub federation_crl: Option<PathBuf>,
}

impl TlsFiles {
    /// Resolves relative paths against `base` (the folder of the config file).
    pub fn absolutize(&mut self, base: &Path) {
        for p in [
            &mut self.cert,
            &mut self.key,
            &mut self.client_ca,
            &mut self.crl,
        ]
        .into_iter()
        .chain(self.federation_ca.as_mut())
        .chain(self.federation_crl.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    std::fs::read(path).map_err(|source| NetError::Io {
        path: path.to_owned(),
        source,
    })
}

fn pem_err(path: &Path, what: &str, e: impl std::fmt::Display) -> NetError {
    NetError::Tls(format!("{}: cannot read {what}: {e}", path.display()))
}

/// The service's own certificate chain and private key (the key file must be private to the
/// service's account).
fn own_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), NetError> {
    amble_crypto::check_private(key).map_err(|e| NetError::Tls(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert, "certificates", e))?;
    if certs.is_empty() {
        return Err(NetError::Tls(format!(
            "{} holds no certificate; pass the service's certificate from `amble pki issue`",
            cert.display()
        )));
    }
    let key_der =
        PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_err(key, "a private key", e))?;
    Ok((certs, key_der))
}

/// The one exception to mutual TLS, kept apart the way rustls keeps `dangerous()`: listeners
/// that people's browsers reach, which cannot present a client certificate.
pub mod dangerous {
    use super::*;

    /// TLS 1.3 with the ring provider and the service's own certificate, **without client
    /// authentication**, speaking HTTP/1.1: only for the self-service page, where the person
    /// is authenticated by a single-use link instead. Nothing else may use it.
    pub fn browser_server_config(
        cert: &Path,
        key: &Path,
    ) -> Result<Arc<rustls::ServerConfig>, NetError> {
        let (certs, key_der) = own_identity(cert, key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| NetError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| NetError::Tls(format!("{}: {e}", key.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A server's TLS configuration and what it needs to tell a connection's trust root.
pub struct ServerTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// The handshake's verifier (every root, every CRL), kept to re-check open connections.
    verifier: Arc<dyn ClientCertVerifier>,
    /// Verifies against the local root alone; `None` when there is no second root.
    local: Option<Arc<dyn ClientCertVerifier>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("two_roots", &self.local.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Whether this configuration still accepts `chain` (after a reload: a new CRL, a CA
    /// removed). Open connections whose chain it refuses are closed.
    pub fn still_accepts(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, rest)) = chain.split_first() else {
            return false;
        };
        self.verifier
            .verify_client_cert(leaf, rest, UnixTime::now())
            .is_ok()
    }

    /// The root of a chain the handshake already verified against the union of the roots.
    /// Verified again against the local root alone: a chain only the federation root accepts
    /// is the federation's, whatever names its certificates carry.
    pub fn root_of(&self, chain: &[CertificateDer<'static>]) -> TrustRoot {
        let Some(local) = &self.local else {
            return TrustRoot::Local;
        };
        let Some((leaf, rest)) = chain.split_first() else {
            return TrustRoot::Federation;
        };
        match local.verify_client_cert(leaf, rest, UnixTime::now()) {
            Ok(_) => TrustRoot::Local,
            Err(_) => TrustRoot::Federation,
        }
    }
}

fn load_cas(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(path, "CA certificates", e))?;
    if cas.is_empty() {
        return Err(NetError::Tls(format!(
            "{} holds no CA certificate; pass a ca.pem from `amble pki init`",
            path.display()
        )));
    }
    Ok(cas)
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, NetError> {
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&read(path)?)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(path, "a CRL", e))?;
    if crls.is_empty() {
        return Err(NetError::Tls(format!(
            "{} holds no CRL; run `amble pki revoke` or use the crl.pem `amble pki init` wrote",
            path.display()
        )));
    }
    Ok(crls)
}

fn verifier(
    cas: &[CertificateDer<'static>],
    crls: Vec<CertificateRevocationListDer<'static>>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    path: &Path,
) -> Result<Arc<dyn ClientCertVerifier>, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(cas.iter().cloned());
    if added == 0 {
        return Err(NetError::Tls(format!(
            "{} holds no usable CA certificate; pass a ca.pem from `amble pki init`",
            path.display()
        )));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .with_crls(crls)
        .build()
        .map_err(|e| NetError::Tls(format!("client verifier: {e}")))
}

/// Builds the server's TLS from the files; any problem is an error naming the file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerTls>, NetError> {
    let (certs, key) = own_identity(&files.cert, &files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let local_cas = load_cas(&files.client_ca)?;
    let local_crls = load_crls(&files.crl)?;
    let (client_verifier, local) = match (&files.federation_ca, &files.federation_crl) {
        (None, None) => (
            verifier(&local_cas, local_crls, &provider, &files.client_ca)?,
            None,
        ),
        (Some(fed_path), Some(fed_crl_path)) => {
            let fed_cas = load_cas(fed_path)?;
            if fed_cas.iter().any(|c| local_cas.contains(c)) {
                return Err(NetError::Config(format!(
                    "tls.client_ca ({}) and tls.federation_ca ({}) hold the same CA: the \
                     local root must be the organisation's own CA, or every member of the \
                     federation could reach this node's archive",
                    files.client_ca.display(),
                    fed_path.display()
                )));
            }
            let fed_crls = load_crls(fed_crl_path)?;
            let local = verifier(&local_cas, local_crls.clone(), &provider, &files.client_ca)?;
            let mut both = local_cas.clone();
            both.extend(fed_cas);
            let mut crls = local_crls;
            crls.extend(fed_crls);
            (verifier(&both, crls, &provider, fed_path)?, Some(local))
        }
        _ => {
            return Err(NetError::Config(
                "tls.federation_ca and tls.federation_crl go together: name both or neither".into(),
            ));
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::clone(&client_verifier))
        .with_single_cert(certs, key)
        .map_err(|e| NetError::Tls(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(ServerTls {
        config: Arc::new(config),
        verifier: client_verifier,
        local,
    }))
}
