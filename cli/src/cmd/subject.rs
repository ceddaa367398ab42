//! `amble subject …`: a subject's rights over a running node (mutual TLS): consent,
//! export, erase, access log, rectification, the AI-assistance level, restriction,
//! objection.

use crate::common::{Denied, RemoteArgs, RightChange, print_json, rpc_error, runtime};
use crate::output::Output;
use amble_proto::v1 as pb;
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Exercise another right for the subject: the AI-assistance level, restriction of
    /// processing, objection; prints the signed receipt.
    Right {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
        #[command(subcommand)]
        change: RightChange,
    },
    /// Correct fields of one of the subject's records (GDPR Art. 16); the record's id is in
    /// the export.
    Rectify {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
        /// The record's id, as the export lists it.
        #[arg(long)]
        record_id: u64,
        /// The corrected fields as a JSON object, e.g. '{"city": "Hangzhou"}'.
        #[arg(long)]
        fields: String,
    },
    /// Ask for a person to review an automated decision about the subject (GDPR Art. 22(3)):
    /// prints the explanation logged when it was made.
    Review {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
        /// The seq of the decision's entry (action `assist`) in the subject's access log.
        #[arg(long)]
        decision: u64,
    },
    /// Who looked at the subject's data: every audit entry about them.
    AccessLog {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long = "ref")]
        reference: String,
    },
}

pub(crate) fn run(cmd: SubjectCommand, out: &Output) -> Result<ExitCode> {
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
        SubjectCommand::Right {
            remote,
            reference,
            change,
        } => {
            let mut c = SubjectClient::new(remote.channel().await?);
            let r = match change {
                RightChange::Assistance { level } => c
                    .set_assistance(pb::SetAssistanceRequest {
                        r#ref: reference,
                        level: amble_consent::AssistanceLevel::from(level)
                            .as_str()
                            .to_owned(),
                    })
                    .await
                    .map_err(|s| rpc_error("assistance level", s))?,
                RightChange::Restrict | RightChange::Unrestrict => c
                    .set_restriction(pb::SetRestrictionRequest {
                        r#ref: reference,
                        restrict: matches!(change, RightChange::Restrict),
                    })
                    .await
                    .map_err(|s| rpc_error("restriction", s))?,
                RightChange::Object { purpose } => c
                    .set_objection(pb::SetObjectionRequest {
                        r#ref: reference,
                        purpose,
                        object: true,
                    })
                    .await
                    .map_err(|s| rpc_error("objection", s))?,
                RightChange::Unobject { purpose } => c
                    .set_objection(pb::SetObjectionRequest {
                        r#ref: reference,
                        purpose,
                        object: false,
                    })
                    .await
                    .map_err(|s| rpc_error("objection", s))?,
            };
            print_json(out, &r.into_inner().receipt_json)?;
        }
        SubjectCommand::Rectify {
            remote,
            reference,
            record_id,
            fields,
        } => {
            let mut c = SubjectClient::new(remote.channel().await?);
            let r = c
                .rectify(pb::RectifyRequest {
                    r#ref: reference,
                    record_id,
                    fields_json: fields,
                })
                .await
                .map_err(|s| rpc_error("rectify", s))?
                .into_inner();
            let v = serde_json::json!({"record_id": record_id, "collection": r.collection});
            out.report(&v, || {
                format!("record {record_id} ({}) corrected", r.collection)
            });
        }
        SubjectCommand::Review {
            remote,
            reference,
            decision,
        } => {
            let mut c = SubjectClient::new(remote.channel().await?);
            let r = c
                .request_review(pb::ReviewRequest {
                    r#ref: reference,
                    decision,
                })
                .await
                .map_err(|s| rpc_error("review request", s))?
                .into_inner();
            let v = serde_json::json!({"request": r.request, "decided_at": r.decided_at,
                "explanation": r.explanation});
            out.report(&v, || {
                format!(
                    "review requested (entry {}); the decision of {}: {}",
                    r.request, r.decided_at, r.explanation
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
