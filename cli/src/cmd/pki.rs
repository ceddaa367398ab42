//! `amble pki …`: certificate authorities. The federation operator keeps the federation CA
//! (nodes, the coordinator, the federation's admins and auditors); each organisation keeps its
//! own CA (`--organisation`) for its apps, agents, admins, auditors and portal front end.
//! Private keys are written mode 0600 and never printed; only their paths are.

use crate::output::Output;
use amble_crypto::pki::{Ca, IssueRequest, ROLES};
use anyhow::Result;
use clap::Subcommand;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum PkiCommand {
    /// Create a CA (ECDSA P-256) in --dir, with an empty CRL (crl.pem).
    ///
    /// Without --organisation: the federation CA, run by the federation operator. It signs
    /// nodes, the coordinator and the federation's own admins and auditors, and refuses app,
    /// agent and subject-portal certificates. With --organisation ORG: ORG's own CA, the
    /// trust root of ORG's node for its local principals (apps, agents, admins, auditors,
    /// portal front end). Certificates of one never reach what the other guards.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The federation's name; it becomes the trust domain of every spiffe:// identity.
        #[arg(long)]
        federation: String,
        /// Make ORG's organisation CA instead of the federation CA.
        #[arg(long, value_name = "ORG")]
        organisation: Option<String>,
    },
    /// Issue a certificate for a participant: its SAN carries spiffe://FEDERATION/ROLE/NAME,
    /// so the role is read from the certificate. Writes DIR/certs/NAME.pem and NAME.key (0600).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// The participant id (a-z, 0-9, '.', '_', '-').
        #[arg(long)]
        name: String,
        /// coordinator, node, app, agent, auditor, admin or subject-portal.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ROLES))]
        role: String,
        /// DNS names this participant serves under (for servers), repeatable.
        #[arg(long)]
        dns: Vec<String>,
        /// IP addresses this participant serves under (for servers), repeatable.
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Revoke every certificate of --name and rewrite DIR/crl.pem; then copy it to the nodes
    /// and send them SIGHUP (or restart them) so they load it.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the certificates issued (name, role, serial, expiry, revocation).
    List {
        #[arg(long)]
        dir: PathBuf,
    },
}

pub(crate) fn run(cmd: PkiCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        PkiCommand::Init {
            dir,
            federation,
            organisation,
        } => {
            let ca = match &organisation {
                None => Ca::init(&dir, &federation)?,
                Some(org) => Ca::init_organisation(&dir, &federation, org)?,
            };
            let v = serde_json::json!({
                "federation": ca.federation(),
                "organisation": ca.organisation(),
                "ca_cert": ca.cert_path(),
                "crl": ca.crl_path(),
            });
            let what = match ca.organisation() {
                None => format!("federation CA {}", ca.federation()),
                Some(org) => format!("organisation CA of {org} (federation {})", ca.federation()),
            };
            out.report(&v, || {
                format!(
                    "{what} created in {}\n  certificate: {}\n  CRL:         {}\n  key:         {} (mode 0600; keep it offline)",
                    dir.display(),
                    ca.cert_path().display(),
                    ca.crl_path().display(),
                    dir.join(amble_crypto::pki::CA_KEY_FILE).display()
                )
            });
        }
        PkiCommand::Issue {
            dir,
            name,
            role,
            dns,
            ip,
            days,
        } => {
            let ca = Ca::open(&dir)?;
            let mut req = IssueRequest::new(name, role);
            req.dns = dns;
            req.ips = ip;
            req.days = days;
            let issued = ca.issue(&req)?;
            let v = serde_json::json!({
                "identity": issued.uri,
                "serial": issued.cert.serial,
                "not_after": issued.cert.not_after.to_string(),
                "cert": issued.cert_path,
                "key": issued.key_path,
            });
            out.report(&v, || {
                format!(
                    "issued {}\n  certificate: {}\n  key:         {} (mode 0600)\n  serial {} valid until {}",
                    issued.uri,
                    issued.cert_path.display(),
                    issued.key_path.display(),
                    issued.cert.serial,
                    issued.cert.not_after
                )
            });
        }
        PkiCommand::Revoke { dir, name } => {
            let ca = Ca::open(&dir)?;
            let revoked = ca.revoke(&name)?;
            let serials: Vec<&str> = revoked.iter().map(|c| c.serial.as_str()).collect();
            let v = serde_json::json!({ "name": name, "revoked_serials": serials, "crl": ca.crl_path() });
            out.report(&v, || {
                format!(
                    "revoked {} certificate(s) of {name}; wrote {}. Copy it to every node and send SIGHUP.",
                    revoked.len(),
                    ca.crl_path().display()
                )
            });
        }
        PkiCommand::List { dir } => {
            let ca = Ca::open(&dir)?;
            let issued = ca.issued()?;
            out.report(&issued, || {
                let mut s = format!(
                    "{:<24} {:<15} {:<34} {:<27} revoked\n",
                    "name", "role", "serial", "not after"
                );
                for c in &issued {
                    s.push_str(&format!(
                        "{:<24} {:<15} {:<34} {:<27} {}\n",
                        c.name,
                        c.role,
                        c.serial,
                        c.not_after.to_string(),
                        c.revoked_at
                            .map_or_else(|| "-".to_owned(), |t| t.to_string())
                    ));
                }
                s.trim_end().to_owned()
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
