//! One error enum per concern: proofs, entries, notes, the stored log, and offline verification.

use std::path::PathBuf;

/// A proof could not be built or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    #[error(
        "leaf index {index} is not in a tree of {size} entries; ask for an index below the tree size"
    )]
    IndexOutOfRange { index: u64, size: u64 },
    #[error(
        "no consistency proof exists from size {old} to size {new}: sizes must satisfy 0 < old <= new"
    )]
    BadSizes { old: u64, new: u64 },
    #[error(
        "tree size {size} is larger than the log ({tree_size} entries); use a size from a checkpoint the log has issued"
    )]
    BeyondTree { size: u64, tree_size: u64 },
    #[error(
        "proof has {got} hashes, but this index and size need {want}: the proof is for other sizes or was altered"
    )]
    WrongProofLength { got: usize, want: usize },
    #[error("{what} is {len} bytes, not a 32-byte SHA-256 hash")]
    BadHashLength { what: &'static str, len: usize },
    #[error(
        "the proof does not lead to the given root: the entry, proof or root was altered, or they belong to different trees"
    )]
    RootMismatch,
    #[error(
        "stored hash for level {level} index {index} is missing: the audit tree is damaged; restore it from backup"
    )]
    MissingNode { level: u8, index: u64 },
    #[error("a compact range for {size} entries needs one hash per set bit of the size, got {got}")]
    BadPeaks { size: u64, got: usize },
    #[error(
        "[{start}, {end}) is not a subtree: it must be non-empty and start at a multiple of its width rounded up to a power of two"
    )]
    BadSubtree { start: u64, end: u64 },
    #[error("proof JSON is malformed: {0}")]
    Json(String),
}

/// An entry line is not a valid canonical entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    #[error("entry is not valid entry JSON: {0}")]
    Parse(String),
    #[error(
        "entry is valid JSON but not in canonical form (field order, spacing, escaping or time format differ)"
    )]
    NotCanonical,
    #[error("entry time is not in UTC; entries carry RFC 3339 times ending in `Z`")]
    NotUtc,
    #[error("action {0:?} is not snake_case ASCII (a-z, 0-9, `_`, at most 64 bytes)")]
    BadAction(String),
    #[error("entry cannot be serialised ({0}); is its time outside years 0000-9999?")]
    Unserialisable(String),
}

/// A signed note, key string or checkpoint is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    #[error("key name {0:?} is invalid: it must be non-empty with no spaces or `+`")]
    BadKeyName(String),
    #[error("verifier key {0:?} is not `name+hex8+base64(0x01 || ed25519 public key)`")]
    BadVerifierKey(String),
    #[error(
        "private key is not `PRIVATE+KEY+name+hex8+base64(0x01 || ed25519 seed)` (contents not shown)"
    )]
    BadSignerKey,
    #[error(
        "key id in the key string for {0:?} does not match its name and key: the key string was altered"
    )]
    KeyIdMismatch(String),
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    #[error("signature by {0:?} does not verify: the note text or the signature was altered")]
    BadSignature(String),
    #[error(
        "the note carries no signature from any trusted key; check that you have the right log key"
    )]
    NoKnownSignature,
    #[error("the note is not signed by the required key {0:?}")]
    MissingSignature(String),
    #[error("checkpoint origin {0:?} must be one non-empty line without control characters")]
    BadOrigin(String),
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(&'static str),
}

/// A failure of the storage engine under a log or an archive, told without the engine's own
/// types: what a caller acts on is whether the storage itself failed (stop serving), another
/// process holds the database (wait or retry), or neither.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
}

/// What kind of storage failure a [`StorageError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The storage failed (I/O error, corruption, an engine bug): nothing it says is trusted.
    Fault,
    /// Another handle or process holds the database's lock.
    LockBusy,
    /// Anything else (e.g. a tree that cannot be opened by that name).
    Other,
}

impl StorageError {
    /// A storage error of `kind`, described by `message`.
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The storage itself failed.
    pub fn is_fault(&self) -> bool {
        self.kind == StorageErrorKind::Fault
    }

    /// Another handle holds the database.
    pub fn is_lock_busy(&self) -> bool {
        self.kind == StorageErrorKind::LockBusy
    }
}

/// An operation on the stored log failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(
        "audit log storage failed: {0}; check disk space and permissions of the node's database"
    )]
    Storage(#[from] StorageError),
    #[error("audit log is damaged: {0}; restore the database from backup")]
    Corrupt(String),
    #[error(
        "an earlier append panicked while holding the audit lock; restart the node to reopen the log"
    )]
    Poisoned,
    #[error(
        "entry {0} was already written by another AuditLog on this database; open the log once per database and share it"
    )]
    SecondInstance(u64),
    #[error("entry {0} was pruned by retention; only its hash is kept")]
    Pruned(u64),
    #[error("entry {0} does not exist (the log has fewer entries)")]
    NoSuchEntry(u64),
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error(transparent)]
    Note(#[from] NoteError),
    #[error("cannot write export to {path}: {source}")]
    ExportIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Offline verification of an exported log failed. Where the fault can be pinned to one line
/// of `entries.jsonl`, the error names the line (1-based) and the seq found or expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log.pub: {0}")]
    LogKey(NoteError),
    #[error(
        "log.pub holds a different key for {name:?} than the key you trust for it: the export was re-signed by someone else"
    )]
    LogKeyMismatch { name: String },
    #[error("checkpoint: {0}")]
    Checkpoint(NoteError),
    #[error("checkpoint origin {checkpoint:?} does not match the log key name {key:?}")]
    OriginMismatch { checkpoint: String, key: String },
    #[error("old checkpoint (--since): {0}; was it issued by this log under this key?")]
    Since(NoteError),
    #[error("witnessed-checkpoint: {0}")]
    Witnessed(NoteError),
    #[error("witnessed-checkpoint at size {size} does not fit this export: {reason}")]
    WitnessMismatch { size: u64, reason: String },
    #[error(
        "no checkpoint in the export carries a cosignature by {0}: a witness was required \
         (--cosigner) but the export shows none, so its history cannot be checked against the \
         witness; fetch the log again with its witnessed-checkpoint"
    )]
    NotWitnessed(String),
    #[error("old checkpoint is for origin {old:?}, this log is {new:?}")]
    SinceOrigin { old: String, new: String },
    #[error("prefix.json is malformed: {0}")]
    Prefix(String),
    #[error("entries.jsonl line {line}: {reason}")]
    BadLine { line: u64, reason: String },
    #[error("entries.jsonl line {line} (seq {seq}): {source}")]
    BadEntry {
        line: u64,
        seq: u64,
        #[source]
        source: EntryError,
    },
    #[error(
        "entries.jsonl line {line} has seq {found}, expected {expected}: a line was removed, inserted or moved here"
    )]
    SeqGap {
        line: u64,
        expected: u64,
        found: u64,
    },
    #[error(
        "entries.jsonl holds entries up to size {entries}, but the checkpoint is for size {checkpoint}: entries were removed from or added to the end"
    )]
    SizeMismatch { entries: u64, checkpoint: u64 },
    #[error(
        "root recomputed from entries.jsonl differs from the signed checkpoint at size {size}: an entry was altered{hint}"
    )]
    RootMismatch { size: u64, hint: String },
    #[error(
        "the log was rewritten: old checkpoint at size {old_size} does not match the first {old_size} entries of this export{hint}"
    )]
    Inconsistent { old_size: u64, hint: String },
    #[error(
        "old checkpoint is for size {old_size}, but this export only covers size {new_size}: the log was truncated"
    )]
    Truncated { old_size: u64, new_size: u64 },
    #[error(
        "old checkpoint (size {old_size}) lies inside the pruned prefix (entries before seq {first_kept} are gone); check it with a consistency proof from the node instead"
    )]
    SinceInPrunedPrefix { old_size: u64, first_kept: u64 },
}
