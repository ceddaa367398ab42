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
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why an ingest did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{} bad line(s); nothing was written. First: {}", .0.len(), .0.first().map(|e| e.to_string()).unwrap_or_default())]
    BadLines(Vec<LineError>),
    #[error("writing failed after {written} records were stored durably: {source}")]
    Write {
        written: usize,
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
    let data = match line.data {
        serde_json::Value::Object(m) => m,
        other => {
            return Err(format!(
                "`data` must be a JSON object, not {}",
                kind(&other)
            ));
        }
    };
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

fn lines(
    path: &Path,
) -> Result<impl Iterator<Item = (usize, std::io::Result<String>)>, IngestError> {
    let f = std::fs::File::open(path).map_err(|source| IngestError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(std::io::BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l)))
}

/// Checks every line of `path`; returns the number of records, or the bad lines.
pub fn validate_file(path: &Path) -> Result<usize, IngestError> {
    let mut errors = Vec::new();
    let mut count = 0;
    for (n, line) in lines(path)? {
        let line = line.map_err(|source| IngestError::Read {
            path: path.display().to_string(),
            source,
        })?;
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
    for (n, line) in lines(path)? {
        let line = line.map_err(|source| IngestError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        // The file was validated above; a line that fails now means it changed underneath.
        let item = parse_line(&line).map_err(|message| {
            IngestError::BadLines(vec![LineError {
                line: n,
                message: format!("{message} (file changed during ingest)"),
            }])
        })?;
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
