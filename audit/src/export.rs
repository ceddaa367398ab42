//! Export for auditors and the offline verifier.
//!
//! An export directory holds:
//! - `entries.jsonl` — the stored entries, one canonical JSON entry per line, seqs contiguous;
//! - `checkpoint` — a C2SP signed note over the tree of all entries (pruned ones included);
//! - `log.pub` — the log's verifier key string (`name+hex8+base64`), name = origin;
//! - `witnessed-checkpoint` — optional: the latest checkpoint of this log that a witness (the
//!   federation's coordinator) cosigned; its tree must be a prefix of the export's, which the
//!   verifier checks by recomputing the root at its size, so an auditor learns that the history
//!   up to there was seen by someone other than the node;
//! - `prefix.json` — only if retention pruned the first entries: `first_seq` and the compact
//!   range of the pruned prefix (`peaks`, base64, largest subtree first). These hashes stand in
//!   for the pruned entries, so the root can still be recomputed; they cannot be forged to fit,
//!   because the root they lead to must match the signed checkpoint.
//!
//! What the verifier can attribute to a line: a line that does not parse, is not canonical,
//! or carries the wrong seq (a removed, inserted or reordered line) is named with its line
//! number and seq. An entry edited into another *valid canonical* entry changes only the root;
//! a root alone cannot say which leaf changed, so the verifier reports a root mismatch, and with
//! an old checkpoint (`since`) narrows it to before or after that checkpoint's size. Pinning the
//! exact line would need a signed hash per entry, which the format deliberately does not carry.

use crate::entry::{Decision, Entry};
use crate::error::{AuditError, NoteError, VerifyError};
use crate::hash::{Hash, leaf_hash};
use crate::log::AuditLog;
use crate::note::{Checkpoint, NoteSigner, NoteVerifier, open_note, verify_note};
use crate::proof::serde_b64_vec;
use crate::tree::{Frontier, PerfectNodes};
use amble_crypto::SigningKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// File name of the entries in an export directory: one canonical entry per line.
pub const ENTRIES_FILE: &str = "entries.jsonl";
/// File name of the signed checkpoint over the whole tree, pruned entries included.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// File name of the log's verifier key string; the key name is the log's origin.
pub const LOG_KEY_FILE: &str = "log.pub";
/// File name of the [`PrunedPrefix`], present only when retention pruned the first entries.
pub const PREFIX_FILE: &str = "prefix.json";
/// File name of the optional latest checkpoint a witness cosigned.
pub const WITNESSED_FILE: &str = "witnessed-checkpoint";

/// The compact range standing in for pruned entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrunedPrefix {
    /// Number of pruned entries: the seq of the first line of `entries.jsonl`.
    pub first_seq: u64,
    /// Hashes of the perfect subtrees covering seqs `0..first_seq`, largest first; one per set
    /// bit of `first_seq`.
    #[serde(with = "serde_b64_vec")]
    pub peaks: Vec<Hash>,
}

/// What [`export_dir`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The directory the export was written to.
    pub dir: PathBuf,
    /// Tree size of the signed checkpoint.
    pub size: u64,
    /// Root hash of the tree at `size`, as signed in the checkpoint.
    pub root: Hash,
    /// Seq of the first line of `entries.jsonl` (0 unless pruned).
    pub first_seq: u64,
    /// Lines written to `entries.jsonl`.
    pub entries: u64,
    /// The signed checkpoint note, as written.
    pub checkpoint: String,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::ExportIo {
        path: path.to_owned(),
        source,
    }
}

/// Writes an export of `log` to `out_dir` (created if needed), signed by `key` under the
/// name `origin`. Entries appended while exporting are left out: the export is of the tree
/// at the size read when it started.
pub fn export_dir(
    log: &AuditLog,
    key: &SigningKey,
    origin: &str,
    out_dir: &Path,
) -> Result<ExportSummary, AuditError> {
    let signer = NoteSigner::from_key(origin, key)?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let (size, root) = log.head()?;
    let first_seq = log.first_kept()?.min(size);

    let path = out_dir.join(ENTRIES_FILE);
    let file = std::fs::File::create(&path).map_err(io_err(&path))?;
    let mut w = BufWriter::new(file);
    let mut next = first_seq;
    log.for_each_raw(first_seq..size, |seq, bytes| {
        if seq != next {
            return Err(AuditError::Pruned(next));
        }
        w.write_all(bytes).map_err(io_err(&path))?;
        w.write_all(b"\n").map_err(io_err(&path))?;
        next += 1;
        Ok(())
    })?;
    if next != size {
        return Err(AuditError::Pruned(next));
    }
    w.flush().map_err(io_err(&path))?;

    let prefix_path = out_dir.join(PREFIX_FILE);
    if first_seq > 0 {
        let peaks = Frontier::peak_positions(first_seq)
            .into_iter()
            .map(|(l, i)| log.perfect(l, i))
            .collect::<Result<Vec<_>, _>>()?;
        let json = serde_json::to_string_pretty(&PrunedPrefix { first_seq, peaks })
            .map_err(|e| AuditError::Corrupt(e.to_string()))?;
        std::fs::write(&prefix_path, json + "\n").map_err(io_err(&prefix_path))?;
    } else if prefix_path.exists() {
        std::fs::remove_file(&prefix_path).map_err(io_err(&prefix_path))?;
    }

    let checkpoint = Checkpoint::new(origin, size, root)?.sign(&signer)?;
    let cp_path = out_dir.join(CHECKPOINT_FILE);
    std::fs::write(&cp_path, &checkpoint).map_err(io_err(&cp_path))?;
    let key_path = out_dir.join(LOG_KEY_FILE);
    std::fs::write(&key_path, format!("{}\n", signer.verifier())).map_err(io_err(&key_path))?;

    Ok(ExportSummary {
        dir: out_dir.to_owned(),
        size,
        root,
        first_seq,
        entries: size - first_seq,
        checkpoint,
    })
}

/// What an offline verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The log's origin (its key name), as the checkpoint's first line gives it.
    pub origin: String,
    /// The log key that signed the checkpoint (verifier key string).
    pub log_key: String,
    /// Tree size of the verified checkpoint, pruned entries included.
    pub size: u64,
    /// Root hash of the verified checkpoint, recomputed from the entries.
    pub root: Hash,
    /// Seq of the first entry present (entries before it were pruned; their hashes checked).
    pub first_seq: u64,
    /// Entries present and checked.
    pub entries: u64,
    /// Earliest and latest entry time.
    pub time_span: Option<(OffsetDateTime, OffsetDateTime)>,
    /// Entries by (purpose or `-`, decision).
    pub by_purpose: BTreeMap<(String, Decision), u64>,
    /// Entries by action.
    pub by_action: BTreeMap<String, u64>,
    /// Trusted keys other than the log key whose cosignatures verified.
    pub cosigners: Vec<String>,
    /// Signers on the checkpoint whose keys were not supplied (not checked).
    pub unknown_signers: Vec<String>,
    /// Size of the old checkpoint this export was shown to extend.
    pub consistent_with: Option<u64>,
    /// The witnessed checkpoint (`witnessed-checkpoint`), if the export carries one: its size
    /// (the export's tree was shown to extend it), the trusted witnesses whose cosignatures
    /// verified, and cosigners whose keys were not supplied.
    pub witnessed: Option<Witnessed>,
}

/// A checkpoint a witness cosigned, as the verifier established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    /// Tree size of the witnessed checkpoint; the export's first `size` entries were shown to
    /// lead to its root.
    pub size: u64,
    /// Names of trusted witness keys whose cosignatures on it verified.
    pub witnesses: Vec<String>,
    /// Names of its signers whose keys were not supplied, so were not checked.
    pub unknown_cosigners: Vec<String>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fmt_time = |t: &OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| t.to_string())
        };
        writeln!(f, "log        {}", self.origin)?;
        writeln!(f, "key        {}", self.log_key)?;
        writeln!(f, "tree size  {}", self.size)?;
        writeln!(f, "root       {}", B64.encode(self.root))?;
        if self.first_seq > 0 {
            writeln!(
                f,
                "entries    {} (seq {}..{}; {} earlier entries pruned, their hashes checked)",
                self.entries,
                self.first_seq,
                self.size.saturating_sub(1),
                self.first_seq
            )?;
        } else {
            writeln!(f, "entries    {}", self.entries)?;
        }
        match &self.time_span {
            Some((a, b)) => writeln!(f, "time span  {} .. {}", fmt_time(a), fmt_time(b))?,
            None => writeln!(f, "time span  -")?,
        }
        match self.consistent_with {
            Some(old) => writeln!(f, "extends    old checkpoint at size {old} (consistent)")?,
            None => writeln!(f, "extends    (no old checkpoint given)")?,
        }
        if self.cosigners.is_empty() {
            writeln!(f, "cosigned   by no trusted witness")?;
        } else {
            writeln!(f, "cosigned   by {}", self.cosigners.join(", "))?;
        }
        if !self.unknown_signers.is_empty() {
            writeln!(
                f,
                "unchecked  signatures by unknown keys: {}",
                self.unknown_signers.join(", ")
            )?;
        }
        match &self.witnessed {
            None => writeln!(f, "witnessed  (no witnessed checkpoint in the export)")?,
            Some(w) if !w.witnesses.is_empty() => writeln!(
                f,
                "witnessed  the first {} entries, cosigned by {} (verified)",
                w.size,
                w.witnesses.join(", ")
            )?,
            Some(w) => writeln!(
                f,
                "witnessed  the first {} entries, cosigned by {} — NOT checked: pass the witness key with --cosigner",
                w.size,
                if w.unknown_cosigners.is_empty() {
                    "nobody".to_owned()
                } else {
                    w.unknown_cosigners.join(", ")
                }
            )?,
        }
        writeln!(f, "accesses by purpose and decision:")?;
        for ((purpose, decision), n) in &self.by_purpose {
            writeln!(f, "  {purpose:<24} {decision:<6} {n}")?;
        }
        writeln!(f, "entries by action:")?;
        for (action, n) in &self.by_action {
            writeln!(f, "  {action:<24} {n}")?;
        }
        Ok(())
    }
}

/// The longest line of `entries.jsonl` the verifier reads (an entry is a few hundred bytes).
const MAX_ENTRY_LINE: u64 = 1 << 20;

fn read_to_string(path: &Path) -> Result<String, VerifyError> {
    std::fs::read_to_string(path).map_err(|source| VerifyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Only the seq of a line that is not a valid entry, to name it in the error.
#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Verifies an export directory offline.
///
/// Checks, in order: `log.pub` parses (and matches any key in `trusted` with the same name);
/// `checkpoint` is signed by that key (cosignatures by `trusted` keys are checked too, others
/// ignored) and its origin is the key name; every line of `entries.jsonl` is a canonical entry
/// with the next seq; the root recomputed from the entries (and `prefix.json` when pruned)
/// equals the checkpoint's. With `since` (an older checkpoint note from this log), it also
/// checks that the old checkpoint is signed by the same key and that its root is the root of
/// the first `old size` entries of this export — i.e. the log only grew.
pub fn verify_dir(
    dir: &Path,
    since: Option<&str>,
    trusted: &[NoteVerifier],
) -> Result<VerifyReport, VerifyError> {
    let log_key = NoteVerifier::parse(&read_to_string(&dir.join(LOG_KEY_FILE))?)
        .map_err(VerifyError::LogKey)?;
    if trusted
        .iter()
        .any(|k| k.name() == log_key.name() && *k != log_key)
    {
        return Err(VerifyError::LogKeyMismatch {
            name: log_key.name().to_owned(),
        });
    }
    let note = read_to_string(&dir.join(CHECKPOINT_FILE))?;
    let opened = verify_note(&note, &log_key, trusted).map_err(VerifyError::Checkpoint)?;
    let cp = Checkpoint::parse(&opened.text).map_err(VerifyError::Checkpoint)?;
    if cp.origin != log_key.name() {
        return Err(VerifyError::OriginMismatch {
            checkpoint: cp.origin,
            key: log_key.name().to_owned(),
        });
    }

    let old = match since {
        None => None,
        Some(old_note) => {
            let opened_old =
                open_note(old_note, std::slice::from_ref(&log_key)).map_err(|e| match e {
                    NoteError::NoKnownSignature => {
                        VerifyError::Since(NoteError::MissingSignature(log_key.name().to_owned()))
                    }
                    other => VerifyError::Since(other),
                })?;
            let old_cp = Checkpoint::parse(&opened_old.text).map_err(VerifyError::Since)?;
            if old_cp.origin != cp.origin {
                return Err(VerifyError::SinceOrigin {
                    old: old_cp.origin,
                    new: cp.origin,
                });
            }
            Some(old_cp)
        }
    };

    let witnessed_path = dir.join(WITNESSED_FILE);
    let witnessed = if witnessed_path.exists() {
        let note = read_to_string(&witnessed_path)?;
        let opened = verify_note(&note, &log_key, trusted).map_err(VerifyError::Witnessed)?;
        let wcp = Checkpoint::parse(&opened.text).map_err(VerifyError::Witnessed)?;
        if wcp.origin != cp.origin || wcp.size > cp.size {
            return Err(VerifyError::WitnessMismatch {
                size: wcp.size,
                reason: format!(
                    "it is for {:?} at size {}, the export is {:?} at size {}",
                    wcp.origin, wcp.size, cp.origin, cp.size
                ),
            });
        }
        let witnesses: Vec<String> = opened
            .verified_by
            .iter()
            .filter(|k| **k != log_key)
            .map(|k| k.name().to_owned())
            .collect();
        Some((wcp, witnesses, opened.unknown_signers))
    } else {
        None
    };
    let mut witnessed_root_seen: Option<Hash> = None;

    let prefix_path = dir.join(PREFIX_FILE);
    let mut frontier = if prefix_path.exists() {
        let p: PrunedPrefix = serde_json::from_str(&read_to_string(&prefix_path)?)
            .map_err(|e| VerifyError::Prefix(e.to_string()))?;
        Frontier::from_peaks(p.first_seq, p.peaks)
            .map_err(|e| VerifyError::Prefix(e.to_string()))?
    } else {
        Frontier::new()
    };
    let first_seq = frontier.size();
    if let Some(o) = &old {
        if o.size > cp.size {
            return Err(VerifyError::Truncated {
                old_size: o.size,
                new_size: cp.size,
            });
        }
        if o.size < first_seq {
            return Err(VerifyError::SinceInPrunedPrefix {
                old_size: o.size,
                first_kept: first_seq,
            });
        }
    }
    // The root of the export's first `old.size` entries, once the replay reaches them.
    let mut old_root_seen: Option<Hash> = None;
    let check_old = |frontier: &Frontier, seen: &mut Option<Hash>| {
        if let Some(o) = &old {
            if o.size == frontier.size() {
                *seen = Some(frontier.root());
            }
        }
    };
    let check_witnessed = |frontier: &Frontier, seen: &mut Option<Hash>| {
        if let Some((w, _, _)) = &witnessed {
            if w.size == frontier.size() {
                *seen = Some(frontier.root());
            }
        }
    };
    check_old(&frontier, &mut old_root_seen);
    check_witnessed(&frontier, &mut witnessed_root_seen);

    let path = dir.join(ENTRIES_FILE);
    let file = std::fs::File::open(&path).map_err(|source| VerifyError::Io {
        path: path.clone(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut time_span: Option<(OffsetDateTime, OffsetDateTime)> = None;
    let mut by_purpose = BTreeMap::new();
    let mut by_action = BTreeMap::new();
    loop {
        buf.clear();
        // At most one entry's worth is read into memory, whatever the file holds.
        let n = (&mut reader)
            .take(MAX_ENTRY_LINE + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| VerifyError::Io {
                path: path.clone(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if n as u64 > MAX_ENTRY_LINE {
            return Err(VerifyError::BadLine {
                line: line_no,
                reason: format!(
                    "longer than {MAX_ENTRY_LINE} bytes; an audit entry is a few hundred bytes, so \
                     this is not an entry amble wrote"
                ),
            });
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(VerifyError::BadLine {
                line: line_no,
                reason: "last line does not end with a newline; was the file truncated?".into(),
            });
        };
        let expected = frontier.size();
        let entry = match Entry::from_canonical_json(line) {
            Ok(e) => e,
            Err(source) => {
                return Err(match serde_json::from_slice::<SeqOnly>(line) {
                    Ok(s) if s.seq != expected => VerifyError::SeqGap {
                        line: line_no,
                        expected,
                        found: s.seq,
                    },
                    Ok(s) => VerifyError::BadEntry {
                        line: line_no,
                        seq: s.seq,
                        source,
                    },
                    Err(_) => VerifyError::BadLine {
                        line: line_no,
                        reason: format!("expected the entry with seq {expected}: {source}"),
                    },
                });
            }
        };
        if entry.seq != expected {
            return Err(VerifyError::SeqGap {
                line: line_no,
                expected,
                found: entry.seq,
            });
        }
        frontier.push(leaf_hash(line), |_, _, _| {});
        check_old(&frontier, &mut old_root_seen);
        check_witnessed(&frontier, &mut witnessed_root_seen);

        time_span = Some(match time_span {
            None => (entry.time, entry.time),
            Some((a, b)) => (a.min(entry.time), b.max(entry.time)),
        });
        let purpose = entry.purpose.clone().unwrap_or_else(|| "-".to_owned());
        *by_purpose.entry((purpose, entry.decision)).or_insert(0u64) += 1;
        *by_action
            .entry(entry.action.as_str().to_owned())
            .or_insert(0u64) += 1;
    }

    if frontier.size() != cp.size {
        return Err(VerifyError::SizeMismatch {
            entries: frontier.size(),
            checkpoint: cp.size,
        });
    }
    let old_matches = match (&old, old_root_seen) {
        (Some(o), Some(r)) => Some(r == o.root),
        _ => None,
    };
    let line_of = |seq: u64| seq - first_seq + 1;
    if frontier.root() != cp.root {
        let hint = match (&old, old_matches) {
            (Some(o), Some(true)) if o.size < cp.size => format!(
                "; the first {} entries match the old checkpoint, so the altered entry is on line {} or later",
                o.size,
                line_of(o.size)
            ),
            (Some(o), Some(false)) if o.size > first_seq => format!(
                "; the old checkpoint does not match either, so an entry on lines 1..={} was altered",
                line_of(o.size - 1)
            ),
            _ if first_seq > 0 => {
                "; or prefix.json does not describe the pruned entries".to_owned()
            }
            _ => String::new(),
        };
        return Err(VerifyError::RootMismatch {
            size: cp.size,
            hint,
        });
    }
    let consistent_with = match (&old, old_matches) {
        (Some(o), Some(true)) => Some(o.size),
        (Some(o), _) if o.size == 0 => Some(0),
        (Some(o), _) => {
            return Err(VerifyError::Inconsistent {
                old_size: o.size,
                hint: if o.size > first_seq {
                    format!(
                        "; the change is on lines 1..={} (or the old checkpoint is from another log with the same key)",
                        line_of(o.size - 1)
                    )
                } else {
                    String::new()
                },
            });
        }
        (None, _) => None,
    };

    // A witness the caller names must have cosigned something here: an export stripped of its
    // witnessed checkpoint (or re-signed with another key) must not pass as witnessed.
    if !trusted.is_empty() {
        let trusted_names: Vec<&str> = trusted
            .iter()
            .filter(|k| **k != log_key)
            .map(NoteVerifier::name)
            .collect();
        let cosigned_main = opened
            .verified_by
            .iter()
            .any(|k| *k != log_key && trusted_names.contains(&k.name()));
        let cosigned_witnessed = witnessed
            .as_ref()
            .is_some_and(|(_, w, _)| w.iter().any(|name| trusted_names.contains(&name.as_str())));
        if !trusted_names.is_empty() && !cosigned_main && !cosigned_witnessed {
            return Err(VerifyError::NotWitnessed(trusted_names.join(", ")));
        }
    }
    let witnessed = match witnessed {
        None => None,
        Some((w, witnesses, unknown_cosigners)) => {
            if witnessed_root_seen != Some(w.root) {
                return Err(VerifyError::WitnessMismatch {
                    size: w.size,
                    reason: "the entries do not lead to the root the witness cosigned: the log was rewritten after it was witnessed".into(),
                });
            }
            Some(Witnessed {
                size: w.size,
                witnesses,
                unknown_cosigners,
            })
        }
    };

    Ok(VerifyReport {
        witnessed,
        origin: cp.origin,
        log_key: log_key.to_string(),
        size: cp.size,
        root: cp.root,
        first_seq,
        entries: cp.size - first_seq,
        time_span,
        by_purpose,
        by_action,
        cosigners: opened
            .verified_by
            .iter()
            .filter(|k| **k != log_key)
            .map(|k| k.name().to_owned())
            .collect(),
        unknown_signers: opened.unknown_signers,
        consistent_with,
    })
}
