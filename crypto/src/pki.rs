//! The PKI: certificate authorities that say who each participant is and what role it plays,
//! and revocation lists that take that back.
//!
//! There are two kinds of CA, and a deployment keeps them apart (docs/THREAT_MODEL.md):
//! - the **federation CA** ([`Ca::init`]) signs the federation's participants — nodes, the
//!   coordinator, and the federation operator's admins and auditors — and nothing an
//!   organisation runs locally (it refuses `app`, `agent` and `subject-portal`);
//! - each **organisation CA** ([`Ca::init_organisation`]) signs that organisation's local
//!   principals — apps, agents, admins, auditors, its portal front end — and never a
//!   coordinator. A node serves its archive, subject, admin, assist and audit services only to
//!   certificates of its own organisation CA.
//!
//! A CA directory holds `ca.pem`, `ca.key` (mode 0600), `federation` (its name),
//! `organisation` (an organisation CA's name; absent for the federation CA), `index.json`
//! (every certificate issued: name, role, serial, expiry, revocation) and `crl.pem`, which is
//! rewritten on every revocation and which servers load. Issued certificates land in
//! `certs/NAME.pem` and `certs/NAME.key` (0600). Keys are ECDSA P-256.
//!
//! A certificate names its holder with exactly one SAN URI `spiffe://FEDERATION/ROLE/ID`: the
//! role is part of the signed identity, so a server reads id *and* role from the certificate
//! ([`identity_of`]) and never from anything the client says.

use crate::private_file::{check_private, write_private};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// What a certificate's holder does in a federation: the `ROLE` of its
/// `spiffe://FEDERATION/ROLE/ID`. The same names appear in policy files, method tables and
/// audit entries; `amble_policy` re-exports this type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Role {
    /// The federation's coordinator (from the federation CA; reaches only witness methods).
    Coordinator,
    /// A node: another member of the federation, or this node's own trainer.
    Node,
    /// An application of the organisation (its CRM, its ingest jobs).
    App,
    /// A service agent, human or bot, answering a person.
    Agent,
    /// An auditor of the access log.
    Auditor,
    /// The node's operator.
    Admin,
    /// The self-service page's front end, acting for the person signed in to it.
    SubjectPortal,
    /// The organisation's privacy officer (DPO): keeps the register of people's requests and
    /// answers those only a person can.
    PrivacyOfficer,
}

impl Role {
    /// Every role, in declaration order.
    pub const ALL: &'static [Role] = &[
        Role::Coordinator,
        Role::Node,
        Role::App,
        Role::Agent,
        Role::Auditor,
        Role::Admin,
        Role::SubjectPortal,
        Role::PrivacyOfficer,
    ];

    /// The name used in certificates, policy files and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Node => "node",
            Role::App => "app",
            Role::Agent => "agent",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::SubjectPortal => "subject-portal",
            Role::PrivacyOfficer => "privacy-officer",
        }
    }

    /// Only an organisation CA issues it: a principal local to one organisation.
    pub const fn local_only(self) -> bool {
        matches!(self, Role::App | Role::Agent | Role::SubjectPortal)
    }

    /// Only the federation CA issues it.
    pub const fn federation_only(self) -> bool {
        matches!(self, Role::Coordinator)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{given}`; expected one of: {}", ROLES.join(", "))]
pub struct UnknownRole {
    /// The name as given.
    pub given: String,
}

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole {
                given: s.to_owned(),
            })
    }
}

impl TryFrom<String> for Role {
    type Error = UnknownRole;
    fn try_from(s: String) -> Result<Self, UnknownRole> {
        s.parse()
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.as_str().to_owned()
    }
}

/// The names of every role, in [`Role::ALL`]'s order (for command-line value lists).
pub const ROLES: [&str; 7] = [
    Role::Coordinator.as_str(),
    Role::Node.as_str(),
    Role::App.as_str(),
    Role::Agent.as_str(),
    Role::Auditor.as_str(),
    Role::Admin.as_str(),
    Role::SubjectPortal.as_str(),
];

/// Which root a verified client certificate chains to. Deliberately exhaustive: every table
/// of who may call what must say what each root may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustRoot {
    /// The listener's own `client_ca`: the organisation's CA at a node, the federation CA at
    /// the coordinator.
    Local,
    /// The `federation_ca` of a node in a federation.
    Federation,
}

/// File name of the CA's self-signed certificate (PEM, valid ten years) in a CA directory: the
/// trust root to give the servers and clients that check this CA's certificates.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA's private key (PEM, mode 0600) in a CA directory; its presence is what
/// marks a directory as holding a CA. Keep it offline.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the CA's certificate revocation list (PEM, mode 0644) in a CA directory,
/// rewritten on every revocation; servers load it.
pub const CRL_FILE: &str = "crl.pem";
const FEDERATION_FILE: &str = "federation";
const ORGANISATION_FILE: &str = "organisation";
/// The organisational unit that marks a CA certificate's kind.
const FEDERATION_CA_UNIT: &str = "amble federation CA";
const ORGANISATION_CA_UNIT: &str = "amble organisation CA";
const INDEX_FILE: &str = "index.json";
const CERTS_DIR: &str = "certs";
const SPIFFE: &str = "spiffe://";
/// How long a CRL is announced as current; `amble pki revoke` rewrites it before then.
const CRL_DAYS: i64 = 30;
/// Tolerated clock skew between the CA and the servers that check its certificates.
const BACKDATE: Duration = Duration::minutes(5);

/// What went wrong in the PKI; each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Creating a CA found `ca.key` already in the directory, which it holds; overwriting it
    /// would orphan every certificate the CA issued. Open it instead, or pick an empty one.
    #[error("{0} already holds a CA (ca.key exists); refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    /// Opening a CA found no `ca.key` in the directory, which it holds: the path is wrong or
    /// `amble pki init` has not been run there.
    #[error("{0} holds no CA; run `amble pki init --dir {0} --federation NAME` first")]
    NotInitialised(PathBuf),
    /// A certificate, federation or organisation name is empty, longer than 64 bytes, starts
    /// with '.' or has a character outside a-z, 0-9, '.', '_', '-'. Holds the name as given.
    #[error(
        "name {0:?} is not usable: use 1 to 64 characters a-z, 0-9, '.', '_' or '-', not starting with '.'"
    )]
    BadName(String),
    /// An [`IssueRequest`]'s role is not one of [`ROLES`].
    #[error("role {given:?} is unknown; expected one of {}", ROLES.join(", "))]
    BadRole {
        /// The role as it was given in the request.
        given: String,
    },
    /// An [`IssueRequest`] asks for a validity outside 1 to 3650 days; holds the days asked.
    #[error("validity must be 1 to 3650 days, not {0}")]
    BadValidity(u32),
    /// A DNS name of an [`IssueRequest`] cannot be encoded in a certificate SAN (it is not
    /// ASCII); holds the name as given.
    #[error("DNS name {0:?} is not valid in a certificate")]
    BadDnsName(String),
    /// The name still holds an unrevoked, unexpired certificate, and a name holds one at a
    /// time; holds the name. Revoke the old certificate before reissuing.
    #[error(
        "{0:?} already has a valid certificate; revoke it first (`amble pki revoke --name {0}`)"
    )]
    AlreadyIssued(String),
    /// Revocation found no unrevoked certificate of the name in the CA's index (never issued
    /// here, or already revoked); holds the name. `amble pki list` shows what was issued.
    #[error("no valid certificate was issued to {0:?}")]
    NotIssued(String),
    /// Reading or writing a file of the CA directory failed at the operating system level
    /// (missing file, no permission, full disk).
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory that could not be read, written or created.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The CA's `index.json` is not the JSON amble wrote, or a serial in it is not hex (or
    /// the index could not be serialised). Restore the CA directory from a backup.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The damaged file: the CA's `index.json`.
        path: PathBuf,
        /// What the parser or hex decoder reported.
        reason: String,
    },
    /// From amble-crypto: `ca.key` is readable by group or others (run `chmod 600` on it) or
    /// its metadata cannot be read, or the system random generator failed to draw a serial.
    #[error(transparent)]
    KeyFile(#[from] crate::CryptoError),
    /// rcgen failed to generate a key pair, to parse `ca.key` or `ca.pem` (a damaged CA
    /// directory), or to sign a certificate or CRL.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Bytes given as a certificate are not parsable X.509 (or PEM), or the certificate lacks
    /// exactly one `spiffe://FEDERATION/ROLE/ID` SAN URI with a known role; holds the reason.
    /// Reissue it with `amble pki issue`.
    #[error("not a certificate amble can use: {0}")]
    BadCertificate(String),
    /// The CA may not issue the role: the federation CA refuses local roles (`app`, `agent`,
    /// `subject-portal`) and an organisation CA refuses `coordinator`.
    #[error("{kind} issues no {role:?} certificates: {hint}")]
    WrongCa {
        /// Which kind of CA refused.
        kind: CaKind,
        /// The role requested, as given.
        role: String,
        /// Which CA issues that role instead, and how to make it.
        hint: &'static str,
    },
}

/// Which trust root a CA is: the federation's, or one organisation's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaKind {
    /// Signs the federation's participants (nodes, coordinator, federation admins/auditors).
    Federation,
    /// Signs one organisation's local principals (apps, agents, admins, auditors, portal).
    Organisation,
}

impl std::fmt::Display for CaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CaKind::Federation => "the federation CA",
            CaKind::Organisation => "an organisation CA",
        })
    }
}

/// The kind of the CA certificate `der`, read from the marks `amble pki init` puts in its
/// subject (CAs made before organisation CAs existed are federation CAs by their common
/// name). `None` for a CA amble did not make.
pub fn ca_kind_of(der: &[u8]) -> Result<Option<CaKind>, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let subject = cert.subject();
    let text = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let units = text(&mut subject.iter_organizational_unit());
    if units.iter().any(|u| u == ORGANISATION_CA_UNIT) {
        return Ok(Some(CaKind::Organisation));
    }
    if units.iter().any(|u| u == FEDERATION_CA_UNIT) {
        return Ok(Some(CaKind::Federation));
    }
    let names = text(&mut subject.iter_common_name());
    Ok(names
        .iter()
        .any(|n| n.starts_with("amble federation CA "))
        .then_some(CaKind::Federation))
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The federation the certificate was issued for (`FEDERATION`).
    pub federation: String,
    /// What its holder does (`ROLE`).
    pub role: Role,
    /// Its holder's name (`ID`), unique within the issuing CA.
    pub id: String,
}

impl Identity {
    /// `spiffe://FEDERATION/ROLE/ID`.
    pub fn uri(&self) -> String {
        format!("{SPIFFE}{}/{}/{}", self.federation, self.role, self.id)
    }

    fn parse_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(SPIFFE)?;
        let mut parts = rest.split('/');
        let (federation, role, id) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || federation.is_empty() || valid_name(id).is_err() {
            return None;
        }
        let role = role.parse().ok()?;
        Some(Identity {
            federation: federation.to_owned(),
            role,
            id: id.to_owned(),
        })
    }
}

/// Reads the holder's identity from a DER certificate: its one `spiffe://` SAN URI.
/// Call it only on a certificate the TLS layer has already verified against the CA.
pub fn identity_of(der: &[u8]) -> Result<Identity, PkiError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?
        .ok_or_else(|| PkiError::BadCertificate("it has no subject alternative name".into()))?;
    let mut found = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with(SPIFFE) => Some(*u),
        _ => None,
    });
    let uri = found
        .next()
        .ok_or_else(|| PkiError::BadCertificate("it carries no spiffe:// identity".into()))?;
    if found.next().is_some() {
        return Err(PkiError::BadCertificate(
            "it carries more than one spiffe:// identity".into(),
        ));
    }
    Identity::parse_uri(uri).ok_or_else(|| {
        PkiError::BadCertificate(format!(
            "identity {uri:?} is not spiffe://FEDERATION/ROLE/ID with a known role"
        ))
    })
}

/// Reads the first certificate of a PEM file as DER.
pub fn first_cert_der(pem_text: &str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| PkiError::BadCertificate(e.to_string()))?;
    Ok(pem.contents)
}

fn valid_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.to_owned()))
    }
}

/// What to issue: `IssueRequest::new("acme-app", "app")` with optional SANs and validity.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The holder's id: the `ID` of its SPIFFE URI and its file name under `certs/`; 1 to 64
    /// of a-z, 0-9, '.', '_', '-', not starting with '.'.
    pub name: String,
    /// One of [`ROLES`]; parsed when issuing, so an unknown one fails with
    /// [`PkiError::BadRole`].
    pub role: String,
    /// DNS names added as SANs, for a holder that serves TLS under them; empty for a client.
    pub dns: Vec<String>,
    /// IP addresses added as SANs, for a holder that serves TLS under them.
    pub ips: Vec<IpAddr>,
    /// Validity in days from `not_before`, 1 to 3650.
    pub days: u32,
    /// Start of validity; now (less a little clock skew) when `None`.
    pub not_before: Option<OffsetDateTime>,
}

impl IssueRequest {
    /// A request for `name` as `role`: no DNS or IP SANs, valid 365 days from now.
    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Self {
        IssueRequest {
            name: name.into(),
            role: role.into(),
            dns: Vec::new(),
            ips: Vec::new(),
            days: 365,
            not_before: None,
        }
    }
}

/// One line of the CA's index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedCert {
    /// The holder's id, as requested (the `ID` of its SPIFFE URI).
    pub name: String,
    /// The holder's role, as requested (one of [`ROLES`]).
    pub role: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// When the certificate expires (UTC; RFC 3339 in `index.json`).
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// When it was revoked; `None` while it has not been.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    crl_number: u64,
    certs: Vec<IssuedCert>,
}

/// Where an issued certificate and its key were written.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate's line in the CA's index.
    pub cert: IssuedCert,
    /// `certs/NAME.pem` in the CA directory: the certificate, PEM.
    pub cert_path: PathBuf,
    /// `certs/NAME.key` in the CA directory: its private key, PEM, mode 0600. Hand it to the
    /// holder only.
    pub key_path: PathBuf,
    /// The identity in its SAN: `spiffe://FEDERATION/ROLE/NAME`.
    pub uri: String,
}

/// A CA on disk: the federation's, or an organisation's.
pub struct Ca {
    dir: PathBuf,
    federation: String,
    /// The organisation an organisation CA belongs to; `None` for the federation CA.
    organisation: Option<String>,
    cert_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("dir", &self.dir)
            .field("federation", &self.federation)
            .field("organisation", &self.organisation)
            .field("key", &"[redacted]")
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    crate::random_bytes(&mut b)?;
    b[0] &= 0x7f; // positive
    b[0] |= 0x01; // no leading zero byte to strip
    Ok(SerialNumber::from_slice(&b))
}

impl Ca {
    /// Creates the federation CA for `federation` in `dir` (created if needed) and an empty
    /// CRL. It signs federation participants only; see the module doc.
    pub fn init(dir: &Path, federation: &str) -> Result<Ca, PkiError> {
        Self::create(dir, federation, None)
    }

    /// Creates the CA of `organisation`, a member of `federation`, in `dir`: the trust root
    /// of the organisation's local principals (apps, agents, admins, auditors, portal).
    pub fn init_organisation(
        dir: &Path,
        federation: &str,
        organisation: &str,
    ) -> Result<Ca, PkiError> {
        valid_name(organisation)?;
        Self::create(dir, federation, Some(organisation))
    }

    fn create(dir: &Path, federation: &str, organisation: Option<&str>) -> Result<Ca, PkiError> {
        valid_name(federation)?;
        let key_path = dir.join(CA_KEY_FILE);
        if key_path.exists() {
            return Err(PkiError::AlreadyInitialised(dir.to_owned()));
        }
        std::fs::create_dir_all(dir.join(CERTS_DIR)).map_err(io_err(dir))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        match organisation {
            None => {
                dn.push(
                    DnType::CommonName,
                    format!("amble federation CA {federation}"),
                );
                dn.push(DnType::OrganizationalUnitName, FEDERATION_CA_UNIT);
            }
            Some(org) => {
                dn.push(
                    DnType::CommonName,
                    format!("amble organisation CA {org} ({federation})"),
                );
                dn.push(DnType::OrganizationalUnitName, ORGANISATION_CA_UNIT);
            }
        }
        dn.push(DnType::OrganizationName, federation);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.use_authority_key_identifier_extension = false;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_private(&key_path, key_pem.as_bytes()).map_err(io_err(&key_path))?;
        let cert_path = dir.join(CA_CERT_FILE);
        std::fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
        let fed_path = dir.join(FEDERATION_FILE);
        std::fs::write(&fed_path, format!("{federation}\n")).map_err(io_err(&fed_path))?;
        if let Some(org) = organisation {
            let org_path = dir.join(ORGANISATION_FILE);
            std::fs::write(&org_path, format!("{org}\n")).map_err(io_err(&org_path))?;
        }
        let ca = Ca {
            dir: dir.to_owned(),
            federation: federation.to_owned(),
            organisation: organisation.map(str::to_owned),
            cert_pem: cert.pem(),
            key,
        };
        ca.save_index(&Index::default())?;
        ca.write_crl()?;
        Ok(ca)
    }

    /// Opens the CA in `dir`; refuses a CA key readable by others.
    pub fn open(dir: &Path) -> Result<Ca, PkiError> {
        let key_path = dir.join(CA_KEY_FILE);
        if !key_path.exists() {
            return Err(PkiError::NotInitialised(dir.to_owned()));
        }
        check_private(&key_path)?;
        let key_pem =
            Zeroizing::new(std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?);
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let fed_path = dir.join(FEDERATION_FILE);
        let federation = std::fs::read_to_string(&fed_path)
            .map_err(io_err(&fed_path))?
            .trim()
            .to_owned();
        let org_path = dir.join(ORGANISATION_FILE);
        let organisation = match std::fs::read_to_string(&org_path) {
            Ok(s) => Some(s.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&org_path)(e)),
        };
        Ok(Ca {
            dir: dir.to_owned(),
            federation,
            organisation,
            cert_pem,
            key,
        })
    }

    /// The federation's name, from the `federation` file: the trust domain of every identity
    /// this CA issues.
    pub fn federation(&self) -> &str {
        &self.federation
    }

    /// The organisation of an organisation CA; `None` for the federation CA.
    pub fn organisation(&self) -> Option<&str> {
        self.organisation.as_deref()
    }

    /// Organisation CA if the directory has an `organisation` file, else federation CA.
    pub fn kind(&self) -> CaKind {
        match self.organisation {
            Some(_) => CaKind::Organisation,
            None => CaKind::Federation,
        }
    }

    /// The CA's own certificate, as PEM text (the contents of `ca.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Where the CA writes its CRL (`crl.pem`): copy it to the servers after a revocation.
    pub fn crl_path(&self) -> PathBuf {
        self.dir.join(CRL_FILE)
    }

    /// Where the CA's certificate is (`ca.pem`): the trust root to install on servers.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, &self.key)?)
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join(INDEX_FILE)
    }

    fn load_index(&self) -> Result<Index, PkiError> {
        let path = self.index_path();
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| PkiError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    fn save_index(&self, index: &Index) -> Result<(), PkiError> {
        let path = self.index_path();
        let text = serde_json::to_string_pretty(index).map_err(|e| PkiError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Not secret, but written the same atomic way so a crash never leaves half an index.
        write_private(&path, text.as_bytes()).map_err(io_err(&path))
    }

    /// The certificates issued so far, revoked ones included.
    pub fn issued(&self) -> Result<Vec<IssuedCert>, PkiError> {
        Ok(self.load_index()?.certs)
    }

    /// Issues a certificate and key for `req.name` with role `req.role`, writing
    /// `certs/NAME.pem` and `certs/NAME.key` (0600). A name holds one valid certificate at a
    /// time: revoke the old one to reissue.
    pub fn issue(&self, req: &IssueRequest) -> Result<Issued, PkiError> {
        valid_name(&req.name)?;
        let role: Role = req.role.parse().map_err(|_| PkiError::BadRole {
            given: req.role.clone(),
        })?;
        let kind = self.kind();
        if kind == CaKind::Federation && role.local_only() {
            return Err(PkiError::WrongCa {
                kind,
                role: req.role.clone(),
                hint: "an organisation's local principals come from its own CA \
                       (`amble pki init --dir ORG-PKI --federation FED --organisation ORG`)",
            });
        }
        if kind == CaKind::Organisation && role.federation_only() {
            return Err(PkiError::WrongCa {
                kind,
                role: req.role.clone(),
                hint: "the coordinator's certificate comes from the federation CA",
            });
        }
        if !(1..=3650).contains(&req.days) {
            return Err(PkiError::BadValidity(req.days));
        }
        let mut index = self.load_index()?;
        let now = OffsetDateTime::now_utc();
        if index
            .certs
            .iter()
            .any(|c| c.name == req.name && c.revoked_at.is_none() && c.not_after > now)
        {
            return Err(PkiError::AlreadyIssued(req.name.clone()));
        }
        let identity = Identity {
            federation: self.federation.clone(),
            role,
            id: req.name.clone(),
        };
        let uri = identity.uri();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.name.as_str());
        dn.push(DnType::OrganizationName, self.federation.as_str());
        dn.push(DnType::OrganizationalUnitName, req.role.as_str());
        params.distinguished_name = dn;
        params.subject_alt_names.push(SanType::URI(
            uri.as_str()
                .try_into()
                .map_err(|_| PkiError::BadName(req.name.clone()))?,
        ));
        for d in &req.dns {
            params.subject_alt_names.push(SanType::DnsName(
                d.as_str()
                    .try_into()
                    .map_err(|_| PkiError::BadDnsName(d.clone()))?,
            ));
        }
        for ip in &req.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let not_before = req.not_before.unwrap_or(now - BACKDATE);
        params.not_before = not_before;
        params.not_after = not_before + Duration::days(i64::from(req.days));
        let serial = random_serial()?;
        params.serial_number = Some(serial.clone());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;

        let certs = self.dir.join(CERTS_DIR);
        std::fs::create_dir_all(&certs).map_err(io_err(&certs))?;
        let key_path = certs.join(format!("{}.key", req.name));
        let key_pem = Zeroizing::new(key.serialize_pem());
        write_private(&key_path, key_pem.as_bytes()).map_err(io_err(&key_path))?;
        let cert_path = certs.join(format!("{}.pem", req.name));
        std::fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
        let issued = IssuedCert {
            name: req.name.clone(),
            role: req.role.clone(),
            serial: hex::encode(serial.to_bytes()),
            not_after: params.not_after,
            revoked_at: None,
        };
        index.certs.push(issued.clone());
        self.save_index(&index)?;
        Ok(Issued {
            cert: issued,
            cert_path,
            key_path,
            uri,
        })
    }

    /// Revokes every unrevoked certificate of `name` and rewrites `crl.pem`; returns what was
    /// revoked. Servers pick the new CRL up on reload (SIGHUP) or restart.
    pub fn revoke(&self, name: &str) -> Result<Vec<IssuedCert>, PkiError> {
        valid_name(name)?;
        let mut index = self.load_index()?;
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for c in index
            .certs
            .iter_mut()
            .filter(|c| c.name == name && c.revoked_at.is_none())
        {
            c.revoked_at = Some(now);
            revoked.push(c.clone());
        }
        if revoked.is_empty() {
            return Err(PkiError::NotIssued(name.to_owned()));
        }
        self.save_index(&index)?;
        self.write_crl()?;
        Ok(revoked)
    }

    /// Writes `crl.pem` listing every revoked certificate, with a fresh CRL number.
    pub fn write_crl(&self) -> Result<PathBuf, PkiError> {
        let mut index = self.load_index()?;
        index.crl_number += 1;
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for c in index.certs.iter() {
            let Some(at) = c.revoked_at else { continue };
            let serial = hex::decode(&c.serial).map_err(|e| PkiError::Corrupt {
                path: self.index_path(),
                reason: format!("serial of {}: {e}", c.name),
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: at,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: now - BACKDATE,
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?)?;
        let path = self.crl_path();
        let pem = crl.pem()?;
        write_private(&path, pem.as_bytes()).map_err(io_err(&path))?;
        // A CRL is public: servers running as another user must be able to read it.
        set_public(&path)?;
        self.save_index(&index)?;
        Ok(path)
    }
}

#[cfg(unix)]
fn set_public(path: &Path) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(io_err(path))
}

#[cfg(not(unix))]
fn set_public(_path: &Path) -> Result<(), PkiError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_carries_role_and_id_in_its_san_uri() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init_organisation(dir.path(), "acme-fed", "acme").unwrap();
        let mut req = IssueRequest::new("crm-1", "app");
        req.dns.push("localhost".into());
        req.ips.push("127.0.0.1".parse().unwrap());
        let issued = ca.issue(&req).unwrap();
        let pem = std::fs::read_to_string(&issued.cert_path).unwrap();
        let id = identity_of(&first_cert_der(&pem).unwrap()).unwrap();
        assert_eq!(
            id,
            Identity {
                federation: "acme-fed".into(),
                role: Role::App,
                id: "crm-1".into()
            }
        );
        assert_eq!(issued.uri, "spiffe://acme-fed/app/crm-1");
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_written_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "f").unwrap();
        let issued = ca.issue(&IssueRequest::new("n1", "node")).unwrap();
        for p in [dir.path().join(CA_KEY_FILE), issued.key_path] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }

    #[test]
    fn unknown_role_and_bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init_organisation(dir.path(), "f", "org").unwrap();
        assert!(matches!(
            ca.issue(&IssueRequest::new("x", "root")),
            Err(PkiError::BadRole { .. })
        ));
        for bad in ["", "../x", "A", "a/b", ".hidden"] {
            assert!(matches!(
                ca.issue(&IssueRequest::new(bad, "app")),
                Err(PkiError::BadName(_))
            ));
        }
    }

    #[test]
    fn a_name_holds_one_valid_certificate_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init_organisation(dir.path(), "f", "org").unwrap();
        ca.issue(&IssueRequest::new("a", "app")).unwrap();
        assert!(matches!(
            ca.issue(&IssueRequest::new("a", "app")),
            Err(PkiError::AlreadyIssued(_))
        ));
        let revoked = ca.revoke("a").unwrap();
        assert_eq!(revoked.len(), 1);
        ca.issue(&IssueRequest::new("a", "app")).unwrap();
        assert!(matches!(ca.revoke("nobody"), Err(PkiError::NotIssued(_))));
    }

    #[test]
    fn revocation_lists_the_serial_in_the_crl() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init_organisation(dir.path(), "f", "org").unwrap();
        let issued = ca.issue(&IssueRequest::new("a", "app")).unwrap();
        let before = std::fs::read_to_string(ca.crl_path()).unwrap();
        ca.revoke("a").unwrap();
        let after = std::fs::read_to_string(ca.crl_path()).unwrap();
        assert_ne!(before, after);
        let (_, pem) = x509_parser::pem::parse_x509_pem(after.as_bytes()).unwrap();
        let (_, crl) =
            <x509_parser::revocation_list::CertificateRevocationList as x509_parser::prelude::FromDer<_>>::from_der(&pem.contents)
                .unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![issued.cert.serial]);
    }

    #[test]
    fn reopened_ca_issues_certificates_chained_to_the_same_root() {
        let dir = tempfile::tempdir().unwrap();
        let first = Ca::init(dir.path(), "f").unwrap();
        let reopened = Ca::open(dir.path()).unwrap();
        assert_eq!(first.cert_pem(), reopened.cert_pem());
        assert_eq!(reopened.federation(), "f");
        let issued = reopened.issue(&IssueRequest::new("b", "auditor")).unwrap();
        let pem = std::fs::read_to_string(issued.cert_path).unwrap();
        let der = first_cert_der(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = first_cert_der(first.cert_pem()).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(cert.verify_signature(Some(ca_cert.public_key())).is_ok());
    }

    #[test]
    fn init_refuses_to_overwrite_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        Ca::init(dir.path(), "f").unwrap();
        assert!(matches!(
            Ca::init(dir.path(), "f"),
            Err(PkiError::AlreadyInitialised(_))
        ));
    }

    #[test]
    fn every_role_parses_back_from_its_name_and_nothing_else_parses() {
        for (role, name) in Role::ALL.iter().zip(ROLES) {
            assert_eq!(role.as_str(), name);
            assert_eq!(name.parse::<Role>(), Ok(*role));
        }
        assert_eq!(
            "Admin".parse::<Role>(),
            Err(UnknownRole {
                given: "Admin".to_owned()
            })
        );
        let json = serde_json::to_string(&Role::SubjectPortal).unwrap();
        assert_eq!(json, "\"subject-portal\"");
        assert!(serde_json::from_str::<Role>("\"root\"").is_err());
    }

    #[test]
    fn federation_ca_refuses_local_roles_and_organisation_ca_refuses_the_coordinator() {
        let fed_dir = tempfile::tempdir().unwrap();
        let fed = Ca::init(fed_dir.path(), "f").unwrap();
        for role in Role::ALL.iter().filter(|r| r.local_only()) {
            assert!(matches!(
                fed.issue(&IssueRequest::new("x", role.as_str())),
                Err(PkiError::WrongCa { .. })
            ));
        }
        fed.issue(&IssueRequest::new("n", "node")).unwrap();
        let org_dir = tempfile::tempdir().unwrap();
        let org = Ca::init_organisation(org_dir.path(), "f", "acme").unwrap();
        assert!(matches!(
            org.issue(&IssueRequest::new("c", "coordinator")),
            Err(PkiError::WrongCa { .. })
        ));
        org.issue(&IssueRequest::new("crm", "app")).unwrap();
        // The kind survives a reopen and is readable from the CA certificate alone.
        assert_eq!(
            Ca::open(org_dir.path()).unwrap().kind(),
            CaKind::Organisation
        );
        assert_eq!(Ca::open(fed_dir.path()).unwrap().kind(), CaKind::Federation);
        let der = |ca: &Ca| first_cert_der(ca.cert_pem()).unwrap();
        assert_eq!(ca_kind_of(&der(&org)).unwrap(), Some(CaKind::Organisation));
        assert_eq!(ca_kind_of(&der(&fed)).unwrap(), Some(CaKind::Federation));
    }
}
