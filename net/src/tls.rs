//! The node's TLS: 1.3 only, ring provider, client certificates required and checked against
//! the configured CA and its CRL. No other mode can be built from this module.

use crate::NetError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
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
}

impl TlsFiles {
    /// Resolves relative paths against `base` (the folder of the config file).
    pub fn absolutize(&mut self, base: &Path) {
        for p in [
            &mut self.cert,
            &mut self.key,
            &mut self.client_ca,
            &mut self.crl,
        ] {
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

/// Builds the rustls configuration from the files; any problem is an error naming the file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, NetError> {
    amble_crypto::check_private(&files.key).map_err(|e| NetError::Tls(e.to_string()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(&files.cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&files.cert, "certificates", e))?;
    if certs.is_empty() {
        return Err(NetError::Tls(format!(
            "{} holds no certificate; pass the node's certificate from `amble pki issue`",
            files.cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| pem_err(&files.key, "a private key", e))?;

    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(&files.client_ca)?)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&files.client_ca, "CA certificates", e))?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(NetError::Tls(format!(
            "{} holds no usable CA certificate; pass the federation's ca.pem",
            files.client_ca.display()
        )));
    }
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&read(&files.crl)?)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&files.crl, "a CRL", e))?;
    if crls.is_empty() {
        return Err(NetError::Tls(format!(
            "{} holds no CRL; run `amble pki revoke` or use the crl.pem `amble pki init` wrote",
            files.crl.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .with_crls(crls)
            .build()
            .map_err(|e| NetError::Tls(format!("client verifier: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| NetError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| NetError::Tls(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
