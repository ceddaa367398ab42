//! The storage seam: the only file that knows the archive lives in sled.
//!
//! Trees (keys are big-endian so one subject's records are one range scan):
//! - `meta`: format version, a pepper check value (detects a wrong key file)
//! - `subjects`: subject id → created time (ms, 8 bytes)
//! - `refs`: reference pseudonym (32) → subject id (32)
//! - `subject_refs`: subject id ‖ reference pseudonym → () (reverse index)
//! - `keys`: subject id → wrapped data key
//! - `records`: subject id ‖ collection code (1) ‖ time (8) ‖ record id (8) → sealed record
//! - `consent`: subject id → sealed consent history
//! - `tombstones`: subject id → erase time (ms, 8 bytes) ‖ reason
//! - `models`: trained models (no personal data; weights only)
//!
//! Backup and restore (`backup.rs`) see every tree as raw key/value pairs through
//! [`Store::for_each_entry`] and [`Store::import_entries`].
//!
//! Nothing here sees plaintext: values are sealed or are pseudonyms and counters.

use crate::{Collection, NodeError, Result};
use amble_crypto::{SubjectId, WrappedKey};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::Path;

pub(crate) const FORMAT: &[u8] = b"amble-node/v1";

/// A stored value as the engine hands it out: cheap to clone, compared by content.
pub(crate) type Bytes = sled::IVec;

impl From<sled::Error> for NodeError {
    fn from(e: sled::Error) -> Self {
        NodeError::from(amble_audit::StorageError::from(e))
    }
}

impl From<sled::transaction::TransactionError<NodeError>> for NodeError {
    fn from(e: sled::transaction::TransactionError<NodeError>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(inner) => inner,
            sled::transaction::TransactionError::Storage(s) => NodeError::from(s),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Store {
    db: sled::Db,
    meta: Tree,
    subjects: Tree,
    refs: Tree,
    subject_refs: Tree,
    keys: Tree,
    records: Tree,
    consent: Tree,
    tombstones: Tree,
    models: Tree,
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

fn abort(e: NodeError) -> ConflictableTransactionError<NodeError> {
    ConflictableTransactionError::Abort(e)
}

fn sid(bytes: &[u8]) -> Result<SubjectId> {
    SubjectId::from_slice(bytes).ok_or_else(|| NodeError::Corrupt("subject id length".into()))
}

impl Store {
    /// Opens the database. sled releases a dropped handle's lock from a background thread a
    /// moment later, which within one process (a restore and then an open) shows as a busy
    /// lock: that is retried for up to 5 s. Another process holding the directory still gets
    /// the error after that.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let mut tries = 0;
        let db = loop {
            match sled::Config::new()
                .path(path)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => break db,
                Err(e) => {
                    let e = amble_audit::StorageError::from(e);
                    if !e.is_lock_busy() || tries >= 200 {
                        return Err(e.into());
                    }
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
            }
        };
        Ok(Store {
            meta: db.open_tree("meta")?,
            subjects: db.open_tree("subjects")?,
            refs: db.open_tree("refs")?,
            subject_refs: db.open_tree("subject_refs")?,
            keys: db.open_tree("keys")?,
            records: db.open_tree("records")?,
            consent: db.open_tree("consent")?,
            tombstones: db.open_tree("tombstones")?,
            models: db.open_tree("models")?,
            db,
        })
    }

    /// The audit log kept in the same database, so one flush makes entries and records
    /// durable together.
    pub(crate) fn audit_log(&self) -> Result<amble_audit::AuditLog> {
        Ok(amble_audit::AuditLog::open(&self.db)?)
    }

    /// The node's own settings and counters (format, ledger, federation state): typed slots by
    /// name, no personal data.
    pub(crate) fn meta(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.meta.get(key)?)
    }

    pub(crate) fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    pub(crate) fn remove_meta(&self, key: &str) -> Result<()> {
        self.meta.remove(key)?;
        Ok(())
    }

    /// Trained models by name (weights only, no personal data).
    pub(crate) fn model(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.models.get(key)?)
    }

    pub(crate) fn set_model(&self, key: &str, value: &[u8]) -> Result<()> {
        self.models.insert(key, value)?;
        Ok(())
    }

    /// A subject's sealed consent history.
    pub(crate) fn sealed_consent(&self, subject: &SubjectId) -> Result<Option<Bytes>> {
        Ok(self.consent.get(subject.as_bytes())?)
    }

    pub(crate) fn put_sealed_consent(&self, subject: &SubjectId, sealed: &[u8]) -> Result<()> {
        self.consent.insert(subject.as_bytes(), sealed)?;
        Ok(())
    }

    /// Makes every write so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    pub(crate) fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    pub(crate) fn subject_of_ref(&self, ref_pseudonym: &SubjectId) -> Result<Option<SubjectId>> {
        match self.refs.get(ref_pseudonym.as_bytes())? {
            Some(v) => Ok(Some(sid(&v)?)),
            None => Ok(None),
        }
    }

    pub(crate) fn wrapped_key(&self, subject: &SubjectId) -> Result<Option<WrappedKey>> {
        match self.keys.get(subject.as_bytes())? {
            Some(v) => Ok(Some(WrappedKey::from_bytes(&v)?)),
            None => Ok(None),
        }
    }

    /// Creates a subject with its first reference and wrapped key, unless the reference is
    /// already mapped (another writer won the race): returns the subject the ref maps to.
    pub(crate) fn create_subject(
        &self,
        ref_pseudonym: &SubjectId,
        subject: &SubjectId,
        wrapped: &WrappedKey,
        now_ms: i64,
    ) -> Result<SubjectId> {
        let wrapped = wrapped.to_bytes();
        let out = (&self.refs, &self.subject_refs, &self.keys, &self.subjects).transaction(
            |(refs, srefs, keys, subjects)| {
                if let Some(existing) = refs.get(ref_pseudonym.as_bytes())? {
                    return sid(&existing).map_err(abort);
                }
                refs.insert(ref_pseudonym.as_bytes(), subject.as_bytes())?;
                srefs.insert(
                    &pair_key(subject.as_bytes(), ref_pseudonym.as_bytes())[..],
                    &[],
                )?;
                if keys.get(subject.as_bytes())?.is_none() {
                    keys.insert(subject.as_bytes(), wrapped.as_slice())?;
                    subjects.insert(subject.as_bytes(), &now_ms.to_be_bytes())?;
                }
                Ok(*subject)
            },
        )?;
        Ok(out)
    }

    pub(crate) fn get_record(&self, key: &RecordKey) -> Result<Option<sled::IVec>> {
        Ok(self.records.get(key.encode())?)
    }

    /// Inserts sealed records in one atomic batch.
    pub(crate) fn put_records(&self, items: &[(RecordKey, Vec<u8>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(&k.encode()[..], v.as_slice());
        }
        self.records.apply_batch(batch)?;
        Ok(())
    }

    pub(crate) fn put_record(&self, key: &RecordKey, sealed: &[u8]) -> Result<()> {
        self.records.insert(key.encode(), sealed)?;
        Ok(())
    }

    /// Records of one subject in one collection with `from_ms <= time < to_ms`, time order.
    pub(crate) fn scan_records(
        &self,
        subject: &SubjectId,
        collection: Collection,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = Result<(RecordKey, sled::IVec)>> + '_ {
        let p = collection_prefix(subject, collection);
        let mut lo = [0u8; 41];
        lo[..33].copy_from_slice(&p);
        lo[33..].copy_from_slice(&time_key(from_ms));
        let mut hi = [0u8; 41];
        hi[..33].copy_from_slice(&p);
        hi[33..].copy_from_slice(&time_key(to_ms));
        self.records.range(lo..hi).map(|r| {
            let (k, v) = r?;
            Ok((RecordKey::decode(&k)?, v))
        })
    }

    /// Every record key of a subject (all collections).
    pub(crate) fn subject_record_keys(&self, subject: &SubjectId) -> Result<Vec<RecordKey>> {
        self.records
            .scan_prefix(subject.as_bytes())
            .keys()
            .map(|k| RecordKey::decode(&k?))
            .collect()
    }

    pub(crate) fn remove_record(&self, key: &RecordKey) -> Result<()> {
        self.records.remove(key.encode())?;
        Ok(())
    }

    /// All record keys, for the retention sweep.
    pub(crate) fn all_record_keys(&self) -> impl Iterator<Item = Result<RecordKey>> + '_ {
        self.records.iter().keys().map(|k| RecordKey::decode(&k?))
    }

    pub(crate) fn count_records(&self, subject: &SubjectId, c: Option<Collection>) -> usize {
        match c {
            Some(c) => self
                .records
                .scan_prefix(collection_prefix(subject, c))
                .count(),
            None => self.records.scan_prefix(subject.as_bytes()).count(),
        }
    }

    pub(crate) fn subjects(&self) -> impl Iterator<Item = Result<SubjectId>> + '_ {
        self.subjects.iter().keys().map(|k| sid(&k?))
    }

    pub(crate) fn subject_count(&self) -> usize {
        self.subjects.len()
    }

    pub(crate) fn refs_of(&self, subject: &SubjectId) -> Result<Vec<SubjectId>> {
        self.subject_refs
            .scan_prefix(subject.as_bytes())
            .keys()
            .map(|k| sid(&k?[32..]))
            .collect()
    }

    pub(crate) fn link_ref(&self, ref_pseudonym: &SubjectId, subject: &SubjectId) -> Result<()> {
        (&self.refs, &self.subject_refs).transaction(|(refs, srefs)| {
            if let Some(existing) = refs.get(ref_pseudonym.as_bytes())? {
                let existing = sid(&existing).map_err(abort)?;
                return Err(abort(NodeError::RefAlreadyLinked(existing.to_hex())));
            }
            refs.insert(ref_pseudonym.as_bytes(), subject.as_bytes())?;
            srefs.insert(
                &pair_key(subject.as_bytes(), ref_pseudonym.as_bytes())[..],
                &[],
            )?;
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn unlink_ref(&self, ref_pseudonym: &SubjectId, subject: &SubjectId) -> Result<()> {
        (&self.refs, &self.subject_refs).transaction(|(refs, srefs)| {
            refs.remove(ref_pseudonym.as_bytes())?;
            srefs.remove(&pair_key(subject.as_bytes(), ref_pseudonym.as_bytes())[..])?;
            Ok(())
        })?;
        Ok(())
    }

    /// Points every reference of `from` at `to` (for merge).
    pub(crate) fn repoint_refs(&self, from: &SubjectId, to: &SubjectId) -> Result<()> {
        let refs = self.refs_of(from)?;
        (&self.refs, &self.subject_refs).transaction(|(rt, srefs)| {
            for r in &refs {
                rt.insert(r.as_bytes(), to.as_bytes())?;
                srefs.remove(&pair_key(from.as_bytes(), r.as_bytes())[..])?;
                srefs.insert(&pair_key(to.as_bytes(), r.as_bytes())[..], &[])?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Crypto-shredding: removes the subject's wrapped key, references, consent and entry
    /// in one transaction and leaves a tombstone. Records are removed afterwards; without
    /// the key they can no longer be opened, even from a backup.
    pub(crate) fn shred_subject(
        &self,
        subject: &SubjectId,
        now_ms: i64,
        reason: &str,
    ) -> Result<()> {
        let refs = self.refs_of(subject)?;
        (
            &self.keys,
            &self.subjects,
            &self.refs,
            &self.subject_refs,
            &self.consent,
            &self.tombstones,
        )
            .transaction(|(keys, subjects, rt, srefs, consent, tomb)| {
                keys.remove(subject.as_bytes())?;
                subjects.remove(subject.as_bytes())?;
                consent.remove(subject.as_bytes())?;
                for r in &refs {
                    remove_ref(rt, srefs, subject, r)?;
                }
                let mut v = now_ms.to_be_bytes().to_vec();
                v.extend_from_slice(reason.as_bytes());
                tomb.insert(subject.as_bytes(), v)?;
                Ok(())
            })?;
        Ok(())
    }

    pub(crate) fn tombstone(&self, subject: &SubjectId) -> Result<Option<i64>> {
        Ok(self.tombstones.get(subject.as_bytes())?.and_then(|v| {
            let b: [u8; 8] = v.get(..8)?.try_into().ok()?;
            Some(i64::from_be_bytes(b))
        }))
    }

    /// Every (subject, wrapped key), for rewrapping on key rotation.
    pub(crate) fn all_wrapped_keys(&self) -> Result<Vec<(SubjectId, WrappedKey)>> {
        self.keys
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((sid(&k)?, WrappedKey::from_bytes(&v)?))
            })
            .collect()
    }

    /// Replaces wrapped keys in one atomic batch.
    pub(crate) fn put_wrapped_keys(&self, items: &[(SubjectId, WrappedKey)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (s, w) in items {
            batch.insert(s.as_bytes(), w.to_bytes());
        }
        self.keys.apply_batch(batch)?;
        Ok(())
    }
}

/// The database directory inside a data directory (`Archive` opens the same one).
pub(crate) fn db_dir(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("archive")
}

/// sled's own tree, reached through the `Db` handle rather than by name (opening it by name
/// would make a second handle on the same tree).
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

/// Raw access for backup and restore: the database as named trees of key/value pairs. Every
/// tree is carried — the archive's, the audit log's and any added later — so a backup never
/// silently leaves one out. Values stay as stored (sealed, wrapped, or pseudonymous).
impl Store {
    fn tree_by_name(&self, name: &[u8]) -> Result<Tree> {
        if name == SLED_DEFAULT_TREE {
            Ok(Tree::clone(&self.db))
        } else {
            Ok(self.db.open_tree(name)?)
        }
    }

    /// The names of every tree in the database, sorted.
    pub(crate) fn tree_names(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// How many entries a tree holds (one pass over its keys).
    pub(crate) fn tree_len(&self, name: &[u8]) -> Result<u64> {
        let mut n = 0u64;
        for k in self.tree_by_name(name)?.iter().keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }

    /// Calls `f` with every key and value of a tree, in key order.
    pub(crate) fn for_each_entry(
        &self,
        name: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        for kv in self.tree_by_name(name)?.iter() {
            let (k, v) = kv?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Writes raw entries into a tree in one atomic batch (not flushed).
    pub(crate) fn import_entries(&self, name: &[u8], items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.tree_by_name(name)?.apply_batch(batch)?;
        Ok(())
    }

    /// The master-key versions the stored data keys are wrapped under.
    pub(crate) fn wrapped_key_versions(&self) -> Result<std::collections::BTreeSet<u32>> {
        let mut out = std::collections::BTreeSet::new();
        for v in self.keys.iter().values() {
            out.insert(WrappedKey::from_bytes(&v?)?.kek_version);
        }
        Ok(out)
    }
}

fn remove_ref(
    rt: &TransactionalTree,
    srefs: &TransactionalTree,
    subject: &SubjectId,
    r: &SubjectId,
) -> std::result::Result<(), ConflictableTransactionError<NodeError>> {
    rt.remove(r.as_bytes())?;
    srefs.remove(&pair_key(subject.as_bytes(), r.as_bytes())[..])?;
    Ok(())
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
