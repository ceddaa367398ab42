use std::path::PathBuf;

/// What went wrong in a cryptographic operation or with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error("the system random generator failed")]
    Rng,
    #[error("sealed data is too short or has unknown format version {0}")]
    Malformed(u8),
    #[error(
        "sealed data does not open: wrong key, or it was altered or moved to another subject, collection or record"
    )]
    OpenFailed,
    #[error("wrapped data key does not open: wrong node master key, or it was altered")]
    UnwrapFailed,
    #[error(
        "node master key version {0} is not in the keyring; was it retired before rewrap finished?"
    )]
    UnknownKekVersion(u32),
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    #[error("cannot read key file {path}: {source}")]
    KeyFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} is not an amble keyring: {reason}")]
    KeyFileFormat { path: PathBuf, reason: String },
    #[error("key file {0} already exists; refusing to overwrite keys")]
    KeyFileExists(PathBuf),
    #[error("external reference must look like `channel:id` (e.g. `phone:+15550001`): {0}")]
    BadExternalRef(&'static str),
    #[error("invalid Ed25519 key")]
    BadSigningKey,
    #[error("signature does not verify")]
    BadSignature,
}
