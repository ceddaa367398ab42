//! What the audit log needs from storage, and nothing more: a seam like the node's `Store`,
//! so the log's Merkle tree, proofs and group commit are written once and a second engine
//! (a SQL database reached over the network, issue 17) implements one trait.
//!
//! Four kinds of rows, all keyed by numbers or pseudonyms, never by anything a person is
//! called:
//! - entry bodies: seq → canonical entry JSON (removed by retention);
//! - hashes: (level, index) → the 32-byte hash of that perfect subtree, written once, when
//!   its last leaf arrives, and never removed — so roots and proofs survive retention;
//! - the subject index: (subject pseudonym, seq), so a person's own entries are found
//!   without a scan;
//! - one counter: the first seq whose body is still kept.
//!
//! **Contract.** [`LogStore::commit`] is atomic (a batch's bodies, hashes and index rows land
//! together or not at all) and refuses a batch whose first leaf is already stored — that is
//! how a second writer on the same storage is caught. It need not be durable; a later
//! [`LogStore::flush`] makes everything committed before it durable. Reads see every commit
//! that returned. The engine is synchronous: the log's callers run on blocking threads, and
//! an engine over the network blocks on its own runtime (see `docs/ARCHITECTURE.md`).
//!
//! sled is the embedded engine ([`sled`]); it is the only file of this crate that names it.

pub(crate) mod sled;

use crate::error::AuditError;
use crate::hash::Hash;
use amble_crypto::SubjectId;

/// One append's writes, prepared outside the engine and committed at once.
#[derive(Debug, Default)]
pub struct Batch {
    /// `(seq, canonical entry JSON)`, in seq order.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// `(level, index, hash)` of every perfect subtree the batch completes.
    pub nodes: Vec<(u8, u64, Hash)>,
    /// `(subject, seq)` of every entry that names a subject.
    pub subjects: Vec<(SubjectId, u64)>,
}

/// Where an entry body was found by a scan, and whether to go on.
pub type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, AuditError> + 'a;

/// The storage under one audit log; see the module doc for the contract.
pub trait LogStore: Send + Sync + 'static {
    /// The number of leaves whose hash is stored: the highest level-0 index plus one, or 0.
    fn leaf_count(&self) -> Result<u64, AuditError>;
    /// The first seq whose body is still kept (0 if nothing was ever pruned).
    fn pruned_before(&self) -> Result<u64, AuditError>;
    /// Records a new retention boundary; written before any body below it is removed.
    fn set_pruned_before(&self, seq: u64) -> Result<(), AuditError>;
    /// Writes `batch` atomically; refuses with [`AuditError::SecondInstance`]`(start)` when the
    /// leaf `start` (the batch's first) is already stored.
    fn commit(&self, start: u64, batch: &Batch) -> Result<(), AuditError>;
    /// Makes every commit that returned before this call durable.
    fn flush(&self) -> Result<(), AuditError>;
    /// The stored hash of the perfect subtree `index` at `level`.
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError>;
    /// Every stored hash at `level` or above, in `(level, index)` order.
    fn nodes_from(
        &self,
        level: u8,
        visit: &mut dyn FnMut(u8, u64, Hash) -> Result<(), AuditError>,
    ) -> Result<(), AuditError>;
    /// The body of entry `seq`, if it is still kept.
    fn body(&self, seq: u64) -> Result<Option<Vec<u8>>, AuditError>;
    /// Kept bodies with `from <= seq < to`, in seq order, until `visit` returns `false`.
    fn bodies(&self, from: u64, to: u64, visit: &mut Visit<'_>) -> Result<(), AuditError>;
    /// The seqs of the kept entries that name `subject`, in order.
    fn subject_seqs(&self, subject: &SubjectId) -> Result<Vec<u64>, AuditError>;
    /// Removes these bodies and their subject-index rows (retention); absent ones are skipped.
    fn remove(&self, entries: &[(u64, Option<SubjectId>)]) -> Result<(), AuditError>;
}
