//! The encrypted life archive: subjects, their references, and sealed records.

pub(crate) use crate::store::RecordKey;
use crate::store::{FORMAT, Store};
use crate::{Collection, NodeError, Result};
use amble_audit::Clock;
use amble_crypto::{
    DataKey, ExternalRef, Keyring, RecordAad, SubjectId, WrappedKey, open as open_sealed, seal,
};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::OffsetDateTime;

const DB_DIR: &str = "archive";
const KEY_FILE: &str = "node.key";
const PEPPER_CHECK_REF: &str = "amble:pepper-check";
/// The `schema` value of every [`SubjectExport`]; changes when the document's shape does.
pub const EXPORT_SCHEMA: &str = "amble.export/v1";

/// A record to append: which collection, when it happened, and its fields.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The collection the record belongs to; its retention and the purposes that may read it
    /// follow from the policy.
    pub collection: Collection,
    /// When the event happened, not when it was ingested; at most a day after the node's clock.
    pub time: OffsetDateTime,
    /// The record's fields. Every number must be exact as a double (within ±2^53); put
    /// identifiers and large amounts in strings.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A decrypted record. Only code inside the node sees one; callers outside get projections.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub id: u64,
    pub collection: Collection,
    pub time: OffsetDateTime,
    pub data: serde_json::Value,
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The subject the record was filed under (new if the reference was unknown).
    pub subject: SubjectId,
    /// The record's id, unique within this archive.
    pub record_id: u64,
}

/// A half-open time range `[from, to)`; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimeRange {
    /// Earliest time included, or `None` for no lower bound.
    pub from: Option<OffsetDateTime>,
    /// First time excluded, or `None` for no upper bound.
    pub to: Option<OffsetDateTime>,
}

impl TimeRange {
    /// Every time: no bound on either side.
    pub const ALL: TimeRange = TimeRange {
        from: None,
        to: None,
    };
    fn bounds_ms(&self) -> (i64, i64) {
        (
            self.from.map_or(i64::MIN, to_ms),
            self.to.map_or(i64::MAX, to_ms),
        )
    }
}

/// Everything the archive holds about one subject (GDPR Art. 15/20), as one document.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectExport {
    /// Always [`EXPORT_SCHEMA`].
    pub schema: &'static str,
    /// The subject's pseudonym in hex (never an external reference).
    pub subject: String,
    /// When the export was made, by the node's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub exported_at: OffsetDateTime,
    /// How many external references are linked to the subject (the references themselves are
    /// not stored, so cannot be exported).
    pub reference_count: usize,
    /// Records in the export, over all collections.
    pub record_count: usize,
    /// The decrypted records by collection name, each in time order; collections without records
    /// are left out.
    pub records: BTreeMap<&'static str, Vec<ExportedRecord>>,
}

/// One decrypted record in a [`SubjectExport`].
#[derive(Debug, Clone, Serialize)]
pub struct ExportedRecord {
    /// The record's id, unique within the archive.
    pub id: u64,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The record's fields, as appended.
    pub data: serde_json::Value,
}

/// What an erase did.
#[derive(Debug, Clone, Serialize)]
pub struct EraseReport {
    /// The erased subject's pseudonym in hex.
    pub subject: String,
    /// Records deleted; they were unreadable already once the data key was destroyed.
    pub records_deleted: usize,
    /// External references that pointed at the subject and no longer resolve.
    pub references_removed: usize,
}

/// What a key rotation did.
#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    /// The master key version every data key is now wrapped under.
    pub new_version: u32,
    /// Master key versions removed from the key file. Data keys wrapped only under them (in an
    /// older backup, say) no longer open, which is what completes an erasure.
    pub retired_versions: Vec<u32>,
    /// Data keys rewrapped under the new version (records themselves are not re-encrypted).
    pub keys_rewrapped: usize,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    /// Pseudonym (hex) of the subject that remains.
    pub kept: String,
    /// Pseudonym (hex) of the subject merged in; its data key is destroyed.
    pub absorbed: String,
    /// Records re-sealed under the kept subject's key.
    pub records_moved: usize,
    /// External references re-pointed to the kept subject.
    pub references_moved: usize,
}

/// A node's life archive, opened on its data directory with its key file.
pub(crate) struct Archive {
    store: Arc<dyn Store>,
    /// What "now" is for the archive's own time stamps (the node's clock).
    clock: Arc<dyn Clock>,
    keyring: Keyring,
    key_path: PathBuf,
    data_dir: PathBuf,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("data_dir", &self.data_dir)
            .field("keyring", &self.keyring)
            .finish()
    }
}

/// How far ahead of this node's clock a record's time may be (clocks of the systems that feed
/// it differ a little).
pub(crate) const MAX_FUTURE: time::Duration = time::Duration::days(1);

/// A record's time is when it happened: one further ahead than [`MAX_FUTURE`] is refused, or
/// it would be hidden from every read (reads and retention look back from now) and never swept.
pub(crate) fn check_record_time(t: OffsetDateTime, now: OffsetDateTime) -> Result<()> {
    match now.checked_add(MAX_FUTURE) {
        Some(limit) if t > limit => Err(NodeError::TimeOutOfRange(format!(
            "{t} is more than a day after now ({now}); a record's time is when it happened"
        ))),
        _ => Ok(()),
    }
}

/// The largest integer every JSON reader holds exactly (2^53), as RFC 8785 and I-JSON assume.
pub(crate) const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// Every number in a record must be exact as an IEEE 754 double: signed exports are in RFC
/// 8785 form, which writes each number as a double, so a larger integer would be signed as a
/// rounded value that another record shares. Identifiers such as account numbers belong in
/// strings.
pub(crate) fn check_record_numbers(
    data: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    fn walk(v: &serde_json::Value, path: &mut Vec<String>) -> Result<()> {
        match v {
            serde_json::Value::Number(n) => {
                let exact = match (n.as_u64(), n.as_i64()) {
                    (Some(u), _) => u <= MAX_EXACT_INTEGER,
                    (None, Some(i)) => i.unsigned_abs() <= MAX_EXACT_INTEGER,
                    (None, None) => n.as_f64().is_some_and(f64::is_finite),
                };
                if exact {
                    Ok(())
                } else {
                    Err(NodeError::NumberNotExact(format!(
                        "{} = {n} is beyond ±2^53, which signed exports cannot hold exactly; \
                         store identifiers and large amounts as strings",
                        path.join(".")
                    )))
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(i.to_string());
                    walk(x, path)?;
                    path.pop();
                }
                Ok(())
            }
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    path.push(k.clone());
                    walk(x, path)?;
                    path.pop();
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    let mut path = Vec::new();
    for (k, v) in data {
        path.push(k.clone());
        walk(v, &mut path)?;
        path.pop();
    }
    Ok(())
}

pub(crate) fn to_ms(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn from_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|_| NodeError::TimeOutOfRange(ms.to_string()))
}

/// The key file a data directory uses when none is given.
pub fn default_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

impl Archive {
    /// Reads time from `clock` from now on (the node's clock).
    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Creates a data directory: a new keyring (mode 0600) and an empty archive.
    pub(crate) fn init(data_dir: &Path, key_file: Option<&Path>) -> Result<Self> {
        let db_path = data_dir.join(DB_DIR);
        if db_path.exists() {
            return Err(NodeError::AlreadyInitialised(data_dir.to_owned()));
        }
        amble_crypto::create_private_dir(data_dir).map_err(|source| NodeError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let key_path = key_file.map_or_else(|| default_key_file(data_dir), Path::to_owned);
        let keyring = Keyring::create(&key_path)?;
        let store = crate::store::open(&db_path)?;
        store.set_meta("format", FORMAT)?;
        store.set_meta("pepper_check", pepper_check(&keyring)?.as_bytes())?;
        store.flush()?;
        Ok(Archive {
            store,
            clock: amble_audit::clock::system(),
            keyring,
            key_path,
            data_dir: data_dir.to_owned(),
        })
    }

    /// Opens an initialised data directory. Finishes a key rotation a crash interrupted.
    pub(crate) fn open(data_dir: &Path, key_file: Option<&Path>) -> Result<Self> {
        let db_path = data_dir.join(DB_DIR);
        if !db_path.is_dir() {
            return Err(NodeError::NotInitialised(data_dir.to_owned()));
        }
        let key_path = key_file.map_or_else(|| default_key_file(data_dir), Path::to_owned);
        let keyring = Keyring::load(&key_path)?;
        let store = crate::store::open(&db_path)?;
        match store.meta("format")? {
            Some(f) if f.as_ref() == FORMAT => {}
            _ => return Err(NodeError::NotInitialised(data_dir.to_owned())),
        }
        let check = store.meta("pepper_check")?;
        if check.as_deref() != Some(pepper_check(&keyring)?.as_bytes()) {
            return Err(NodeError::WrongKeyFile { path: key_path });
        }
        let mut archive = Archive {
            store,
            clock: amble_audit::clock::system(),
            keyring,
            key_path,
            data_dir: data_dir.to_owned(),
        };
        if archive.keyring.versions().len() > 1 {
            archive.finish_rotation()?;
        }
        Ok(archive)
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The pseudonym an external reference maps to under this node's pepper.
    pub(crate) fn pseudonym(&self, r: &ExternalRef) -> SubjectId {
        SubjectId::derive(self.keyring.pepper(), r)
    }

    /// The subject a reference is linked to, if any.
    pub(crate) fn resolve(&self, r: &ExternalRef) -> Result<Option<SubjectId>> {
        self.subject_of_pseudonym(&self.pseudonym(r))
    }

    /// The subject of `r`, created (with its data key) if the reference is new.
    pub(crate) fn ensure_subject(&self, r: &ExternalRef) -> Result<SubjectId> {
        Ok(self.key_for_append(self.pseudonym(r))?.0)
    }

    /// The subject's consent history, opened with its data key (empty if none yet).
    pub(crate) fn load_consent(
        &self,
        subject: &SubjectId,
    ) -> Result<amble_consent::ConsentHistory> {
        match self.store.sealed_consent(subject)? {
            None => Ok(amble_consent::ConsentHistory::new()),
            Some(sealed) => {
                let dek = self.data_key(subject)?;
                let plain = open_sealed(&dek, &consent_aad(subject), &sealed)?;
                Ok(amble_consent::ConsentHistory::from_json_bytes(
                    plain.as_bytes(),
                )?)
            }
        }
    }

    /// Seals and stores the subject's consent history (not flushed).
    pub(crate) fn save_consent(
        &self,
        subject: &SubjectId,
        history: &amble_consent::ConsentHistory,
    ) -> Result<()> {
        let dek = self.data_key(subject)?;
        let plain = amble_crypto::Plaintext::new(history.to_json_bytes());
        let sealed = seal(&dek, &consent_aad(subject), plain.as_bytes())?;
        self.store.put_sealed_consent(subject, &sealed)?;
        Ok(())
    }

    /// Keys of records older than their collection's retention at `now`.
    pub(crate) fn expired_records(
        &self,
        retention: impl Fn(Collection) -> Option<time::Duration>,
        now: OffsetDateTime,
    ) -> Result<Vec<RecordKey>> {
        let mut out = Vec::new();
        for k in self.store.all_record_keys() {
            let k = k?;
            // A retention longer than the calendar reaches back (P20000Y) expires nothing.
            if let Some(cutoff) = retention(k.collection).and_then(|keep| now.checked_sub(keep))
                && k.time_ms < to_ms(cutoff)
            {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Deletes the given records and flushes.
    pub(crate) fn remove_records(&self, keys: &[RecordKey]) -> Result<()> {
        for k in keys {
            self.store.remove_record(k)?;
        }
        self.store.flush()
    }

    /// The subject a reference pseudonym is linked to, if any.
    pub(crate) fn subject_of_pseudonym(&self, ref_p: &SubjectId) -> Result<Option<SubjectId>> {
        self.store.subject_of_ref(ref_p)
    }

    /// Like [`Archive::resolve`], but an unknown reference is an error.
    pub(crate) fn subject_of(&self, r: &ExternalRef) -> Result<SubjectId> {
        self.resolve(r)?.ok_or(NodeError::UnknownRef)
    }

    /// The subject's data key, creating subject and key on the reference's first record.
    fn key_for_append(&self, ref_p: SubjectId) -> Result<(SubjectId, DataKey)> {
        if let Some(subject) = self.store.subject_of_ref(&ref_p)? {
            return Ok((subject, self.data_key(&subject)?));
        }
        let dek = DataKey::generate(1)?;
        let wrapped = self.keyring.wrap(&ref_p, &dek)?;
        let subject =
            self.store
                .create_subject(&ref_p, &ref_p, &wrapped, to_ms(self.clock.now()))?;
        Ok((subject, self.data_key(&subject)?))
    }

    pub(crate) fn data_key(&self, subject: &SubjectId) -> Result<DataKey> {
        let w = self
            .store
            .wrapped_key(subject)?
            .ok_or_else(|| NodeError::UnknownSubject(subject.to_hex()))?;
        Ok(self.keyring.unwrap(subject, &w)?)
    }

    /// Appends records with one flush at the end (group commit): when it returns, all are
    /// durable; if it fails or the process dies, none of them was acknowledged.
    pub(crate) fn append_batch(&self, items: &[(ExternalRef, NewRecord)]) -> Result<Vec<Appended>> {
        let mut keys = HashMap::new();
        let mut sealed = Vec::with_capacity(items.len());
        let out = items
            .iter()
            .map(|(r, rec)| {
                let (key, bytes) = self.seal_new(r, rec, &mut keys)?;
                sealed.push((key, bytes));
                Ok(Appended {
                    subject: key.subject,
                    record_id: key.id,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // One atomic batch: the records of a batch land together or not at all.
        self.store.put_records(&sealed)?;
        self.store.flush()?;
        Ok(out)
    }

    /// Places and seals one new record (creating its subject on first sight).
    fn seal_new(
        &self,
        r: &ExternalRef,
        rec: &NewRecord,
        keys: &mut HashMap<SubjectId, (SubjectId, DataKey)>,
    ) -> Result<(RecordKey, Vec<u8>)> {
        let ref_p = self.pseudonym(r);
        let (subject, dek) = match keys.get(&ref_p) {
            Some(k) => k.clone(),
            None => {
                let k = self.key_for_append(ref_p)?;
                keys.insert(ref_p, k.clone());
                k
            }
        };
        let key = RecordKey {
            subject,
            collection: rec.collection,
            time_ms: to_ms(rec.time),
            id: self.store.next_id()?,
        };
        let plain = serde_json::to_vec(&rec.data)
            .map_err(|e| NodeError::Corrupt(format!("record does not serialise: {e}")))?;
        let plain = amble_crypto::Plaintext::new(plain);
        let sealed = seal_record(&dek, &key, plain.as_bytes())?;
        Ok((key, sealed))
    }

    /// Decrypts a subject's records of one collection in a time range, in time order.
    pub(crate) fn read_records_with(
        &self,
        dek: &DataKey,
        subject: &SubjectId,
        collection: Collection,
        range: TimeRange,
    ) -> Result<Vec<Record>> {
        let (from, to) = range.bounds_ms();
        self.store
            .scan_records(subject, collection, from, to)
            .map(|item| {
                let (key, sealed) = item?;
                open_record(dek, &key, &sealed)
            })
            .collect()
    }

    /// How many records a subject has (in one collection, or in all).
    pub(crate) fn count(&self, subject: &SubjectId, collection: Option<Collection>) -> usize {
        self.store.count_records(subject, collection)
    }

    /// Every subject's pseudonym (never an external reference).
    pub(crate) fn subjects(&self) -> Result<Vec<SubjectId>> {
        self.store.subjects().collect()
    }

    pub(crate) fn subject_count(&self) -> usize {
        self.store.subject_count()
    }

    /// When the subject was erased, if it was.
    pub(crate) fn erased_at(&self, subject: &SubjectId) -> Result<Option<OffsetDateTime>> {
        self.store.tombstone(subject)?.map(from_ms).transpose()
    }

    /// Links `new` to the subject `existing` belongs to (unified identity).
    pub(crate) fn link(&self, existing: &ExternalRef, new: &ExternalRef) -> Result<SubjectId> {
        let subject = self.subject_of(existing)?;
        self.store.link_ref(&self.pseudonym(new), &subject)?;
        self.store.flush()?;
        Ok(subject)
    }

    /// Removes one reference from its subject; the last reference cannot be removed.
    pub(crate) fn unlink(&self, r: &ExternalRef) -> Result<SubjectId> {
        let ref_p = self.pseudonym(r);
        let subject = self
            .store
            .subject_of_ref(&ref_p)?
            .ok_or(NodeError::UnknownRef)?;
        if self.store.refs_of(&subject)?.len() <= 1 {
            return Err(NodeError::LastRef);
        }
        self.store.unlink_ref(&ref_p, &subject)?;
        self.store.flush()?;
        Ok(subject)
    }

    /// Merges the subject of `absorb` into the subject of `keep`: records are re-sealed
    /// under the kept subject's key, references follow, the absorbed key is destroyed.
    pub(crate) fn merge(&self, keep: &ExternalRef, absorb: &ExternalRef) -> Result<MergeReport> {
        let kept = self.subject_of(keep)?;
        let gone = self.subject_of(absorb)?;
        if kept == gone {
            return Ok(MergeReport {
                kept: kept.to_hex(),
                absorbed: gone.to_hex(),
                records_moved: 0,
                references_moved: 0,
            });
        }
        let kept_key = self.data_key(&kept)?;
        let gone_key = self.data_key(&gone)?;
        let keys = self.store.subject_record_keys(&gone)?;
        // Copy first and flush: a crash leaves duplicates under `kept`, never a loss.
        let mut moved = Vec::with_capacity(keys.len());
        for old in &keys {
            let sealed = self
                .store
                .get_record(old)?
                .ok_or_else(|| NodeError::Corrupt("record vanished during merge".into()))?;
            let rec = open_record(&gone_key, old, &sealed)?;
            let new_key = RecordKey {
                subject: kept,
                ..*old
            };
            let plain = amble_crypto::Plaintext::new(
                serde_json::to_vec(&rec.data).map_err(|e| NodeError::Corrupt(e.to_string()))?,
            );
            self.store.put_record(
                &new_key,
                &seal_record(&kept_key, &new_key, plain.as_bytes())?,
            )?;
            moved.push(*old);
        }
        let refs = self.store.refs_of(&gone)?.len();
        self.store.repoint_refs(&gone, &kept)?;
        self.store.flush()?;
        self.store
            .shred_subject(&gone, to_ms(self.clock.now()), "merged")?;
        for k in &moved {
            self.store.remove_record(k)?;
        }
        self.store.flush()?;
        Ok(MergeReport {
            kept: kept.to_hex(),
            absorbed: gone.to_hex(),
            records_moved: moved.len(),
            references_moved: refs,
        })
    }

    /// Corrects record `record_id` of `subject`: each field in `fields` replaces the field of
    /// that name (or is added), the others stay. The corrected record is sealed in place of the
    /// old one, under the same key and time, so no read returns the old value afterwards.
    pub(crate) fn rectify(
        &self,
        subject: &SubjectId,
        record_id: u64,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Collection> {
        let key = self
            .store
            .subject_record_keys(subject)?
            .into_iter()
            .find(|k| k.id == record_id)
            .ok_or(NodeError::UnknownRecord(record_id))?;
        let dek = self.data_key(subject)?;
        let sealed = self
            .store
            .get_record(&key)?
            .ok_or(NodeError::UnknownRecord(record_id))?;
        let record = open_record(&dek, &key, &sealed)?;
        let serde_json::Value::Object(mut data) = record.data else {
            return Err(NodeError::Corrupt(format!(
                "record {record_id} is not a JSON object"
            )));
        };
        for (name, value) in fields {
            data.insert(name.clone(), value.clone());
        }
        check_record_numbers(&data)?;
        let corrected = amble_crypto::Plaintext::new(
            serde_json::to_vec(&data).map_err(|e| NodeError::Corrupt(e.to_string()))?,
        );
        // The corrected record and everything else of the person's is sealed under a new data
        // key, in one atomic write: the old value, wherever the storage engine still keeps its
        // bytes, stays under a key that no longer exists in the archive (and, once the master
        // key is rotated, in no key file either).
        let new_dek = DataKey::generate(dek.version().wrapping_add(1))?;
        let wrapped = self.keyring.wrap(subject, &new_dek)?;
        let mut resealed = Vec::new();
        for k in self.store.subject_record_keys(subject)? {
            let Some(sealed) = self.store.get_record(&k)? else {
                continue;
            };
            let rid = k.aad_id();
            let aad = RecordAad {
                subject: &k.subject,
                collection: k.collection.as_str(),
                record_id: &rid,
            };
            let resealed_record = if k.id == record_id {
                seal_record(&new_dek, &k, corrected.as_bytes())?
            } else {
                seal(&new_dek, &aad, open_sealed(&dek, &aad, &sealed)?.as_bytes())?
            };
            resealed.push((k, resealed_record));
        }
        let consent = match self.store.sealed_consent(subject)? {
            None => None,
            Some(sealed) => {
                let plain = open_sealed(&dek, &consent_aad(subject), &sealed)?;
                Some(seal(&new_dek, &consent_aad(subject), plain.as_bytes())?)
            }
        };
        self.store
            .rekey_subject(subject, &wrapped, &resealed, consent.as_deref())?;
        self.store.flush()?;
        Ok(key.collection)
    }

    /// Everything about one subject, decrypted, as one document.
    pub(crate) fn export_subject(&self, subject: &SubjectId) -> Result<SubjectExport> {
        let mut records = BTreeMap::new();
        let mut count = 0;
        let dek = self.data_key(subject)?;
        for &c in Collection::ALL {
            let recs = self.read_records_with(&dek, subject, c, TimeRange::ALL)?;
            count += recs.len();
            if !recs.is_empty() {
                records.insert(
                    c.as_str(),
                    recs.into_iter()
                        .map(|r| ExportedRecord {
                            id: r.id,
                            time: r.time,
                            data: r.data,
                        })
                        .collect(),
                );
            }
        }
        Ok(SubjectExport {
            schema: EXPORT_SCHEMA,
            subject: subject.to_hex(),
            exported_at: self.clock.now(),
            reference_count: self.store.refs_of(subject)?.len(),
            record_count: count,
            records,
        })
    }

    /// Erases a subject: destroys its data key first (crypto-shredding, so backups become
    /// unreadable once the wrapping master key is retired), then deletes its records and links,
    /// leaving a tombstone.
    pub(crate) fn erase_subject(&self, subject: &SubjectId) -> Result<EraseReport> {
        let refs = self.store.refs_of(subject)?.len();
        self.store
            .shred_subject(subject, to_ms(self.clock.now()), "erased")?;
        self.store.flush()?;
        let keys = self.store.subject_record_keys(subject)?;
        for k in &keys {
            self.store.remove_record(k)?;
        }
        self.store.flush()?;
        Ok(EraseReport {
            subject: subject.to_hex(),
            records_deleted: keys.len(),
            references_removed: refs,
        })
    }

    /// Rotates the node master key: a new KEK version, every data key rewrapped under it,
    /// then the old versions retired. Records are never re-encrypted. The key file is
    /// saved with both versions before any rewrap, so a crash at any point loses nothing;
    /// the next open finishes the job.
    pub(crate) fn rotate_key(&mut self) -> Result<RotateReport> {
        self.keyring.rotate()?;
        self.keyring.save(&self.key_path)?;
        self.finish_rotation()
    }

    fn finish_rotation(&mut self) -> Result<RotateReport> {
        let current = self.keyring.current_version();
        let stale: Vec<(SubjectId, WrappedKey)> = self
            .store
            .all_wrapped_keys()?
            .into_iter()
            .filter(|(_, w)| w.kek_version != current)
            .collect();
        let mut rewrapped = Vec::with_capacity(stale.len());
        for chunk in stale.chunks(1024) {
            rewrapped.clear();
            for (s, w) in chunk {
                let dek = self.keyring.unwrap(s, w)?;
                rewrapped.push((*s, self.keyring.wrap(s, &dek)?));
            }
            self.store.put_wrapped_keys(&rewrapped)?;
        }
        self.store.flush()?;
        let retired = self.keyring.retire_all_but_current();
        self.keyring.save(&self.key_path)?;
        Ok(RotateReport {
            new_version: current,
            retired_versions: retired,
            keys_rewrapped: stale.len(),
        })
    }

    /// Makes every write so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        self.store.flush()
    }
}

fn seal_record(dek: &DataKey, key: &RecordKey, plain: &[u8]) -> Result<Vec<u8>> {
    let rid = key.aad_id();
    let aad = RecordAad {
        subject: &key.subject,
        collection: key.collection.as_str(),
        record_id: &rid,
    };
    Ok(seal(dek, &aad, plain)?)
}

fn open_record(dek: &DataKey, key: &RecordKey, sealed: &[u8]) -> Result<Record> {
    let rid = key.aad_id();
    let aad = RecordAad {
        subject: &key.subject,
        collection: key.collection.as_str(),
        record_id: &rid,
    };
    let plain = open_sealed(dek, &aad, sealed)?;
    let data = serde_json::from_slice(plain.as_bytes())
        .map_err(|e| NodeError::Corrupt(format!("record {} is not JSON: {e}", key.id)))?;
    Ok(Record {
        id: key.id,
        collection: key.collection,
        time: from_ms(key.time_ms)?,
        data,
    })
}

fn consent_aad(subject: &SubjectId) -> RecordAad<'_> {
    RecordAad {
        subject,
        collection: "consent",
        record_id: b"history",
    }
}

fn pepper_check(keyring: &Keyring) -> Result<String> {
    let r = ExternalRef::parse(PEPPER_CHECK_REF)?;
    Ok(SubjectId::derive(keyring.pepper(), &r).to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, Node};
    use amble_policy::Role;

    /// GDPR Art. 16: after a correction the old value is not readable, even where the storage
    /// engine still keeps its bytes: they are sealed under a data key that the archive no
    /// longer holds and that, once the master key is rotated, the key file no longer unwraps.
    #[test]
    fn a_correction_leaves_the_old_value_under_a_key_nothing_unwraps() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| NodeError::Corrupt(e.to_string()))?;
        let mut node = Node::init(dir.path(), None)?;
        let ann = ExternalRef::parse("phone:+15550111")?;
        let op = Actor::local("operator:test", Role::Admin);
        let mut data = serde_json::Map::new();
        data.insert("city".into(), "Chengdu".into());
        data.insert("display_name".into(), "Ann".into());
        let record = NewRecord {
            collection: Collection::Profile,
            time: node.now(),
            data,
        };
        let appended = node.append(&op, &ann, &record)?;
        node.change_consent(
            &op,
            &ann,
            "personalisation",
            crate::ConsentChange::Give {
                valid_until: None,
                explicit: true,
            },
        )?;
        let subject = appended.subject;
        let store = node.archive.store();
        let old_wrapped = store.wrapped_key(&subject)?.ok_or(NodeError::UnknownRef)?;
        let key = store
            .subject_record_keys(&subject)?
            .into_iter()
            .find(|k| k.id == appended.record_id)
            .ok_or(NodeError::UnknownRecord(appended.record_id))?;
        let old_record = store
            .get_record(&key)?
            .ok_or(NodeError::UnknownRef)?
            .to_vec();
        let old_dek = node.archive.data_key(&subject)?;

        let mut fix = serde_json::Map::new();
        fix.insert("city".into(), "Hangzhou".into());
        node.rectify(&op, &ann, appended.record_id, &fix)?;
        // Before any rotation, the archive already holds only the new key.
        let dek = node.archive.data_key(&subject)?;
        assert!(dek.version() > old_dek.version());
        assert!(open_record(&dek, &key, &old_record).is_err());
        node.rotate_key(&op)?;

        assert!(
            node.archive.keyring.unwrap(&subject, &old_wrapped).is_err(),
            "the old data key still unwraps"
        );
        let dek = node.archive.data_key(&subject)?;
        let now = node
            .archive
            .store()
            .get_record(&key)?
            .ok_or(NodeError::UnknownRef)?;
        assert_eq!(open_record(&dek, &key, &now)?.data["city"], "Hangzhou");
        // The person's consent history moved to the new key with everything else.
        let history = node.archive.load_consent(&subject)?;
        assert!(history.state("personalisation", node.now()).is_given());
        Ok(())
    }
}
