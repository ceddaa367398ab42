//! `amble audit …`: the auditor's commands. `export`, `prove` and `subject` open a node's
//! data directory; `verify` needs only the exported folder and public keys.

use crate::cmd::node::DataDirArgs;
use crate::common::{RemoteArgs, runtime};
use crate::output::Output;
use amble_audit::note::NoteVerifier;
use amble_crypto::ExternalRef;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Export the node's audit log for an auditor: entries.jsonl, the signed checkpoint and
    /// the log's public key.
    Export {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify an exported log offline: recompute the Merkle tree from the entries, check the
    /// checkpoint signature and, with --since, that the log only grew since an older checkpoint.
    /// Exits non-zero on any mismatch, naming the first bad entry.
    Verify {
        /// The folder written by `amble audit export`.
        dir: PathBuf,
        /// An older checkpoint file (signed note) this log must extend.
        #[arg(long)]
        since: Option<PathBuf>,
        /// Also check cosignatures by these keys (C2SP verifier key strings or files) — e.g.
        /// the federation coordinator's witness key, to check the witnessed checkpoint.
        #[arg(long = "cosigner")]
        cosigners: Vec<String>,
    },
    /// Print an RFC 9162 inclusion proof (--index) or consistency proof (--since-size) as JSON
    /// with base64 hashes, for the current tree size unless --size is given.
    Prove {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The entry (leaf) to prove inclusion of.
        #[arg(
            long,
            conflicts_with = "since_size",
            required_unless_present = "since_size"
        )]
        index: Option<u64>,
        /// The older tree size to prove consistency from.
        #[arg(long)]
        since_size: Option<u64>,
        /// The tree size to prove against (default: the current size).
        #[arg(long)]
        size: Option<u64>,
    },
    /// Apply the log's retention: drop entry bodies older than --keep-days (their hashes stay,
    /// so the log remains verifiable; exports carry the hashes of the pruned prefix).
    Prune {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep_days: u32,
    },
    /// Fetch a running node's log over mutual TLS into --out, in the folder format `verify`
    /// reads (role auditor or admin).
    Fetch {
        #[command(flatten)]
        remote: crate::common::RemoteArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Every access to one subject's data: the "who looked at my data" answer.
    Subject {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
    },
}

fn verifier(arg: &str) -> Result<NoteVerifier> {
    let text = std::fs::read_to_string(arg).unwrap_or_else(|_| arg.to_owned());
    NoteVerifier::parse(text.trim()).with_context(|| format!("{arg:?} is not a verifier key"))
}

pub(crate) fn run(cmd: AuditCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Export { dir, out: path } => {
            let node = dir.open()?;
            let s = amble_audit::export_dir(
                node.audit_log(),
                node.signing_key(),
                node.origin(),
                &path,
            )?;
            if let Some((note, _)) = node.witnessed_checkpoint()? {
                std::fs::write(path.join(amble_audit::WITNESSED_FILE), note)?;
            }
            out.report(
                &serde_json::json!({"dir": s.dir, "size": s.size, "entries": s.entries, "first_seq": s.first_seq}),
                || format!("exported {} entries (tree size {}) to {}", s.entries, s.size, s.dir.display()),
            );
        }
        AuditCommand::Verify {
            dir,
            since,
            cosigners,
        } => {
            let since = since
                .map(|p| {
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .transpose()?;
            let trusted = cosigners
                .iter()
                .map(|c| verifier(c))
                .collect::<Result<Vec<_>>>()?;
            match amble_audit::verify_dir(&dir, since.as_deref(), &trusted) {
                Ok(report) => {
                    out.report(
                        &serde_json::json!({"ok": true, "size": report.size, "entries": report.entries,
                            "cosigners": report.cosigners, "consistent_with": report.consistent_with,
                            "witnessed": report.witnessed.as_ref().map(|w| serde_json::json!({
                                "size": w.size, "witnesses": w.witnesses,
                                "unknown_cosigners": w.unknown_cosigners}))}),
                        || format!("OK\n{report}"),
                    );
                }
                Err(e) => {
                    out.error(&anyhow::anyhow!("verification FAILED: {e}"));
                    return Ok(ExitCode::from(1));
                }
            }
        }
        AuditCommand::Prove {
            dir,
            index,
            since_size,
            size,
        } => {
            let node = dir.open()?;
            let log = node.audit_log();
            let size = size.unwrap_or_else(|| log.size());
            let json = match (index, since_size) {
                (Some(i), _) => log.inclusion_proof_json(i, size)?,
                (None, Some(m)) => log.consistency_proof_json(m, size)?,
                (None, None) => anyhow::bail!("give --index N or --since-size M"),
            };
            println!("{json}");
        }
        AuditCommand::Prune { dir, keep_days } => {
            let node = dir.open()?;
            let before = time::OffsetDateTime::now_utc() - time::Duration::days(keep_days.into());
            let n = node.prune_audit_before(&crate::cmd::node::operator(), before)?;
            out.report(&serde_json::json!({"pruned": n}), || {
                format!("pruned {n} entry bodies older than {keep_days} days; their hashes remain")
            });
        }
        AuditCommand::Fetch { remote, out: dir } => {
            return audit_fetch(&remote, &dir, out);
        }
        AuditCommand::Subject { dir, reference } => {
            let node = dir.open()?;
            let r = ExternalRef::parse(&reference).context("bad --ref")?;
            let entries = node.access_log(&crate::cmd::node::operator(), &r)?;
            out.report(&entries, || {
                let mut s = format!("{} entries about this person\n", entries.len());
                for e in &entries {
                    let when = e
                        .time
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    s.push_str(&format!(
                        "{when}  {:<15} {:<20} {:<16} {:<6} {}\n",
                        e.action.as_str(),
                        e.actor,
                        e.purpose.as_deref().unwrap_or("-"),
                        e.decision,
                        e.reason.as_deref().unwrap_or("")
                    ));
                }
                s
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
