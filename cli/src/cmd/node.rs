//! `amble node …`: offline operator commands that open a data directory directly, and
//! `amble node serve`, the node as a long-running service.

use crate::common::runtime;
use crate::output::Output;
use amble_crypto::ExternalRef;
use amble_node::server::{ServeConfig, Server, ServerError};
use amble_node::{Actor, ConsentChange, Node, ReadOutcome, TimeRange, ingest};
use amble_policy::Role;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Clone)]
pub(crate) struct DataDirArgs {
    /// The node's data directory (created by `amble node init`).
    #[arg(long, env = "AMBLE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The node key file; defaults to DATA_DIR/node.key. Must be mode 0600.
    #[arg(long, env = "AMBLE_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// The policy file; defaults to DATA_DIR/policy.toml (written by `init`).
    #[arg(long, env = "AMBLE_POLICY")]
    pub policy: Option<PathBuf>,
}

impl DataDirArgs {
    pub(crate) fn open(&self) -> Result<Node> {
        Ok(Node::open(
            &self.data_dir,
            self.key_file.as_deref(),
            self.policy.as_deref(),
        )?)
    }
}

/// The person at the terminal, as the audit log names them: the account the process runs as,
/// from the operating system — never `$USER`, which whoever runs the command can set.
pub(crate) fn operator() -> Actor {
    Actor::local(format!("operator:{}", os_account()), Role::Admin)
}

/// The name of the account this process runs as (`uid-N` when it has no name).
#[cfg(unix)]
fn os_account() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    let named = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut f = line.split(':');
                let (name, _, id) = (f.next()?, f.next()?, f.next()?);
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        });
    named.unwrap_or_else(|| format!("uid-{uid}"))
}

#[cfg(not(unix))]
fn os_account() -> String {
    "unknown".into()
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ConsentAction {
    Show,
    Give,
    Withdraw,
}

fn parse_ref(s: &str) -> Result<ExternalRef> {
    ExternalRef::parse(s).with_context(|| "bad --ref".to_string())
}

#[derive(Subcommand)]
pub(crate) enum NodeCommand {
    /// Create a data directory and its key file (mode 0600).
    ///
    /// Keep the key file on a different volume than the data for production (pass
    /// --key-file): a stolen data disk without the key reveals nothing.
    Init(DataDirArgs),
    /// Ingest a JSON Lines file: one record per line,
    /// {"ref":"phone:+15550001","collection":"interactions","time":"2026-05-01T10:00:00Z","data":{…}}.
    ///
    /// The whole file is checked first; if any line is bad, nothing is written and the bad
    /// lines are listed with their numbers.
    Ingest {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The .jsonl file to ingest.
        file: PathBuf,
    },
    /// Export everything held about one subject as JSON (GDPR Art. 15/20).
    Export {
        #[command(flatten)]
        dir: DataDirArgs,
        /// Any external reference of the subject, e.g. phone:+15550001.
        #[arg(long = "ref")]
        reference: String,
        /// Write the export here instead of stdout (created with mode 0600).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase a subject: destroy its data key, delete its records and links, keep a tombstone.
    ///
    /// Then rotate the node master key, so that copies of the destroyed data key that
    /// outlive the delete (in the storage engine's old log segments, or in backups taken
    /// earlier) can no longer be unwrapped. Pass --no-rotate to erase many subjects and
    /// rotate once at the end with `amble node rotate-key`.
    Erase {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        /// Skip the key rotation (erasure is then complete only after the next rotate-key).
        #[arg(long)]
        no_rotate: bool,
    },
    /// Rotate the node master key: rewrap every data key; records are not re-encrypted.
    RotateKey(DataDirArgs),
    /// Link another external reference to the subject of --ref (unified identity).
    Link {
        #[command(flatten)]
        dir: DataDirArgs,
        /// A reference the subject already has.
        #[arg(long = "ref")]
        reference: String,
        /// The reference to add.
        #[arg(long)]
        add: String,
    },
    /// Remove one external reference from its subject (not the last one).
    Unlink {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
    },
    /// Merge the subject of --absorb into the subject of --ref; records and references follow.
    Merge {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        #[arg(long)]
        absorb: String,
    },
    /// Show counts: subjects and records (pseudonyms only, never references).
    Status(DataDirArgs),
    /// Run the node as a mutual-TLS gRPC service until SIGTERM (which flushes everything);
    /// SIGHUP reloads the policy and TLS files. See deploy/node.example.toml.
    Serve {
        /// The service configuration (node.toml).
        #[arg(long, env = "AMBLE_NODE_CONFIG")]
        config: PathBuf,
    },
    /// Show, give or withdraw a subject's consent for a purpose; give/withdraw print the
    /// signed receipt (check it with `amble consent verify-receipt`).
    Consent {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        #[arg(value_enum)]
        action: ConsentAction,
        /// The purpose, as declared in the policy (give/withdraw).
        #[arg(long)]
        purpose: Option<String>,
        /// When the consent lapses by itself (RFC 3339), for give.
        #[arg(long)]
        valid_until: Option<String>,
        /// The consent was given explicitly (needed to read special categories such as health).
        #[arg(long)]
        explicit: bool,
        /// Write the receipt here instead of stdout.
        #[arg(long)]
        receipt_out: Option<PathBuf>,
    },
    /// Exercise another right for a subject: the AI-assistance level, restriction of
    /// processing (GDPR Art. 18), objection (Art. 21); prints the signed receipt.
    Right {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        /// Write the receipt here instead of stdout.
        #[arg(long)]
        receipt_out: Option<PathBuf>,
        #[command(subcommand)]
        change: crate::common::RightChange,
    },
    /// Record a subject's request for a person to review an automated decision about them
    /// (GDPR Art. 22(3)); prints the explanation logged when it was made.
    Review {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        /// The seq of the decision's entry (action `assist`) in the subject's access log.
        #[arg(long)]
        decision: u64,
    },
    /// The register of people's requests (access, rectification, erasure, restriction,
    /// objection, review) with their legal deadlines; overdue ones are marked. Audited.
    Requests {
        #[command(flatten)]
        dir: DataDirArgs,
        /// Which requests.
        #[arg(long, value_enum, default_value_t = crate::cmd::register::Which::All)]
        which: crate::cmd::register::Which,
    },
    /// Answer an open request of the register: done or refused; a review: upheld or changed.
    AnswerRequest {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The request's number, as `amble node requests` shows it.
        #[arg(long)]
        id: u64,
        /// done, refused, upheld (a review that keeps the decision) or changed.
        #[arg(long)]
        outcome: String,
    },
    /// Correct fields of one of a subject's records at their request (GDPR Art. 16): each
    /// field given replaces the record's field of that name; the record's id is in the export.
    Rectify {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        /// The record's id, as `amble node export` lists it.
        #[arg(long)]
        record_id: u64,
        /// The corrected fields as a JSON object, e.g. '{"city": "Hangzhou"}'.
        #[arg(long)]
        fields: String,
        /// Skip the master key rotation that makes the old value unreadable even with the key
        /// file (it is then unreadable only after the next `amble node rotate-key`).
        #[arg(long)]
        no_rotate: bool,
    },
    /// Read a subject's archive for a purpose, as a role: prints the projection the policy
    /// allows, or the reason it is denied (exit code 3). Logged either way.
    Read {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long = "ref")]
        reference: String,
        #[arg(long)]
        purpose: String,
        /// The role acting: coordinator, node, app, agent, auditor, admin, subject-portal.
        #[arg(long)]
        role: Role,
    },
    /// Delete records older than the policy's retention; logs the counts.
    Sweep(DataDirArgs),
    /// Write a signed snapshot of the whole node to a file: archive (still sealed under each
    /// person's key), consent, privacy ledger, models, audit log and policy.
    ///
    /// Offline: the node's database is locked while the node runs, so stop the service first
    /// (or take a filesystem snapshot of the data directory instead). The backup never holds
    /// the key file and cannot be read without it; keep the two apart. Take a new backup
    /// after every `erase` and `rotate-key`: restore refuses a backup older than the node
    /// master key, so that people erased since it was taken stay erased.
    Backup {
        #[command(flatten)]
        dir: DataDirArgs,
        /// The backup file to write (mode 0600); an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a new, empty data directory, then open it with the key file and
    /// verify its audit log.
    ///
    /// The backup's content hash and signature, the key file (it must belong to the node that
    /// made the backup, and its current master key must be the backup's) and the target are
    /// all checked before anything is written; if anything fails, nothing is left behind.
    Restore {
        /// The backup file written by `amble node backup`.
        #[arg(long)]
        from: PathBuf,
        /// The new data directory (must not exist, or be empty but for the key file).
        #[arg(long)]
        data_dir: PathBuf,
        /// The node key file; defaults to DATA_DIR/node.key. Must be mode 0600.
        #[arg(long, env = "AMBLE_KEY_FILE")]
        key_file: Option<PathBuf>,
    },
    /// Print (or write) the node's Ed25519 public key, for checking receipts and audit logs.
    Pubkey {
        #[command(flatten)]
        dir: DataDirArgs,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: NodeCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        NodeCommand::Serve { config } => return serve(&config, out),
        NodeCommand::Init(dir) => {
            let a = Node::init(&dir.data_dir, dir.key_file.as_deref())?;
            let key = dir
                .key_file
                .clone()
                .unwrap_or_else(|| amble_node::default_key_file(&dir.data_dir));
            let public = a.signing_key().verifying_key().to_base64();
            out.report(
                &serde_json::json!({"data_dir": dir.data_dir, "key_file": key, "signing_public_key": public}),
                || {
                    format!(
                        "initialised {}\nkey file {} (mode 0600) — back it up separately from the data; without it the archive cannot be read\nnode signing key (public): {public}",
                        dir.data_dir.display(),
                        key.display()
                    )
                },
            );
        }
        NodeCommand::Ingest { dir, file } => {
            let a = dir.open()?;
            let total = ingest::validate_file(&file)?;
            let bar = out.progress(total as u64, "ingest");
            let n = ingest::ingest_file(&a, &operator(), &file, &|done| {
                bar.set_position(done as u64)
            })?;
            bar.finish_and_clear();
            out.report(
                &serde_json::json!({"records": n, "subjects": a.subject_count()}),
                || {
                    format!(
                        "ingested {n} records; the archive now holds {} subjects",
                        a.subject_count()
                    )
                },
            );
        }
        NodeCommand::Export {
            dir,
            reference,
            out: path,
        } => {
            let a = dir.open()?;
            let export = a.export(&operator(), &parse_ref(&reference)?)?;
            let text = serde_json::to_string_pretty(&export)?;
            let count = export.document["archive"]["record_count"]
                .as_u64()
                .unwrap_or(0);
            match path {
                Some(p) => {
                    write_private(&p, text.as_bytes())?;
                    out.report(&serde_json::json!({"out": p, "records": count}), || {
                        format!("wrote {count} records to {}", p.display())
                    });
                }
                None => println!("{text}"),
            }
        }
        NodeCommand::Erase {
            dir,
            reference,
            no_rotate,
        } => {
            let mut a = dir.open()?;
            let op = operator();
            let r = a.erase(&op, &parse_ref(&reference)?)?;
            let rotated = if no_rotate {
                None
            } else {
                Some(a.rotate_key(&op)?)
            };
            out.report(
                &serde_json::json!({"erase": r, "rotation": rotated}),
                || {
                    let tail = match &rotated {
                        Some(rot) => format!(
                            "; node master key rotated to v{}, so older copies of the key are unreadable",
                            rot.new_version
                        ),
                        None => "; run `amble node rotate-key` to finish crypto-shredding".into(),
                    };
                    format!(
                        "erased subject {}: data key destroyed, {} records and {} references deleted{tail}",
                        &r.subject[..16],
                        r.records_deleted,
                        r.references_removed
                    )
                },
            );
        }
        NodeCommand::RotateKey(dir) => {
            let mut a = dir.open()?;
            let r = a.rotate_key(&operator())?;
            out.report(&r, || {
                format!(
                    "node master key is now v{}; {} data keys rewrapped; retired {:?}",
                    r.new_version, r.keys_rewrapped, r.retired_versions
                )
            });
        }
        NodeCommand::Link {
            dir,
            reference,
            add,
        } => {
            let a = dir.open()?;
            let s = a.link(&operator(), &parse_ref(&reference)?, &parse_ref(&add)?)?;
            out.report(&serde_json::json!({"subject": s.to_hex()}), || {
                format!("linked to subject {}", &s.to_hex()[..16])
            });
        }
        NodeCommand::Unlink { dir, reference } => {
            let a = dir.open()?;
            let s = a.unlink(&operator(), &parse_ref(&reference)?)?;
            out.report(&serde_json::json!({"subject": s.to_hex()}), || {
                format!("unlinked from subject {}", &s.to_hex()[..16])
            });
        }
        NodeCommand::Merge {
            dir,
            reference,
            absorb,
        } => {
            let a = dir.open()?;
            let r = a.merge(&operator(), &parse_ref(&reference)?, &parse_ref(&absorb)?)?;
            out.report(&r, || {
                format!(
                    "merged: {} records and {} references moved into subject {}",
                    r.records_moved,
                    r.references_moved,
                    &r.kept[..16]
                )
            });
        }
        NodeCommand::Status(dir) => {
            let a = dir.open()?;
            let subjects = a.subjects()?;
            let records: usize = subjects.iter().map(|s| a.count(s, None)).sum();
            out.report(
                &serde_json::json!({"subjects": subjects.len(), "records": records,
                    "kek_versions": a.key_versions(), "audit_entries": a.audit_log().size()}),
                || {
                    format!(
                        "{} subjects, {} records, node master key {:?}, {} audit entries",
                        subjects.len(),
                        records,
                        a.key_versions(),
                        a.audit_log().size()
                    )
                },
            );
        }
        NodeCommand::Consent {
            dir,
            reference,
            action,
            purpose,
            valid_until,
            explicit,
            receipt_out,
        } => {
            let a = dir.open()?;
            let r = parse_ref(&reference)?;
            let change = match action {
                ConsentAction::Show => {
                    let h = a.consent_history(&operator(), &r)?;
                    let now = time::OffsetDateTime::now_utc();
                    let policy = a.policy();
                    let states: Vec<_> = policy
                        .purposes()
                        .map(|p| (p.id.clone(), h.state(&p.id, now).to_string()))
                        .collect();
                    let restricted = h.restricted(now).map(amble_consent::date_of);
                    let objections: Vec<String> = policy
                        .purposes()
                        .filter(|p| h.objected(&p.id, now).is_some())
                        .map(|p| p.id.clone())
                        .collect();
                    out.report(
                        &serde_json::json!({"states": states.iter().cloned().collect::<std::collections::BTreeMap<_,_>>(),
                            "ai_assistance": h.ai_assistance(now).as_str(), "events": h.consent_events().len(),
                            "restricted_since": restricted, "objections": objections}),
                        || {
                            let mut s = String::new();
                            for (p, st) in &states {
                                s.push_str(&format!("{p:<20} {st}\n"));
                            }
                            s.push_str(&format!("AI assistance: {}", h.ai_assistance(now).as_str()));
                            if let Some(d) = &restricted {
                                s.push_str(&format!("\nprocessing restricted since {d}"));
                            }
                            if !objections.is_empty() {
                                s.push_str(&format!("\nobjects to: {}", objections.join(", ")));
                            }
                            s
                        },
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                ConsentAction::Give => ConsentChange::Give {
                    valid_until: valid_until
                        .as_deref()
                        .map(|t| {
                            time::OffsetDateTime::parse(
                                t,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .with_context(|| format!("--valid-until {t:?} is not RFC 3339"))
                        })
                        .transpose()?,
                    explicit,
                },
                ConsentAction::Withdraw => ConsentChange::Withdraw,
            };
            let purpose = purpose.context("--purpose is required to give or withdraw consent")?;
            let receipt = a.change_consent(&operator(), &r, &purpose, change)?;
            emit_receipt(&receipt, receipt_out.as_deref(), out, "consent")?;
        }
        NodeCommand::Review {
            dir,
            reference,
            decision,
        } => {
            let a = dir.open()?;
            let review = a.request_review(&operator(), &parse_ref(&reference)?, decision)?;
            out.report(&review, || {
                format!(
                    "review requested (entry {}); the decision: {}",
                    review.request, review.explanation
                )
            });
        }
        NodeCommand::Requests { dir, which } => {
            let a = dir.open()?;
            let now = a.now();
            let list = a.requests(&operator(), which.filter())?;
            crate::cmd::register::report(
                out,
                list.iter()
                    .map(|r| crate::cmd::register::local_row(r, now))
                    .collect(),
            );
        }
        NodeCommand::AnswerRequest { dir, id, outcome } => {
            let a = dir.open()?;
            let r = a.answer_request(&operator(), id, outcome.parse()?)?;
            crate::cmd::register::report(out, vec![crate::cmd::register::local_row(&r, a.now())]);
        }
        NodeCommand::Rectify {
            dir,
            reference,
            record_id,
            fields,
            no_rotate,
        } => {
            let serde_json::Value::Object(fields) = serde_json::from_str(&fields)
                .with_context(|| format!("--fields {fields:?} is not JSON"))?
            else {
                anyhow::bail!("--fields must be a JSON object, e.g. '{{\"city\": \"Hangzhou\"}}'");
            };
            let mut a = dir.open()?;
            let op = operator();
            let collection = a.rectify(&op, &parse_ref(&reference)?, record_id, &fields)?;
            let rotated = if no_rotate {
                None
            } else {
                Some(a.rotate_key(&op)?)
            };
            let names: Vec<&String> = fields.keys().collect();
            out.report(
                &serde_json::json!({"record_id": record_id, "collection": collection.as_str(),
                    "fields": names, "rotation": rotated}),
                || {
                    let tail = if rotated.is_some() {
                        "; the person's data key was replaced and the master key rotated, so the old value is unreadable"
                    } else {
                        "; run `amble node rotate-key` to make the old value unreadable with the key file"
                    };
                    format!(
                        "record {record_id} ({collection}) corrected: {}{tail}",
                        fields.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            );
        }
        NodeCommand::Right {
            dir,
            reference,
            receipt_out,
            change,
        } => {
            use crate::common::RightChange;
            let a = dir.open()?;
            let r = parse_ref(&reference)?;
            let who = operator();
            let (receipt, what) = match change {
                RightChange::Assistance { level } => (
                    a.set_ai_assistance(&who, &r, level.into())?,
                    "AI-assistance level",
                ),
                RightChange::Restrict => (a.set_restriction(&who, &r, true)?, "restriction"),
                RightChange::Unrestrict => {
                    (a.set_restriction(&who, &r, false)?, "lifted restriction")
                }
                RightChange::Object { purpose } => {
                    (a.set_objection(&who, &r, &purpose, true)?, "objection")
                }
                RightChange::Unobject { purpose } => (
                    a.set_objection(&who, &r, &purpose, false)?,
                    "withdrawn objection",
                ),
            };
            emit_receipt(&receipt, receipt_out.as_deref(), out, what)?;
        }
        NodeCommand::Read {
            dir,
            reference,
            purpose,
            role,
        } => {
            let a = dir.open()?;
            let mut actor = operator();
            actor.role = role;
            match a.read(&actor, &parse_ref(&reference)?, &purpose, TimeRange::ALL)? {
                ReadOutcome::Allowed(p) => {
                    println!("{}", serde_json::to_string_pretty(&p.to_json())?);
                }
                ReadOutcome::Denied(reason) => {
                    if out.json {
                        println!(
                            "{}",
                            serde_json::json!({"denied": reason.to_string(), "code": reason.code()})
                        );
                    } else {
                        eprintln!("denied: {reason}");
                    }
                    return Ok(ExitCode::from(3));
                }
            }
        }
        NodeCommand::Backup { dir, out: path } => {
            let a = dir.open()?;
            let bar = out.progress(0, "backup");
            let r = a.backup_with_progress(&operator(), &path, &|p| {
                bar.set_length(p.total);
                bar.set_position(p.done);
            })?;
            bar.finish_and_clear();
            out.report(&r, || {
                format!(
                    "wrote {} ({} bytes): {} entries in {} trees, node master key v{}, audit log size {}\n\
                     the key file is not in it: keep the key file, separately, to restore it",
                    r.file.display(),
                    r.bytes,
                    r.entries,
                    r.trees.len(),
                    r.kek_version,
                    r.audit_size
                )
            });
        }
        NodeCommand::Restore {
            from,
            data_dir,
            key_file,
        } => {
            let bar = out.progress(0, "restore");
            let r = amble_node::restore_with_progress(
                &from,
                &data_dir,
                key_file.as_deref(),
                &operator(),
                &|p| {
                    bar.set_length(p.total);
                    bar.set_position(p.done);
                },
            )?;
            bar.finish_and_clear();
            out.report(&r, || {
                format!(
                    "restored {} entries ({} subjects) into {}; audit log verified: size {}, root {}",
                    r.entries,
                    r.subjects,
                    r.data_dir.display(),
                    r.audit_size,
                    r.audit_root
                )
            });
        }
        NodeCommand::Pubkey { dir, out: path } => {
            let a = dir.open()?;
            let key = a.signing_key().verifying_key().to_base64();
            match path {
                Some(p) => std::fs::write(&p, format!("{key}\n"))
                    .with_context(|| format!("cannot write {}", p.display()))?,
                None => println!("{key}"),
            }
        }
        NodeCommand::Sweep(dir) => {
            let a = dir.open()?;
            let rep = a.sweep_retention(&operator(), time::OffsetDateTime::now_utc())?;
            out.report(&rep, || {
                let total: u64 = rep.removed.values().sum();
                format!("retention sweep removed {total} records {:?}", rep.removed)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a signed receipt, or writes it (mode 0600) to `path` and says so.
fn emit_receipt(
    receipt: &amble_consent::SignedReceipt,
    path: Option<&Path>,
    out: &Output,
    what: &str,
) -> Result<()> {
    match path {
        Some(p) => {
            write_private(p, receipt.bytes())?;
            if !out.json {
                println!("{what} recorded; signed receipt written to {}", p.display());
            }
        }
        None => println!("{}", String::from_utf8_lossy(receipt.bytes())),
    }
    Ok(())
}

/// Writes a file readable by its owner only (exports hold personal data): a new file put in
/// place by rename, so an existing file's mode is not kept and a symlink at `path` is
/// replaced, never followed.
pub(crate) fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    amble_crypto::write_private(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
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
