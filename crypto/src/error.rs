//! The one error type of amble-crypto.

use std::path::PathBuf;

/// What went wrong in a cryptographic operation or with a key file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The operating system's random generator failed, or ring refused to build a key from
    /// it (also returned if the master key version counter would overflow). The host's
    /// entropy source needs attention before retrying.
    #[error("the system random generator failed")]
    Rng,
    /// Sealed bytes are shorter than a header, nonce and tag, or start with a format version
    /// this build does not know (written by a newer amble, or not sealed data at all).
    /// Holds the first byte of the input: the version found, or 0 if the input was empty.
    #[error("sealed data is too short or has unknown format version {0}")]
    Malformed(u8),
    #[error(
        "sealed data does not open: wrong key, or it was altered or moved to another subject, collection or record"
    )]
    /// AES-GCM authentication failed: the key is wrong (for instance the subject's key was
    /// destroyed and replaced), the ciphertext was altered, or its AAD (subject, collection,
    /// record id) differs from the one it was sealed with.
    OpenFailed,
    /// A wrapped data key failed to open under the master key whose version it names, or its
    /// body is truncated; the key file may belong to another node or the stored key is corrupt.
    #[error("wrapped data key does not open: wrong node master key, or it was altered")]
    UnwrapFailed,
    #[error(
        "node master key version {0} is not in the keyring; was it retired before rewrap finished?"
    )]
    /// A wrapped data key (or the keyring's own `current` pointer) names a master key version
    /// that the keyring no longer holds. Holds that version; restore a key file that still has
    /// it, and retire old versions only after every data key has been rewrapped.
    UnknownKekVersion(u32),
    #[error(
        "key file {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    /// A secret file has any group or other permission bit set, so it is refused before it is
    /// read. Fix with `chmod 600` on the path.
    KeyFilePermissions {
        /// The key file that was refused.
        path: PathBuf,
        /// Its permission bits (`mode & 0o777`), printed in octal.
        mode: u32,
    },
    /// Reading, writing or checking the metadata of a key file failed at the operating system
    /// level (missing file, no permission, full disk).
    #[error("cannot read key file {path}: {source}")]
    KeyFileIo {
        /// The key file that could not be read or written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A key file was read but is not a valid keyring: not JSON, a different `format`, a key
    /// that is not 32 bytes of base64, a duplicated master key version, or a missing current
    /// version. Also returned if the keyring cannot be serialised on save.
    #[error("key file {path} is not an amble keyring: {reason}")]
    KeyFileFormat {
        /// The key file that was rejected.
        path: PathBuf,
        /// What was wrong with its contents; never includes key material.
        reason: String,
    },
    /// Creating a keyring found a file already at the path; overwriting it would destroy the
    /// keys every sealed record depends on. Holds that path; load it instead, or choose another.
    #[error("key file {0} already exists; refusing to overwrite keys")]
    KeyFileExists(PathBuf),
    /// An external reference could not be parsed or normalised (no `:`, a channel that is not
    /// 1 to 32 of `a-z0-9_-`, an id outside 1 to 512 bytes or with control characters, a phone
    /// number that is not E.164). Holds a fixed
    /// description of the rule broken; it never echoes the reference itself.
    #[error("external reference must look like `channel:id` (e.g. `phone:+15550001`): {0}")]
    BadExternalRef(&'static str),
    /// Bytes given as an Ed25519 key were rejected: a public key that is not 32 bytes or not
    /// valid base64, or a seed that ring would not accept.
    #[error("invalid Ed25519 key")]
    BadSigningKey,
    /// An Ed25519 signature does not verify for this message under this public key: the
    /// message was altered, it was signed by another key, or the signature is malformed.
    #[error("signature does not verify")]
    BadSignature,
}
