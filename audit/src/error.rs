//! One error enum per concern: proofs, entries, notes, the stored log, and offline verification.

use std::path::PathBuf;

/// A proof could not be built or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// An inclusion proof was asked for, or checked against, a leaf index at or beyond the tree
    /// size (for a subtree proof: outside `[start, end)`).
    #[error(
        "leaf index {index} is not in a tree of {size} entries; ask for an index below the tree size"
    )]
    IndexOutOfRange {
        /// The leaf index (seq) asked for.
        index: u64,
        /// Number of leaves in the tree (for a subtree proof, the subtree's `end`).
        size: u64,
    },
    /// A consistency proof was asked for from the empty tree or from a larger tree to a smaller
    /// one (for a subtree proof: a subtree that ends beyond the tree).
    #[error(
        "no consistency proof exists from size {old} to size {new}: sizes must satisfy 0 < old <= new"
    )]
    BadSizes {
        /// The earlier tree size (for a subtree proof, the subtree's `end`).
        old: u64,
        /// The later tree size.
        new: u64,
    },
    /// A proof was asked for at a tree size the log has not reached yet.
    #[error(
        "tree size {size} is larger than the log ({tree_size} entries); use a size from a checkpoint the log has issued"
    )]
    BeyondTree {
        /// The tree size asked for.
        size: u64,
        /// Number of entries the log holds now.
        tree_size: u64,
    },
    /// A proof has more or fewer hashes than its index and sizes call for.
    #[error(
        "proof has {got} hashes, but this index and size need {want}: the proof is for other sizes or was altered"
    )]
    WrongProofLength {
        /// Number of hashes the proof carries.
        got: usize,
        /// Number of hashes a proof for these sizes must carry (for a subtree proof, at least
        /// this many).
        want: usize,
    },
    /// A leaf hash, root or proof element is not 32 bytes long.
    #[error("{what} is {len} bytes, not a 32-byte SHA-256 hash")]
    BadHashLength {
        /// Which value was wrong: `leaf hash`, `old root`, `new root`, `proof element`, ….
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// Recomputing the root from the leaf (or old root) and the proof gives a different root than
    /// the one given: the proof does not verify.
    #[error(
        "the proof does not lead to the given root: the entry, proof or root was altered, or they belong to different trees"
    )]
    RootMismatch,
    /// A subtree hash that the log should hold is absent from storage while building a proof or
    /// reopening the log; the audit database is damaged.
    #[error(
        "stored hash for level {level} index {index} is missing: the audit tree is damaged; restore it from backup"
    )]
    MissingNode {
        /// Height of the missing subtree (0 = a leaf hash).
        level: u8,
        /// Its position among the subtrees of that height, from 0 at the left.
        index: u64,
    },
    /// A frontier (the compact range of a tree, e.g. `prefix.json` of a pruned export) has a
    /// number of peak hashes that does not match its size.
    #[error("a compact range for {size} entries needs one hash per set bit of the size, got {got}")]
    BadPeaks {
        /// Number of leaves the frontier claims to cover.
        size: u64,
        /// Number of peak hashes it carries; `size.count_ones()` are needed.
        got: usize,
    },
    /// A subtree proof names a range that is not a subtree of the Merkle tree.
    #[error(
        "[{start}, {end}) is not a subtree: it must be non-empty and start at a multiple of its width rounded up to a power of two"
    )]
    BadSubtree {
        /// First leaf index of the range.
        start: u64,
        /// One past its last leaf index.
        end: u64,
    },
    /// The JSON form of an inclusion or consistency proof does not parse (unknown or missing
    /// field, bad base64, a hash that is not 32 bytes). Holds serde_json's message.
    #[error("proof JSON is malformed: {0}")]
    Json(String),
}

/// An entry line is not a valid canonical entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// The bytes are not JSON of the entry's shape (unknown or missing field, wrong type, bad
    /// time, subject that is not 64 hex characters). Holds serde_json's message.
    #[error("entry is not valid entry JSON: {0}")]
    Parse(String),
    /// The entry parses, but re-serialising it does not reproduce the same bytes, so it is not
    /// the one byte string the log would have hashed.
    #[error(
        "entry is valid JSON but not in canonical form (field order, spacing, escaping or time format differ)"
    )]
    NotCanonical,
    /// The entry's time carries an offset other than UTC.
    #[error("entry time is not in UTC; entries carry RFC 3339 times ending in `Z`")]
    NotUtc,
    /// An action name that is neither known nor a valid name for an unknown one; holds the name.
    #[error("action {0:?} is not snake_case ASCII (a-z, 0-9, `_`, at most 64 bytes)")]
    BadAction(String),
    /// The entry cannot be written as canonical JSON, in practice because its time falls outside
    /// what RFC 3339 can express. Holds serde_json's message.
    #[error("entry cannot be serialised ({0}); is its time outside years 0000-9999?")]
    Unserialisable(String),
}

/// A signed note, key string or checkpoint is malformed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// A key name (the name in a key string, a signature line or a signer) is empty or contains
    /// whitespace or `+`. Holds the name.
    #[error("key name {0:?} is invalid: it must be non-empty with no spaces or `+`")]
    BadKeyName(String),
    /// A public key string does not have the three `+`-separated parts, its key is not base64 of
    /// 33 bytes, or the first byte is not the Ed25519 type 0x01. Holds the key string as given.
    #[error("verifier key {0:?} is not `name+hex8+base64(0x01 || ed25519 public key)`")]
    BadVerifierKey(String),
    /// A private key string is malformed or its seed is not a usable Ed25519 seed; its contents
    /// are never included, since they are the secret.
    #[error(
        "private key is not `PRIVATE+KEY+name+hex8+base64(0x01 || ed25519 seed)` (contents not shown)"
    )]
    BadSignerKey,
    /// The 8 hex digits of a key string are not the key id computed from its name and key. Holds
    /// the key name.
    #[error(
        "key id in the key string for {0:?} does not match its name and key: the key string was altered"
    )]
    KeyIdMismatch(String),
    /// The note's structure is wrong: text not ending in a newline or with control characters, no
    /// blank line before the signatures, a bad signature line, or more than 100 signatures.
    /// Holds a fixed description of what is wrong.
    #[error("malformed signed note: {0}")]
    Malformed(&'static str),
    /// A signature by a key the verifier knows (same name and key id) does not verify over the
    /// note text. Holds the key name.
    #[error("signature by {0:?} does not verify: the note text or the signature was altered")]
    BadSignature(String),
    /// None of the note's signatures is by a key in the set the caller trusts.
    #[error(
        "the note carries no signature from any trusted key; check that you have the right log key"
    )]
    NoKnownSignature,
    /// The note is not signed by the key that had to sign it (usually the log's own key). Holds
    /// that key's name.
    #[error("the note is not signed by the required key {0:?}")]
    MissingSignature(String),
    /// A checkpoint's origin line is empty or contains a newline or other control character. Holds
    /// the origin as given.
    #[error("checkpoint origin {0:?} must be one non-empty line without control characters")]
    BadOrigin(String),
    /// A checkpoint body lacks its size or root line, has a size that is not a canonical decimal
    /// u64, or a root that is not base64 of 32 bytes. Holds a fixed description.
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

    /// Which kind of failure this is, to decide between stopping, retrying and reporting.
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
    /// The database under the log failed to read, write or flush. If
    /// [`StorageError::is_fault`], stop serving: nothing read from that database is trusted.
    #[error(
        "audit log storage failed: {0}; check disk space and permissions of the node's database"
    )]
    Storage(#[from] StorageError),
    /// What the log found in storage contradicts its own invariants (a hash that is not 32 bytes,
    /// non-contiguous stored hashes, a missing entry the hashes cover). Holds what was found.
    #[error("audit log is damaged: {0}; restore the database from backup")]
    Corrupt(String),
    /// A thread panicked while holding one of the log's locks, so its in-memory state can no
    /// longer be trusted.
    #[error(
        "an earlier append panicked while holding the audit lock; restart the node to reopen the log"
    )]
    Poisoned,
    /// An append found its leaf slot already taken: another [`crate::AuditLog`] on the same
    /// database appended first. Holds the seq this instance tried to write.
    #[error(
        "entry {0} was already written by another AuditLog on this database; open the log once per database and share it"
    )]
    SecondInstance(u64),
    /// The entry was removed by retention ([`crate::AuditLog::prune_before`]); its hash is still
    /// in the tree. Holds the entry's seq.
    #[error("entry {0} was pruned by retention; only its hash is kept")]
    Pruned(u64),
    /// No entry with this seq has been appended yet. Holds the seq asked for.
    #[error("entry {0} does not exist (the log has fewer entries)")]
    NoSuchEntry(u64),
    /// A stored entry does not parse as a canonical entry, or a new one cannot be serialised.
    #[error(transparent)]
    Entry(#[from] EntryError),
    /// A proof could not be built for the sizes or index asked for, or the log's stored
    /// hashes do not form a valid tree.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A checkpoint could not be built or signed (a bad origin or key name).
    #[error(transparent)]
    Note(#[from] NoteError),
    /// Creating the export directory or writing one of its files failed.
    #[error("cannot write export to {path}: {source}")]
    ExportIo {
        /// The directory or file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Offline verification of an exported log failed. Where the fault can be pinned to one line
/// of `entries.jsonl`, the error names the line (1-based) and the seq found or expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A file of the export directory could not be read (missing, unreadable, or an I/O error
    /// part-way through `entries.jsonl`).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `log.pub` is not a valid verifier key string.
    #[error("log.pub: {0}")]
    LogKey(NoteError),
    /// `log.pub` names a key the caller trusts, but holds a different public key under that name.
    #[error(
        "log.pub holds a different key for {name:?} than the key you trust for it: the export was re-signed by someone else"
    )]
    LogKeyMismatch {
        /// The key name in `log.pub`.
        name: String,
    },
    /// `checkpoint` is not a valid signed note or checkpoint body, is not signed by the key in
    /// `log.pub`, or carries a bad signature by a trusted key.
    #[error("checkpoint: {0}")]
    Checkpoint(NoteError),
    /// The checkpoint's origin line differs from the name of the key in `log.pub`.
    #[error("checkpoint origin {checkpoint:?} does not match the log key name {key:?}")]
    OriginMismatch {
        /// The origin written in the checkpoint.
        checkpoint: String,
        /// The name of the key in `log.pub`.
        key: String,
    },
    /// The old checkpoint given to check consistency against (`--since`) is malformed or not
    /// signed by this log's key.
    #[error("old checkpoint (--since): {0}; was it issued by this log under this key?")]
    Since(NoteError),
    /// `witnessed-checkpoint` is malformed, not signed by the log's key, or carries a bad
    /// signature by a trusted key.
    #[error("witnessed-checkpoint: {0}")]
    Witnessed(NoteError),
    /// `witnessed-checkpoint` is for another origin or a larger tree than the export, or the
    /// export's entries do not lead to the root the witness cosigned.
    #[error("witnessed-checkpoint at size {size} does not fit this export: {reason}")]
    WitnessMismatch {
        /// Tree size of the witnessed checkpoint.
        size: u64,
        /// Which of the checks failed, with the origins and sizes involved.
        reason: String,
    },
    /// The caller trusts witness keys, but neither `checkpoint` nor `witnessed-checkpoint` carries
    /// a valid cosignature by any of them. Holds the trusted witness names, comma-separated.
    #[error(
        "no checkpoint in the export carries a cosignature by {0}: a witness was required \
         (--cosigner) but the export shows none, so its history cannot be checked against the \
         witness; fetch the log again with its witnessed-checkpoint"
    )]
    NotWitnessed(String),
    /// The old checkpoint (`--since`) is signed by the log's key but names another origin.
    #[error("old checkpoint is for origin {old:?}, this log is {new:?}")]
    SinceOrigin {
        /// Origin of the old checkpoint.
        old: String,
        /// Origin of the export's checkpoint.
        new: String,
    },
    /// `prefix.json` does not parse, or its peaks do not match its `first_seq`. Holds the reason.
    #[error("prefix.json is malformed: {0}")]
    Prefix(String),
    /// A line of `entries.jsonl` is over 1 MiB, lacks its final newline, or is not an entry at
    /// all (not even its seq can be read).
    #[error("entries.jsonl line {line}: {reason}")]
    BadLine {
        /// Line number in `entries.jsonl`, from 1.
        line: u64,
        /// What is wrong with the line.
        reason: String,
    },
    /// A line carries the expected seq but is not a valid canonical entry.
    #[error("entries.jsonl line {line} (seq {seq}): {source}")]
    BadEntry {
        /// Line number in `entries.jsonl`, from 1.
        line: u64,
        /// The seq the line carries (the one expected there).
        seq: u64,
        /// Why the entry was rejected.
        #[source]
        source: EntryError,
    },
    /// A line carries another seq than the next one expected, so lines were removed, inserted
    /// or reordered.
    #[error(
        "entries.jsonl line {line} has seq {found}, expected {expected}: a line was removed, inserted or moved here"
    )]
    SeqGap {
        /// Line number in `entries.jsonl`, from 1.
        line: u64,
        /// The seq that belongs on this line.
        expected: u64,
        /// The seq the line carries.
        found: u64,
    },
    /// The entries (plus any pruned prefix) cover a different number of leaves than the signed
    /// checkpoint.
    #[error(
        "entries.jsonl holds entries up to size {entries}, but the checkpoint is for size {checkpoint}: entries were removed from or added to the end"
    )]
    SizeMismatch {
        /// Tree size the export's entries lead to, pruned prefix included.
        entries: u64,
        /// Tree size in the signed checkpoint.
        checkpoint: u64,
    },
    /// The sizes agree, but the root recomputed from the entries differs from the checkpoint's.
    #[error(
        "root recomputed from entries.jsonl differs from the signed checkpoint at size {size}: an entry was altered{hint}"
    )]
    RootMismatch {
        /// Tree size of the checkpoint.
        size: u64,
        /// Where the altered entry must be, when an old checkpoint narrows it down (starts
        /// with `; `), or empty.
        hint: String,
    },
    /// The root of the export's first `old_size` entries is not the root in the old checkpoint:
    /// the log's history was rewritten since that checkpoint was issued.
    #[error(
        "the log was rewritten: old checkpoint at size {old_size} does not match the first {old_size} entries of this export{hint}"
    )]
    Inconsistent {
        /// Tree size of the old checkpoint.
        old_size: u64,
        /// Which lines the change must be on (starts with `; `), or empty.
        hint: String,
    },
    /// The old checkpoint is for a larger tree than the export's checkpoint.
    #[error(
        "old checkpoint is for size {old_size}, but this export only covers size {new_size}: the log was truncated"
    )]
    Truncated {
        /// Tree size of the old checkpoint.
        old_size: u64,
        /// Tree size of the export's checkpoint.
        new_size: u64,
    },
    /// The old checkpoint's size falls inside the pruned prefix, so the export no longer holds
    /// the entries needed to recompute its root.
    #[error(
        "old checkpoint (size {old_size}) lies inside the pruned prefix (entries before seq {first_kept} are gone); check it with a consistency proof from the node instead"
    )]
    SinceInPrunedPrefix {
        /// Tree size of the old checkpoint.
        old_size: u64,
        /// Seq of the first entry the export still holds.
        first_kept: u64,
    },
}
