//! The archive on sled: the only file of the node that knows its engine.
//!
//! sled 0.34 never completes a flush after an I/O error, so a fault on the durable path trips
//! the node's fault latch (`crate::fault`) rather than being retried in place.

use super::{Bytes, EntryVisitor, RecordKey, Store, collection_prefix, pair_key, time_key};
use crate::{Collection, NodeError, Result};
use amble_crypto::{SubjectId, WrappedKey};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::{Transactional, Tree};
use std::path::Path;

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

/// The archive's trees in one sled database (see [`super`] for what each holds).
pub(crate) struct SledStore {
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
    requests: Tree,
}

fn abort(e: NodeError) -> ConflictableTransactionError<NodeError> {
    ConflictableTransactionError::Abort(e)
}

fn sid(bytes: &[u8]) -> Result<SubjectId> {
    SubjectId::from_slice(bytes).ok_or_else(|| NodeError::Corrupt("subject id length".into()))
}

impl SledStore {
    /// Opens the database. sled releases a dropped handle's lock from a background thread a
    /// moment later, which within one process (a restore and then an open) shows as a busy
    /// lock: that is retried for up to 5 s. Another process holding the directory still gets
    /// the error after that.
    pub(super) fn open(path: &Path) -> Result<Self> {
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
        Ok(SledStore {
            meta: db.open_tree("meta")?,
            subjects: db.open_tree("subjects")?,
            refs: db.open_tree("refs")?,
            subject_refs: db.open_tree("subject_refs")?,
            keys: db.open_tree("keys")?,
            records: db.open_tree("records")?,
            consent: db.open_tree("consent")?,
            tombstones: db.open_tree("tombstones")?,
            models: db.open_tree("models")?,
            requests: db.open_tree("requests")?,
            db,
        })
    }
}

impl Store for SledStore {
    /// The audit log kept in the same database, so one flush makes entries and records
    /// durable together.
    fn audit_log(&self) -> Result<amble_audit::AuditLog> {
        Ok(amble_audit::AuditLog::open(&self.db)?)
    }

    /// The node's own settings and counters (format, ledger, federation state): typed slots by
    /// name, no personal data.
    fn meta(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.meta.get(key)?.map(Bytes::new))
    }

    fn set_meta(&self, key: &str, value: &[u8]) -> Result<()> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn remove_meta(&self, key: &str) -> Result<()> {
        self.meta.remove(key)?;
        Ok(())
    }

    /// Trained models by name (weights only, no personal data).
    fn model(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.models.get(key)?.map(Bytes::new))
    }

    fn set_model(&self, key: &str, value: &[u8]) -> Result<()> {
        self.models.insert(key, value)?;
        Ok(())
    }

    /// A subject's sealed consent history.
    fn sealed_consent(&self, subject: &SubjectId) -> Result<Option<Bytes>> {
        Ok(self.consent.get(subject.as_bytes())?.map(Bytes::new))
    }

    fn put_sealed_consent(&self, subject: &SubjectId, sealed: &[u8]) -> Result<()> {
        self.consent.insert(subject.as_bytes(), sealed)?;
        Ok(())
    }

    fn rekey_subject(
        &self,
        subject: &SubjectId,
        wrapped: &WrappedKey,
        records: &[(RecordKey, Vec<u8>)],
        consent: Option<&[u8]>,
    ) -> Result<()> {
        let wrapped = wrapped.to_bytes();
        (&self.keys, &self.records, &self.consent).transaction(|(keys, recs, cons)| {
            keys.insert(subject.as_bytes(), wrapped.as_slice())?;
            for (k, v) in records {
                recs.insert(&k.encode()[..], v.as_slice())?;
            }
            if let Some(c) = consent {
                cons.insert(subject.as_bytes(), c)?;
            }
            Ok::<_, ConflictableTransactionError<NodeError>>(())
        })?;
        Ok(())
    }

    fn put_request(&self, id: u64, value: &[u8]) -> Result<()> {
        self.requests.insert(id.to_be_bytes(), value)?;
        Ok(())
    }

    fn requests(&self) -> Result<Vec<Bytes>> {
        self.requests
            .iter()
            .values()
            .map(|v| Ok(Bytes::new(v?)))
            .collect()
    }

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    fn subject_of_ref(&self, ref_pseudonym: &SubjectId) -> Result<Option<SubjectId>> {
        match self.refs.get(ref_pseudonym.as_bytes())? {
            Some(v) => Ok(Some(sid(&v)?)),
            None => Ok(None),
        }
    }

    fn wrapped_key(&self, subject: &SubjectId) -> Result<Option<WrappedKey>> {
        match self.keys.get(subject.as_bytes())? {
            Some(v) => Ok(Some(WrappedKey::from_bytes(&v)?)),
            None => Ok(None),
        }
    }

    /// Creates a subject with its first reference and wrapped key, unless the reference is
    /// already mapped (another writer won the race): returns the subject the ref maps to.
    fn create_subject(
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

    fn get_record(&self, key: &RecordKey) -> Result<Option<Bytes>> {
        Ok(self.records.get(key.encode())?.map(Bytes::new))
    }

    /// Inserts sealed records in one atomic batch.
    fn put_records(&self, items: &[(RecordKey, Vec<u8>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(&k.encode()[..], v.as_slice());
        }
        self.records.apply_batch(batch)?;
        Ok(())
    }

    fn put_record(&self, key: &RecordKey, sealed: &[u8]) -> Result<()> {
        self.records.insert(key.encode(), sealed)?;
        Ok(())
    }

    /// Records of one subject in one collection with `from_ms <= time < to_ms`, time order.
    fn scan_records(
        &self,
        subject: &SubjectId,
        collection: Collection,
        from_ms: i64,
        to_ms: i64,
    ) -> Box<dyn Iterator<Item = Result<(RecordKey, Bytes)>> + '_> {
        let p = collection_prefix(subject, collection);
        let mut lo = [0u8; 41];
        lo[..33].copy_from_slice(&p);
        lo[33..].copy_from_slice(&time_key(from_ms));
        let mut hi = [0u8; 41];
        hi[..33].copy_from_slice(&p);
        hi[33..].copy_from_slice(&time_key(to_ms));
        Box::new(self.records.range(lo..hi).map(|r| {
            let (k, v) = r?;
            Ok((RecordKey::decode(&k)?, Bytes::new(v)))
        }))
    }

    /// Every record key of a subject (all collections).
    fn subject_record_keys(&self, subject: &SubjectId) -> Result<Vec<RecordKey>> {
        self.records
            .scan_prefix(subject.as_bytes())
            .keys()
            .map(|k| RecordKey::decode(&k?))
            .collect()
    }

    fn remove_record(&self, key: &RecordKey) -> Result<()> {
        self.records.remove(key.encode())?;
        Ok(())
    }

    /// All record keys, for the retention sweep.
    fn all_record_keys(&self) -> Box<dyn Iterator<Item = Result<RecordKey>> + '_> {
        Box::new(self.records.iter().keys().map(|k| RecordKey::decode(&k?)))
    }

    fn count_records(&self, subject: &SubjectId, c: Option<Collection>) -> usize {
        match c {
            Some(c) => self
                .records
                .scan_prefix(collection_prefix(subject, c))
                .count(),
            None => self.records.scan_prefix(subject.as_bytes()).count(),
        }
    }

    fn subjects(&self) -> Box<dyn Iterator<Item = Result<SubjectId>> + '_> {
        Box::new(self.subjects.iter().keys().map(|k| sid(&k?)))
    }

    fn subject_count(&self) -> usize {
        self.subjects.len()
    }

    fn refs_of(&self, subject: &SubjectId) -> Result<Vec<SubjectId>> {
        self.subject_refs
            .scan_prefix(subject.as_bytes())
            .keys()
            .map(|k| sid(&k?[32..]))
            .collect()
    }

    fn link_ref(&self, ref_pseudonym: &SubjectId, subject: &SubjectId) -> Result<()> {
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

    fn unlink_ref(&self, ref_pseudonym: &SubjectId, subject: &SubjectId) -> Result<()> {
        (&self.refs, &self.subject_refs).transaction(|(refs, srefs)| {
            refs.remove(ref_pseudonym.as_bytes())?;
            srefs.remove(&pair_key(subject.as_bytes(), ref_pseudonym.as_bytes())[..])?;
            Ok(())
        })?;
        Ok(())
    }

    /// Points every reference of `from` at `to` (for merge).
    fn repoint_refs(&self, from: &SubjectId, to: &SubjectId) -> Result<()> {
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
    fn shred_subject(&self, subject: &SubjectId, now_ms: i64, reason: &str) -> Result<()> {
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

    fn tombstone(&self, subject: &SubjectId) -> Result<Option<i64>> {
        Ok(self.tombstones.get(subject.as_bytes())?.and_then(|v| {
            let b: [u8; 8] = v.get(..8)?.try_into().ok()?;
            Some(i64::from_be_bytes(b))
        }))
    }

    /// Every (subject, wrapped key), for rewrapping on key rotation.
    fn all_wrapped_keys(&self) -> Result<Vec<(SubjectId, WrappedKey)>> {
        self.keys
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((sid(&k)?, WrappedKey::from_bytes(&v)?))
            })
            .collect()
    }

    /// Replaces wrapped keys in one atomic batch.
    fn put_wrapped_keys(&self, items: &[(SubjectId, WrappedKey)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (s, w) in items {
            batch.insert(s.as_bytes(), w.to_bytes());
        }
        self.keys.apply_batch(batch)?;
        Ok(())
    }

    // Raw access for backup and restore.

    /// The names of every tree in the database, sorted.
    fn tree_names(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = self.db.tree_names().iter().map(|n| n.to_vec()).collect();
        names.sort();
        names.dedup();
        names
    }

    /// How many entries a tree holds (one pass over its keys).
    fn tree_len(&self, name: &[u8]) -> Result<u64> {
        let mut n = 0u64;
        for k in self.tree_by_name(name)?.iter().keys() {
            k?;
            n += 1;
        }
        Ok(n)
    }

    /// Calls `f` with every key and value of a tree, in key order.
    fn for_each_entry(&self, name: &[u8], f: &mut EntryVisitor<'_>) -> Result<()> {
        for kv in self.tree_by_name(name)?.iter() {
            let (k, v) = kv?;
            f(&k, &v)?;
        }
        Ok(())
    }

    /// Writes raw entries into a tree in one atomic batch (not flushed).
    fn import_entries(&self, name: &[u8], items: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in items {
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.tree_by_name(name)?.apply_batch(batch)?;
        Ok(())
    }

    /// The master-key versions the stored data keys are wrapped under.
    fn wrapped_key_versions(&self) -> Result<std::collections::BTreeSet<u32>> {
        let mut out = std::collections::BTreeSet::new();
        for v in self.keys.iter().values() {
            out.insert(WrappedKey::from_bytes(&v?)?.kek_version);
        }
        Ok(out)
    }
}

/// sled's own tree, reached through the `Db` handle rather than by name (opening it by name
/// would make a second handle on the same tree).
const SLED_DEFAULT_TREE: &[u8] = b"__sled__default";

impl SledStore {
    fn tree_by_name(&self, name: &[u8]) -> Result<Tree> {
        if name == SLED_DEFAULT_TREE {
            Ok(Tree::clone(&self.db))
        } else {
            Ok(self.db.open_tree(name)?)
        }
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
