//! The audit log on sled, the embedded engine: four trees in the service's own database, so
//! an entry and the data it describes share one write log (see [`crate::log`] for why that
//! makes the log crash-safe).
//!
//! Trees:
//! - `audit`: seq (u64 big-endian) → canonical entry JSON;
//! - `audit_nodes`: level (u8) ‖ index (u64 BE) → 32-byte hash of that perfect subtree;
//! - `audit_subject`: subject pseudonym (32) ‖ seq (u64 BE) → empty;
//! - `audit_meta`: `pruned_before` → u64 BE.

use super::{Batch, LogStore, Visit};
use crate::error::{AuditError, StorageError, StorageErrorKind};
use crate::hash::Hash;
use crate::log::AuditLog;
use amble_crypto::SubjectId;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// sled's errors, told as what they mean to a caller. sled names a directory another handle
/// still holds as an I/O error that says so; every other I/O error, corruption and sled's own
/// bugs are faults of the storage.
impl From<sled::Error> for StorageError {
    fn from(e: sled::Error) -> Self {
        let kind = match &e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StorageErrorKind::LockBusy
            }
            sled::Error::Io(_) | sled::Error::Corruption { .. } | sled::Error::ReportableBug(_) => {
                StorageErrorKind::Fault
            }
            _ => StorageErrorKind::Other,
        };
        StorageError::new(kind, e.to_string())
    }
}

impl From<sled::Error> for AuditError {
    fn from(e: sled::Error) -> Self {
        AuditError::Storage(e.into())
    }
}

/// The tree of entry bodies.
const ENTRIES_TREE: &str = "audit";
/// The tree of perfect-subtree hashes.
const NODES_TREE: &str = "audit_nodes";
/// The subject index.
const SUBJECT_TREE: &str = "audit_subject";
/// The retention counter.
const META_TREE: &str = "audit_meta";
const META_PRUNED: &[u8] = b"pruned_before";

impl AuditLog {
    /// Opens (or creates) the log in a sled database the service already holds (the node's
    /// archive, the coordinator's state), stamping entries by the system clock.
    pub fn open(db: &sled::Db) -> Result<AuditLog, AuditError> {
        AuditLog::over(Box::new(SledLog::open(db)?))
    }
}

/// [`LogStore`] on four trees of one sled database.
struct SledLog {
    db: sled::Db,
    entries: sled::Tree,
    nodes: sled::Tree,
    subjects: sled::Tree,
    meta: sled::Tree,
}

impl SledLog {
    fn open(db: &sled::Db) -> Result<SledLog, AuditError> {
        Ok(SledLog {
            db: db.clone(),
            entries: db.open_tree(ENTRIES_TREE)?,
            nodes: db.open_tree(NODES_TREE)?,
            subjects: db.open_tree(SUBJECT_TREE)?,
            meta: db.open_tree(META_TREE)?,
        })
    }
}

fn node_key(level: u8, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = level;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn subject_key(s: &SubjectId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(s.as_bytes());
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn be_u64(bytes: &[u8]) -> Result<u64, AuditError> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| AuditError::Corrupt("a stored counter or key is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(arr))
}

fn hash_of(level: u8, index: u64, v: &[u8]) -> Result<Hash, AuditError> {
    v.try_into().map_err(|_| {
        AuditError::Corrupt(format!(
            "hash at level {level} index {index} is not 32 bytes"
        ))
    })
}

impl LogStore for SledLog {
    fn leaf_count(&self) -> Result<u64, AuditError> {
        match self.nodes.scan_prefix([0u8]).next_back() {
            Some(kv) => Ok(be_u64(&kv?.0[1..])? + 1),
            None => Ok(0),
        }
    }

    fn pruned_before(&self) -> Result<u64, AuditError> {
        match self.meta.get(META_PRUNED)? {
            Some(v) => be_u64(&v),
            None => Ok(0),
        }
    }

    fn set_pruned_before(&self, seq: u64) -> Result<(), AuditError> {
        self.meta.insert(META_PRUNED, &seq.to_be_bytes())?;
        Ok(())
    }

    fn commit(&self, start: u64, batch: &Batch) -> Result<(), AuditError> {
        (&self.entries, &self.nodes, &self.subjects)
            .transaction(|(te, tn, ts)| {
                if tn.get(node_key(0, start))?.is_some() {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                for (seq, bytes) in &batch.entries {
                    te.insert(&seq.to_be_bytes(), bytes.as_slice())?;
                }
                for (l, i, h) in &batch.nodes {
                    tn.insert(&node_key(*l, *i)[..], &h[..])?;
                }
                for (s, seq) in &batch.subjects {
                    ts.insert(&subject_key(s, *seq)[..], &[] as &[u8])?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => AuditError::from(e),
                TransactionError::Abort(()) => AuditError::SecondInstance(start),
            })
    }

    fn flush(&self) -> Result<(), AuditError> {
        self.db.flush()?;
        Ok(())
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError> {
        self.nodes
            .get(node_key(level, index))?
            .map(|v| hash_of(level, index, &v))
            .transpose()
    }

    fn nodes_from(
        &self,
        level: u8,
        visit: &mut dyn FnMut(u8, u64, Hash) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        for kv in self.nodes.range([level]..) {
            let (k, v) = kv?;
            let (level, index) = (k[0], be_u64(&k[1..])?);
            visit(level, index, hash_of(level, index, &v)?)?;
        }
        Ok(())
    }

    fn body(&self, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
        Ok(self.entries.get(seq.to_be_bytes())?.map(|v| v.to_vec()))
    }

    fn bodies(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), AuditError> {
        if from >= to {
            return Ok(());
        }
        for kv in self.entries.range(from.to_be_bytes()..to.to_be_bytes()) {
            let (k, v) = kv?;
            if !visit(be_u64(&k)?, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn subject_seqs(&self, subject: &SubjectId) -> Result<Vec<u64>, AuditError> {
        self.subjects
            .scan_prefix(subject.as_bytes())
            .map(|kv| be_u64(&kv?.0[32..]))
            .collect()
    }

    fn remove(&self, entries: &[(u64, Option<SubjectId>)]) -> Result<(), AuditError> {
        let mut subjects = sled::Batch::default();
        let mut bodies = sled::Batch::default();
        for (seq, subject) in entries {
            if let Some(s) = subject {
                subjects.remove(&subject_key(s, *seq)[..]);
            }
            bodies.remove(&seq.to_be_bytes()[..]);
        }
        // Index rows first: a crash between the two leaves bodies the next prune removes,
        // never an index row that points at nothing.
        self.subjects.apply_batch(subjects)?;
        self.entries.apply_batch(bodies)?;
        Ok(())
    }
}
