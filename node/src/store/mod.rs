//! The storage seam: what the node needs from storage, as one trait ([`Store`]), and the
//! engine behind it (`sled.rs`, the only file of the node that knows sled).
//!
//! The archive is kept as named trees of ordered keys (big-endian, so one subject's records
//! are one range scan):
//! - `meta`: format version, a pepper check value (detects a wrong key file), the node's own
//!   settings and counters (ledger, federation state)
//! - `subjects`: subject id → created time (ms, 8 bytes)
//! - `refs`: reference pseudonym (32) → subject id (32)
//! - `subject_refs`: subject id ‖ reference pseudonym → () (reverse index)
//! - `keys`: subject id → wrapped data key
//! - `records`: subject id ‖ collection code (1) ‖ time (8) ‖ record id (8) → sealed record
//! - `consent`: subject id → sealed consent history
//! - `tombstones`: subject id → erase time (ms, 8 bytes) ‖ reason
//! - `models`: trained models (no personal data; weights only)
//! - `requests`: request number (8) → the register's entry (JSON: pseudonym, kind, times,
//!   outcome; no personal data)
//!
//! and the audit log's own trees, in the same database so that one flush makes entries and
//! records durable together. Backup and restore (`backup.rs`) see every tree as raw key/value
//! pairs through [`Store::for_each_entry`] and [`Store::import_entries`].
//!
//! Nothing here sees plaintext: values are sealed or are pseudonyms and counters.
//!
//! **What an engine promises.** Every method is synchronous and returns once its write is
//! applied; [`Store::flush`] returns once every write before it is durable. Methods that
//! change several trees ([`Store::create_subject`], [`Store::link_ref`],
//! [`Store::shred_subject`], …) are atomic, and a batch ([`Store::put_records`]) lands whole
//! or not at all. After a crash the database holds a prefix of the writes made before it, in
//! order (the audit log's entries are written before the records they describe, and rely on
//! this). How a SQL engine reached over the network fits behind the same trait is in
//! `docs/ARCHITECTURE.md`.

mod sled;

use crate::{Collection, NodeError, Result};
use amble_crypto::{SubjectId, WrappedKey};
use std::path::Path;
use std::sync::Arc;

pub(crate) const FORMAT: &[u8] = b"amble-node/v1";

/// A stored value as an engine hands it out: the engine's own buffer (no copy), cheap to
/// clone, compared by content.
#[derive(Clone)]
pub(crate) struct Bytes(Arc<dyn AsRef<[u8]> + Send + Sync>);

impl Bytes {
    pub(crate) fn new(value: impl AsRef<[u8]> + Send + Sync + 'static) -> Self {
        Bytes(Arc::new(value))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Bytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes(<{} bytes>)", self.len())
    }
}

/// What [`Store::for_each_entry`] calls with each key and value.
pub(crate) type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// Opens (or creates) the archive's database at `path` on the node's engine.
pub(crate) fn open(path: &Path) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(sled::SledStore::open(path)?))
}

/// The database directory inside a data directory (`Archive` opens the same one).
pub(crate) fn db_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("archive")
}

/// What the node needs from storage. See the module doc for the trees and the promises.
pub(crate) trait Store: Send + Sync {
    /// The audit log kept in the same database, so one flush makes entries and records
    /// durable together.
    fn audit_log(&self) -> Result<amble_audit::AuditLog>;

    /// The node's own settings and counters (format, ledger, federation state): typed slots by
    /// name, no personal data.
    fn meta(&self, key: &str) -> Result<Option<Bytes>>;

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<()>;

    fn remove_meta(&self, key: &str) -> Result<()>;

    /// Trained models by name (weights only, no personal data).
    fn model(&self, key: &str) -> Result<Option<Bytes>>;

    fn set_model(&self, key: &str, value: &[u8]) -> Result<()>;

    /// A subject's sealed consent history.
    fn sealed_consent(&self, subject: &SubjectId) -> Result<Option<Bytes>>;

    fn put_sealed_consent(&self, subject: &SubjectId, sealed: &[u8]) -> Result<()>;

    /// Replaces a subject's data key and everything sealed under it, atomically: the new wrapped
    /// key, each of `records` re-sealed under it, and the consent history (when there is one).
    fn rekey_subject(
        &self,
        subject: &SubjectId,
        wrapped: &WrappedKey,
        records: &[(RecordKey, Vec<u8>)],
        consent: Option<&[u8]>,
    ) -> Result<()>;

    /// Files or updates one request of the register under its number.
    fn put_request(&self, id: u64, value: &[u8]) -> Result<()>;

    /// The register, by number.
    fn requests(&self) -> Result<Vec<Bytes>>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;

    fn next_id(&self) -> Result<u64>;

    fn subject_of_ref(&self, ref_pseudonym: &SubjectId) -> Result<Option<SubjectId>>;

    fn wrapped_key(&self, subject: &SubjectId) -> Result<Option<WrappedKey>>;

    /// Creates a subject with its first reference and wrapped key, unless the reference is
    /// already mapped (another writer won the race): returns the subject the ref maps to.
    fn create_subject(
        &self,
        ref_pseudonym: &SubjectId,
        subject: &SubjectId,
        wrapped: &WrappedKey,
        now_ms: i64,
    ) -> Result<SubjectId>;

    fn get_record(&self, key: &RecordKey) -> Result<Option<Bytes>>;

    /// Inserts sealed records in one atomic batch.
    fn put_records(&self, items: &[(RecordKey, Vec<u8>)]) -> Result<()>;

    fn put_record(&self, key: &RecordKey, sealed: &[u8]) -> Result<()>;

    /// Records of one subject in one collection with `from_ms <= time < to_ms`, time order.
    fn scan_records(
        &self,
        subject: &SubjectId,
        collection: Collection,
        from_ms: i64,
        to_ms: i64,
    ) -> Box<dyn Iterator<Item = Result<(RecordKey, Bytes)>> + '_>;

    /// Every record key of a subject (all collections).
    fn subject_record_keys(&self, subject: &SubjectId) -> Result<Vec<RecordKey>>;

    fn remove_record(&self, key: &RecordKey) -> Result<()>;

    /// All record keys, for the retention sweep.
    fn all_record_keys(&self) -> Box<dyn Iterator<Item = Result<RecordKey>> + '_>;

    fn count_records(&self, subject: &SubjectId, c: Option<Collection>) -> usize;

    fn subjects(&self) -> Box<dyn Iterator<Item = Result<SubjectId>> + '_>;

    fn subject_count(&self) -> usize;

    fn refs_of(&self, subject: &SubjectId) -> Result<Vec<SubjectId>>;

    fn link_ref(&self, ref_pseudonym: &SubjectId, subject: &SubjectId) -> Result<()>;

    fn unlink_ref(&self, ref_pseudonym: &SubjectId, subject: &SubjectId) -> Result<()>;

    /// Points every reference of `from` at `to` (for merge).
    fn repoint_refs(&self, from: &SubjectId, to: &SubjectId) -> Result<()>;

    /// Crypto-shredding: removes the subject's wrapped key, references, consent and entry
    /// in one transaction and leaves a tombstone. Records are removed afterwards; without
    /// the key they can no longer be opened, even from a backup.
    fn shred_subject(&self, subject: &SubjectId, now_ms: i64, reason: &str) -> Result<()>;

    fn tombstone(&self, subject: &SubjectId) -> Result<Option<i64>>;

    /// Every (subject, wrapped key), for rewrapping on key rotation.
    fn all_wrapped_keys(&self) -> Result<Vec<(SubjectId, WrappedKey)>>;

    /// Replaces wrapped keys in one atomic batch.
    fn put_wrapped_keys(&self, items: &[(SubjectId, WrappedKey)]) -> Result<()>;

    // Raw access for backup and restore: the database as named trees of key/value pairs. Every
    // tree is carried — the archive's, the audit log's and any added later — so a backup never
    // silently leaves one out. Values stay as stored (sealed, wrapped, or pseudonymous).

    /// The names of every tree in the database, sorted.
    fn tree_names(&self) -> Vec<Vec<u8>>;

    /// How many entries a tree holds (one pass over its keys).
    fn tree_len(&self, name: &[u8]) -> Result<u64>;

    /// Calls `f` with every key and value of a tree, in key order.
    fn for_each_entry(&self, name: &[u8], f: &mut EntryVisitor<'_>) -> Result<()>;

    /// Writes raw entries into a tree in one atomic batch (not flushed).
    fn import_entries(&self, name: &[u8], items: &[(Vec<u8>, Vec<u8>)]) -> Result<()>;

    /// The master-key versions the stored data keys are wrapped under.
    fn wrapped_key_versions(&self) -> Result<std::collections::BTreeSet<u32>>;
}

/// A record's place: subject, collection, time (ms since epoch) and a unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RecordKey {
    pub subject: SubjectId,
    pub collection: Collection,
    pub time_ms: i64,
    pub id: u64,
}

impl RecordKey {
    pub(crate) const LEN: usize = 32 + 1 + 8 + 8;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut k = [0u8; Self::LEN];
        k[..32].copy_from_slice(self.subject.as_bytes());
        k[32] = crate::collection::code(self.collection);
        k[33..41].copy_from_slice(&time_key(self.time_ms));
        k[41..49].copy_from_slice(&self.id.to_be_bytes());
        k
    }

    pub(crate) fn decode(k: &[u8]) -> Result<Self> {
        if k.len() != Self::LEN {
            return Err(NodeError::Corrupt(format!(
                "record key of {} bytes",
                k.len()
            )));
        }
        let subject = SubjectId::from_slice(&k[..32])
            .ok_or_else(|| NodeError::Corrupt("record key subject".into()))?;
        let collection = crate::collection::from_code(k[32])
            .ok_or_else(|| NodeError::Corrupt(format!("collection code {}", k[32])))?;
        let mut t = [0u8; 8];
        t.copy_from_slice(&k[33..41]);
        let mut id = [0u8; 8];
        id.copy_from_slice(&k[41..49]);
        Ok(RecordKey {
            subject,
            collection,
            time_ms: time_from_key(t),
            id: u64::from_be_bytes(id),
        })
    }

    /// The bytes bound into the record's AAD besides subject and collection.
    pub(crate) fn aad_id(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&time_key(self.time_ms));
        b[8..].copy_from_slice(&self.id.to_be_bytes());
        b
    }
}

/// Order-preserving encoding of a signed time: flip the sign bit.
fn time_key(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn time_from_key(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

fn collection_prefix(subject: &SubjectId, c: Collection) -> [u8; 33] {
    let mut p = [0u8; 33];
    p[..32].copy_from_slice(subject.as_bytes());
    p[32] = crate::collection::code(c);
    p
}

fn pair_key(a: &[u8; 32], b: &[u8; 32]) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(a);
    k[32..].copy_from_slice(b);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn record_keys_round_trip_and_sort_by_time(a in any::<i64>(), b in any::<i64>(), id in any::<u64>()) {
            let s = SubjectId::from_bytes([3; 32]);
            let ka = RecordKey { subject: s, collection: Collection::Events, time_ms: a, id };
            let kb = RecordKey { time_ms: b, ..ka };
            prop_assert_eq!(RecordKey::decode(&ka.encode()).unwrap(), ka);
            prop_assert_eq!(a.cmp(&b), ka.encode().cmp(&kb.encode()));
        }
    }
}
