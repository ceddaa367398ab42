//! Ingest of JSON Lines files: one record per line,
//! `{"ref":"phone:+15550001","collection":"interactions","time":"2026-05-01T10:00:00Z","data":{…}}`.
//!
//! The whole file is validated before anything is written, so a bad line leaves the archive
//! exactly as it was; then records are appended in batches, each batch durable before the
//! next starts.

use crate::{Actor, Collection, NewRecord, Node, NodeError};
use amble_crypto::ExternalRef;
use serde::Deserialize;
use std::io::BufRead;
use std::path::Path;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Records per durable batch.
pub const BATCH: usize = 512;
/// How many bad lines a failed validation lists before it stops collecting.
pub const MAX_REPORTED_ERRORS: usize = 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(rename = "ref")]
    reference: String,
    collection: String,
    time: String,
    data: serde_json::Value,
}

/// One bad line of an ingest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Line number in the file, from 1.
    pub line: usize,
    /// What is wrong with the line; it names the field, never echoes the record's contents.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why an ingest did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The file could not be opened or read. If this happens part-way through an ingest, records
    /// from earlier batches are already stored.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file, as displayed.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Validation found bad lines, so nothing was written. Holds the first
    /// [`MAX_REPORTED_ERRORS`] of them, in file order.
    #[error("{} bad line(s); nothing was written. First: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    BadLines(Vec<LineError>),
    /// A line that passed validation failed when read again for writing: the file changed during
    /// the ingest. Earlier batches are stored; fix the file and ingest the rest.
    #[error(
        "{path} changed during the ingest: line {line}: {message}; the {written} records before \
         it were stored durably, the rest were not — fix the file and ingest the rest"
    )]
    Changed {
        /// The file, as displayed.
        path: String,
        /// Line number of the line that now fails, from 1.
        line: usize,
        /// What is wrong with it now.
        message: String,
        /// Records stored durably before the failure.
        written: usize,
    },
    /// Appending a batch to the node failed; that batch and everything after it were not stored.
    #[error("writing failed after {written} records were stored durably: {source}")]
    Write {
        /// Records stored durably by earlier batches.
        written: usize,
        /// Why the append failed.
        #[source]
        source: NodeError,
    },
}

/// Parses one JSONL line into a reference and a record.
pub fn parse_line(text: &str) -> Result<(ExternalRef, NewRecord), String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not a valid record: {e}"))?;
    let reference = ExternalRef::parse(&line.reference).map_err(|e| format!("`ref`: {e}"))?;
    let collection: Collection = line
        .collection
        .parse()
        .map_err(|e: amble_policy::UnknownName| e.to_string())?;
    let time = OffsetDateTime::parse(&line.time, &Rfc3339)
        .map_err(|e| format!("`time` must be RFC 3339 (e.g. 2026-05-01T10:00:00Z): {e}"))?;
    crate::archive::check_record_time(time, OffsetDateTime::now_utc())
        .map_err(|e| format!("`time`: {e}"))?;
    let data = match line.data {
        serde_json::Value::Object(m) => m,
        other => {
            return Err(format!(
                "`data` must be a JSON object, not {}",
                kind(&other)
            ));
        }
    };
    crate::archive::check_record_numbers(&data).map_err(|e| e.to_string())?;
    Ok((
        reference,
        NewRecord {
            collection,
            time,
            data,
        },
    ))
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// What one line of the file holds.
enum Read {
    Text(String),
    /// A line that is not UTF-8: a bad line, reported with its number like any other.
    NotUtf8,
}

fn lines(
    path: &Path,
) -> Result<impl Iterator<Item = (usize, Result<Read, IngestError>)>, IngestError> {
    let f = std::fs::File::open(path).map_err(|source| IngestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path.display().to_string();
    Ok(std::io::BufReader::new(f)
        .split(b'\n')
        .enumerate()
        .map(move |(i, l)| {
            let read = match l {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(mut s) => {
                        if s.ends_with('\r') {
                            s.pop();
                        }
                        Ok(Read::Text(s))
                    }
                    Err(_) => Ok(Read::NotUtf8),
                },
                Err(source) => Err(IngestError::Read {
                    path: name.clone(),
                    source,
                }),
            };
            (i + 1, read)
        }))
}

const NOT_UTF8: &str = "is not valid UTF-8 (save the file as UTF-8)";

/// Checks every line of `path`; returns the number of records, or the bad lines.
pub fn validate_file(path: &Path) -> Result<usize, IngestError> {
    let mut errors = Vec::new();
    let mut count = 0;
    for (n, line) in lines(path)? {
        let line = match line? {
            Read::Text(t) => t,
            Read::NotUtf8 => {
                errors.push(LineError {
                    line: n,
                    message: NOT_UTF8.into(),
                });
                if errors.len() >= MAX_REPORTED_ERRORS {
                    break;
                }
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(_) => count += 1,
            Err(message) => {
                errors.push(LineError { line: n, message });
                if errors.len() >= MAX_REPORTED_ERRORS {
                    break;
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(count)
    } else {
        Err(IngestError::BadLines(errors))
    }
}

/// Validates then ingests `path`; `progress` is called with the records written so far.
pub fn ingest_file(
    node: &Node,
    actor: &Actor,
    path: &Path,
    progress: &dyn Fn(usize),
) -> Result<usize, IngestError> {
    validate_file(path)?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut written = 0;
    let flush = |batch: &mut Vec<(ExternalRef, NewRecord)>, written: &mut usize| {
        node.append_batch(actor, batch)
            .map_err(|source| IngestError::Write {
                written: *written,
                source,
            })?;
        *written += batch.len();
        batch.clear();
        progress(*written);
        Ok::<(), IngestError>(())
    };
    // The file was validated above; a line that fails now means it changed underneath, and
    // the error says how much was already stored.
    let changed = |line: usize, message: String, written: usize| IngestError::Changed {
        path: path.display().to_string(),
        line,
        message,
        written,
    };
    for (n, line) in lines(path)? {
        let line = match line? {
            Read::Text(t) => t,
            Read::NotUtf8 => return Err(changed(n, NOT_UTF8.into(), written)),
        };
        if line.trim().is_empty() {
            continue;
        }
        let item = parse_line(&line).map_err(|message| changed(n, message, written))?;
        batch.push(item);
        if batch.len() == BATCH {
            flush(&mut batch, &mut written)?;
        }
    }
    if !batch.is_empty() {
        flush(&mut batch, &mut written)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_utf8_is_a_bad_line_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.jsonl");
        let good = br#"{"ref":"phone:+1","collection":"goals","time":"2026-11-01T10:00:00Z","data":{"goal":"g"}}"#;
        let mut bytes = good.to_vec();
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(b"{\"ref\":\"phone:+2\xff\"}\n");
        bytes.extend_from_slice(good);
        std::fs::write(&f, bytes).unwrap();
        match validate_file(&f) {
            Err(IngestError::BadLines(errors)) => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert_eq!(errors[0].line, 2);
                assert!(errors[0].message.contains("UTF-8"), "{errors:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_that_changes_during_ingest_says_how_much_was_stored() {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::init(&dir.path().join("n"), None).unwrap();
        let actor = Actor::local("operator:test", amble_policy::Role::Admin);
        let f = dir.path().join("in.jsonl");
        let line = |i: usize| {
            format!(
                "{{\"ref\":\"phone:+1{i:05}\",\"collection\":\"goals\",\"time\":\"2026-11-01T10:00:00Z\",\"data\":{{\"goal\":\"g\"}}}}\n"
            )
        };
        let text: String = (0..2 * BATCH).map(line).collect();
        std::fs::write(&f, &text).unwrap();
        // After the first durable batch, the rest of the file turns into something else.
        let rewrite = |written: usize| {
            if written == BATCH {
                std::fs::write(&f, "x".repeat(text.len())).unwrap();
            }
        };
        let err = ingest_file(&node, &actor, &f, &rewrite).unwrap_err();
        match &err {
            IngestError::Changed { written, .. } => assert_eq!(*written, BATCH),
            other => panic!("{other:?}"),
        }
        let m = err.to_string();
        assert!(m.contains(&format!("{BATCH} records")), "{m}");
        assert!(!m.contains("nothing was written"), "{m}");
        let stored: usize = node
            .subjects()
            .unwrap()
            .iter()
            .map(|s| node.count(s, None))
            .sum();
        assert_eq!(stored, BATCH);
    }
}
