use std::path::PathBuf;

/// What went wrong in the node's archive; each message says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(
        "data directory {0} does not exist or is not initialised; run `amble node init --data-dir {0}`"
    )]
    NotInitialised(PathBuf),
    #[error("data directory {0} is already initialised; refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    #[error(
        "key file {path} does not belong to this data directory (its pseudonym check failed); pass the key file created by `amble node init` for it"
    )]
    WrongKeyFile { path: PathBuf },
    #[error(transparent)]
    Crypto(#[from] amble_crypto::CryptoError),
    #[error("storage error: {0}")]
    Storage(amble_audit::StorageError),
    #[error("storage transaction failed: {0}")]
    Transaction(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    UnknownName(#[from] amble_policy::UnknownName),
    #[error(transparent)]
    Audit(amble_audit::AuditError),
    #[error(transparent)]
    Consent(#[from] amble_consent::ConsentError),
    #[error(transparent)]
    Policy(#[from] amble_policy::PolicyError),
    #[error(
        "purpose {0:?} is not declared in the node's policy; `amble policy check` lists the purposes"
    )]
    UnknownPurpose(String),
    #[error(
        "nothing to train on for {0}: no subject with consent has an interaction with a resolved intent"
    )]
    NothingToTrain(&'static str),
    #[error(transparent)]
    Learn(#[from] amble_learn::LearnError),
    #[error("no subject is known by this reference (never ingested, or erased)")]
    UnknownRef,
    #[error("subject {0} is not in this archive (never created, or erased)")]
    UnknownSubject(String),
    #[error("reference is already linked to subject {0}; unlink it first")]
    RefAlreadyLinked(String),
    #[error("refusing to unlink the last reference of a subject; erase the subject instead")]
    LastRef,
    #[error("record data must be a JSON object, not {0}")]
    RecordNotObject(&'static str),
    #[error("record data: {0}")]
    NumberNotExact(String),
    #[error("record is corrupt in storage: {0}")]
    Corrupt(String),
    #[error("time {0} is out of the supported range")]
    TimeOutOfRange(String),
    #[error(
        "the policy file changed but declares version {version}, not above the {current} in \
         force; raise `version` so every decision can be traced to one policy"
    )]
    PolicyNotNewer { version: u64, current: u64 },
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
            NodeError::UnknownRef | NodeError::UnknownSubject(_) => Code::NotFound,
            NodeError::UnknownPurpose(_)
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

pub type Result<T, E = NodeError> = std::result::Result<T, E>;
