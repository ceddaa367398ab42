//! Commands that talk to a running node over mutual-TLS gRPC: `amble subject …`,
//! `amble audit fetch`, and `amble node serve` itself.

use crate::output::Output;
use amble_node::server::client::{ClientIdentity, source_chain};
use amble_node::server::{ServeConfig, Server, ServerError};
use amble_proto::v1 as pb;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tonic::Code;
use tonic::transport::Channel;

/// Where the node is and who we are to it.
#[derive(Args, Clone)]
pub(crate) struct RemoteArgs {
    /// The node (or, for `audit fetch`, the coordinator), https://HOST:PORT.
    #[arg(long, env = "AMBLE_NODE")]
    pub node: String,
    /// Our client certificate (PEM), from `amble pki issue`.
    #[arg(long, env = "AMBLE_CERT")]
    pub cert: PathBuf,
    /// Our private key (PEM, mode 0600).
    #[arg(long, env = "AMBLE_KEY")]
    pub key: PathBuf,
    /// The CA that signed the node's certificate (PEM).
    #[arg(long, env = "AMBLE_CA")]
    pub ca: PathBuf,
}

impl RemoteArgs {
    async fn channel(&self) -> Result<Channel> {
        let id = ClientIdentity::load(&self.cert, &self.key, &self.ca)?;
        Ok(id.connect(&self.node).await?)
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RemoteConsentAction {
    Show,
    Give,
    Withdraw,
}

#[derive(Subcommand)]
pub(crate) enum SubjectCommand {
    /// Show, give or withdraw the subject's consent for a purpose.
    Consent {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
        #[arg(value_enum)]
        action: RemoteConsentAction,
        /// The purpose, as declared in the node's policy (give/withdraw).
        #[arg(long, required_if_eq_any([("action", "give"), ("action", "withdraw")]))]
        purpose: Option<String>,
        /// When the consent lapses by itself (RFC 3339), for give.
        #[arg(long)]
        valid_until: Option<String>,
        /// The consent was given explicitly (needed for special categories such as health).
        #[arg(long)]
        explicit: bool,
    },
    /// Everything the node holds about the subject, signed by the node (GDPR Art. 15/20).
    Export {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
        /// Write the export here (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase the subject (crypto-shredding; the node rotates its master key afterwards).
    Erase {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
        /// Confirm: erasure cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Who looked at the subject's data: every audit entry about them.
    AccessLog {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
    },
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A refusal by consent or policy exits 3, like the offline commands; other statuses are
/// errors that carry the node's message.
fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let code = s.code();
    let hint = match code {
        Code::Unavailable | Code::Unknown if s.message().contains("transport") => {
            "; the node refused the connection — is the certificate from the node's CA, unexpired and not revoked?"
        }
        Code::Unauthenticated => "; the node needs a valid client certificate",
        _ => "",
    };
    let mut msg = format!("{what}: {} ({code:?}){hint}", s.message());
    if let Some(src) = std::error::Error::source(&s) {
        msg.push_str(": ");
        msg.push_str(&source_chain(src));
    }
    anyhow::Error::msg(msg).context(Denied(code == Code::PermissionDenied))
}

/// Marks an error as a consent/policy/role refusal (exit code 3).
#[derive(Debug)]
pub(crate) struct Denied(pub bool);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "denied" } else { "failed" })
    }
}

fn print_json(out: &Output, text: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(text).context("the node sent invalid JSON")?;
    out.report(&v, || serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

pub(crate) fn run_subject(cmd: SubjectCommand, out: &Output) -> Result<ExitCode> {
    let result = runtime()?.block_on(subject(cmd, out));
    match result {
        Ok(c) => Ok(c),
        Err(e) if matches!(e.downcast_ref::<Denied>(), Some(Denied(true))) => {
            out.error(&e);
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e),
    }
}

async fn subject(cmd: SubjectCommand, out: &Output) -> Result<ExitCode> {
    use pb::subject_client::SubjectClient;
    match cmd {
        SubjectCommand::Consent {
            remote,
            reference,
            action,
            purpose,
            valid_until,
            explicit,
        } => {
            let mut c = SubjectClient::new(remote.channel().await?);
            match action {
                RemoteConsentAction::Show => {
                    let r = c
                        .get_consent(pb::SubjectRef { r#ref: reference })
                        .await
                        .map_err(|s| rpc_error("consent show", s))?;
                    print_json(out, &r.into_inner().history_json)?;
                }
                RemoteConsentAction::Give | RemoteConsentAction::Withdraw => {
                    let give = matches!(action, RemoteConsentAction::Give);
                    let r = c
                        .set_consent(pb::SetConsentRequest {
                            r#ref: reference,
                            purpose: purpose.unwrap_or_default(),
                            give,
                            valid_until: valid_until.unwrap_or_default(),
                            explicit,
                        })
                        .await
                        .map_err(|s| rpc_error("consent change", s))?;
                    print_json(out, &r.into_inner().receipt_json)?;
                }
            }
        }
        SubjectCommand::Export {
            remote,
            reference,
            out: path,
        } => {
            let mut c = SubjectClient::new(remote.channel().await?);
            let stream = c
                .export(pb::SubjectRef { r#ref: reference })
                .await
                .map_err(|s| rpc_error("export", s))?
                .into_inner();
            let text = amble_proto::chunks::join(stream, amble_proto::chunks::MAX_DOCUMENT_BYTES)
                .await
                .map_err(|s| rpc_error("export", s))?;
            match path {
                Some(p) => {
                    amble_crypto::write_private(&p, text.as_bytes())
                        .with_context(|| format!("cannot write {}", p.display()))?;
                    let v = serde_json::json!({ "written": p });
                    out.report(&v, || {
                        format!("export written to {} (mode 0600)", p.display())
                    });
                }
                None => print_json(out, &text)?,
            }
        }
        SubjectCommand::Erase {
            remote,
            reference,
            yes,
        } => {
            if !yes {
                bail!("erasure cannot be undone; pass --yes to confirm");
            }
            let mut c = SubjectClient::new(remote.channel().await?);
            let r = c
                .erase(pb::SubjectRef { r#ref: reference })
                .await
                .map_err(|s| rpc_error("erase", s))?
                .into_inner();
            let v = serde_json::json!({
                "subject": r.subject,
                "records_deleted": r.records_deleted,
                "references_removed": r.references_removed,
            });
            out.report(&v, || {
                format!(
                    "erased subject {}: {} records, {} references; the node rotated its master key",
                    r.subject, r.records_deleted, r.references_removed
                )
            });
        }
        SubjectCommand::AccessLog { remote, reference } => {
            let mut c = SubjectClient::new(remote.channel().await?);
            let r = c
                .access_log(pb::SubjectRef { r#ref: reference })
                .await
                .map_err(|s| rpc_error("access log", s))?
                .into_inner();
            let entries = r
                .entries_json
                .iter()
                .map(|e| serde_json::from_str::<serde_json::Value>(e))
                .collect::<Result<Vec<_>, _>>()
                .context("the node sent an invalid audit entry")?;
            out.report(&entries, || {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "{}  {:<14} {:<28} {:<10} {}",
                            e["time"].as_str().unwrap_or("?"),
                            e["action"].as_str().unwrap_or("?"),
                            e["actor"].as_str().unwrap_or("?"),
                            e["purpose"].as_str().unwrap_or("-"),
                            e["decision"].as_str().unwrap_or("-"),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `amble audit fetch`: the auditor's copy of the node's log, in the folder format
/// `amble audit verify` reads (entries.jsonl, checkpoint, log.pub).
pub(crate) fn audit_fetch(remote: &RemoteArgs, dir: &Path, out: &Output) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let f = amble_cli::fetch::fetch_log(remote.channel().await?, dir).await?;
        let v = serde_json::json!({ "dir": dir, "entries": f.entries, "witnessed": f.witnessed });
        out.report(&v, || {
            format!(
                "fetched {} entries and a signed checkpoint{} into {}; check them with `amble audit verify {}`",
                f.entries,
                if f.witnessed { " (and the witness-cosigned one)" } else { "" },
                dir.display(),
                dir.display()
            )
        });
        Ok(ExitCode::SUCCESS)
    })
}

/// `amble node serve`: runs the node until SIGTERM; SIGHUP reloads policy and TLS files.
pub(crate) fn serve(config: &Path, out: &Output) -> Result<ExitCode> {
    // The log subscriber is installed by main (`--log-format`).
    let config = ServeConfig::load(config)?;
    runtime()?.block_on(async {
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        let mut v = serde_json::json!({ "listening": addr.to_string() });
        let portal = server.portal_addr();
        if let Some(p) = portal {
            v["portal"] = serde_json::json!(p.to_string());
        }
        out.report(&v, || match portal {
            None => format!("listening on {addr} (mutual TLS 1.3)"),
            Some(p) => format!(
                "listening on {addr} (mutual TLS 1.3); self-service page on https://{p} (TLS 1.3)"
            ),
        });
        match server.run_until_signalled().await {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e @ ServerError::StorageFault(_)) => {
                // Workers may still wait on the failed store; dropping the runtime would wait
                // with them. End now, for the supervisor to restart on known-good state.
                eprintln!("error: {e}");
                std::process::exit(STORAGE_FAULT_EXIT);
            }
            Err(e) => Err(e.into()),
        }
    })
}

/// `node serve`'s exit status after a storage fault (EX_TEMPFAIL: restart and try again).
pub(crate) const STORAGE_FAULT_EXIT: i32 = 75;
