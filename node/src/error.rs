//! The node's error type, and the gRPC status each error maps to.

use std::path::PathBuf;

/// What went wrong in the node's archive; each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The data directory has no archive database, or the database is not in this node's format.
    /// Holds the data directory.
    #[error(
        "data directory {0} does not exist or is not initialised; run `amble node init --data-dir {0}`"
    )]
    NotInitialised(PathBuf),
    /// `init` found an archive database already in the data directory. Holds the data directory.
    #[error("data directory {0} is already initialised; refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    /// The key file's pepper does not reproduce the pseudonym check stored at init, so every
    /// pseudonym it derived would be wrong.
    #[error(
        "key file {path} does not belong to this data directory (its pseudonym check failed); pass the key file created by `amble node init` for it"
    )]
    WrongKeyFile {
        /// The key file that was loaded.
        path: PathBuf,
    },
    /// A key file could not be loaded or created, a record or data key did not open, or an
    /// external reference did not parse.
    #[error(transparent)]
    Crypto(#[from] amble_crypto::CryptoError),
    /// The archive's storage engine failed. A fault of the storage itself has already tripped
    /// the node's fault latch, so the node stops serving.
    #[error("storage error: {0}")]
    Storage(amble_audit::StorageError),
    /// A storage transaction failed; holds the engine's message.
    #[error("storage transaction failed: {0}")]
    Transaction(String),
    /// An I/O error on a file or directory the node reads or writes: its data directory, its
    /// policy file, a backup.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A name (a collection, a role) is not one amble knows; the message lists the valid ones.
    #[error(transparent)]
    UnknownName(#[from] amble_policy::UnknownName),
    /// Appending to or reading the audit log failed. As with [`NodeError::Storage`], a storage
    /// fault under the log trips the fault latch.
    #[error(transparent)]
    Audit(amble_audit::AuditError),
    /// A consent change was refused (nothing to withdraw, dated before the last change, a bad
    /// purpose id), or the subject's stored consent history could not be read.
    #[error(transparent)]
    Consent(#[from] amble_consent::ConsentError),
    /// The policy file does not parse or is inconsistent.
    #[error(transparent)]
    Policy(#[from] amble_policy::PolicyError),
    /// A consent change names a purpose the policy in force does not declare. Holds the purpose.
    #[error(
        "purpose {0:?} is not declared in the node's policy; `amble policy check` lists the purposes"
    )]
    UnknownPurpose(String),
    /// A correction names a record id the subject does not have (`amble subject export` lists
    /// each record with its id).
    #[error("the subject has no record {0}; the export lists each record with its id")]
    UnknownRecord(u64),
    /// A review was asked of an audit entry that is not an automated routing of this subject's
    /// request. Holds the entry's seq.
    #[error(
        "audit entry {0} is not an automated decision about this person; their access log lists \
         each routing (action `assist`) with its seq"
    )]
    NotADecision(u64),
    /// A correction names a field that is not a schema-like name (`a-z`, `0-9`, `_`, from a
    /// letter, at most 64): the names are written to the audit log, so free text is refused.
    #[error(
        "field name {0:?} is not usable; name fields with a-z, 0-9 and _ (starting with a letter, at most 64)"
    )]
    BadFieldName(String),
    /// The register holds no request with this number (`amble node requests` lists them).
    #[error(
        "the register holds no request {0}; `amble node requests` lists them with their numbers"
    )]
    NoSuchRequest(u64),
    /// The request was answered already; an answer is final (file a new request to revisit it).
    #[error("request {0} was answered already; an answer is final")]
    AlreadyAnswered(u64),
    /// An outcome that is not one of `done`, `refused`, `upheld`, `changed`, or that does not fit
    /// the request (only a review is upheld or changed).
    #[error(
        "outcome {0:?} is not usable; answer with done or refused, and a review with upheld or changed"
    )]
    BadOutcome(String),
    /// A correction that changes nothing (no fields given).
    #[error("the correction names no field; give the fields to correct and their right values")]
    NothingToRectify,
    /// An objection (GDPR Art. 21) names a purpose that does not rely on legitimate interest:
    /// consent is withdrawn instead, and contracts and legal obligations admit no objection.
    #[error(
        "purpose {purpose:?} relies on {basis}, not legitimate interest, so it admits no objection{hint}"
    )]
    NotObjectable {
        /// The purpose named.
        purpose: String,
        /// Its legal basis in the policy in force.
        basis: String,
        /// What to do instead (withdrawing consent, for a consent purpose).
        hint: &'static str,
    },
    /// A training run found no example it may use: no consenting subject has an interaction with
    /// a resolved intent (for a federated round: none whose label the global model knows). Holds
    /// the training purpose.
    #[error(
        "nothing to train on for {0}: no subject with consent has an interaction with a resolved intent"
    )]
    NothingToTrain(&'static str),
    /// Local training or a model operation failed.
    #[error(transparent)]
    Learn(#[from] amble_learn::LearnError),
    /// The external reference is not linked to any subject: never ingested, unlinked, or erased.
    #[error("no subject is known by this reference (never ingested, or erased)")]
    UnknownRef,
    /// No subject with this pseudonym is in the archive. Holds the pseudonym in hex.
    #[error("subject {0} is not in this archive (never created, or erased)")]
    UnknownSubject(String),
    /// Linking a reference that already points at a subject. Holds that subject's pseudonym in
    /// hex.
    #[error("reference is already linked to subject {0}; unlink it first")]
    RefAlreadyLinked(String),
    /// Unlinking the only reference a subject has, which would leave the subject unreachable.
    #[error("refusing to unlink the last reference of a subject; erase the subject instead")]
    LastRef,
    /// Record data is a JSON value other than an object. Holds the kind of value given.
    #[error("record data must be a JSON object, not {0}")]
    RecordNotObject(&'static str),
    /// A number in the record is beyond ±2^53, so signed exports could not hold it exactly.
    /// Holds the field's path and value; store such values as strings.
    #[error("record data: {0}")]
    NumberNotExact(String),
    /// A stored record or item is not what the node wrote (not JSON, vanished mid-merge, too large
    /// to frame). Holds what was found.
    #[error("record is corrupt in storage: {0}")]
    Corrupt(String),
    /// A time cannot be represented (milliseconds out of range), or a record's time is more than
    /// a day after the node's clock. Holds the time and, where it helps, why.
    #[error("time {0} is out of the supported range")]
    TimeOutOfRange(String),
    /// The policy file changed, but its `version` is not above the one in force; the reload is
    /// refused.
    #[error(
        "the policy file changed but declares version {version}, not above the {current} in \
         force; raise `version` so every decision can be traced to one policy"
    )]
    PolicyNotNewer {
        /// The version the changed file declares.
        version: u64,
        /// The version of the policy in force.
        current: u64,
    },
}

/// Every storage error becomes a `NodeError` here (the engine's own errors are translated in
/// `store.rs`), and a fault of the storage itself trips the [fault latch](crate::fault) on the
/// way.
impl From<amble_audit::StorageError> for NodeError {
    fn from(e: amble_audit::StorageError) -> Self {
        if e.is_fault() {
            crate::fault::trip(&format!("storage: {e}"));
        }
        NodeError::Storage(e)
    }
}

impl From<amble_audit::AuditError> for NodeError {
    fn from(e: amble_audit::AuditError) -> Self {
        if let amble_audit::AuditError::Storage(s) = &e
            && s.is_fault()
        {
            crate::fault::trip(&format!("audit log storage: {s}"));
        }
        NodeError::Audit(e)
    }
}

/// The gRPC code of each error, beside its definition (`amble_net::status` sends it).
impl amble_net::ServiceError for NodeError {
    fn code(&self) -> tonic::Code {
        use amble_audit::AuditError;
        use tonic::Code;
        match self {
            NodeError::UnknownRef
            | NodeError::UnknownSubject(_)
            | NodeError::UnknownRecord(_)
            | NodeError::NoSuchRequest(_) => Code::NotFound,
            NodeError::AlreadyAnswered(_) => Code::FailedPrecondition,
            NodeError::UnknownPurpose(_)
            | NodeError::NotObjectable { .. }
            | NodeError::NotADecision(_)
            | NodeError::BadOutcome(_)
            | NodeError::NothingToRectify
            | NodeError::BadFieldName(_)
            | NodeError::UnknownName(_)
            | NodeError::RecordNotObject(_)
            | NodeError::NumberNotExact(_)
            | NodeError::TimeOutOfRange(_)
            | NodeError::Crypto(amble_crypto::CryptoError::BadExternalRef(_)) => {
                Code::InvalidArgument
            }
            NodeError::RefAlreadyLinked(_) => Code::AlreadyExists,
            NodeError::LastRef
            | NodeError::Consent(_)
            | NodeError::Policy(_)
            | NodeError::PolicyNotNewer { .. }
            | NodeError::Audit(AuditError::Pruned(_)) => Code::FailedPrecondition,
            NodeError::Audit(AuditError::NoSuchEntry(_) | AuditError::Proof(_)) => Code::OutOfRange,
            _ => Code::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            NodeError::Audit(amble_audit::AuditError::Pruned(_)) => format!(
                "{self}; the entries were removed by retention, fetch from the first kept entry"
            ),
            _ => self.to_string(),
        }
    }
}

/// The node's result type: [`NodeError`] unless another error is named.
pub type Result<T, E = NodeError> = std::result::Result<T, E>;
