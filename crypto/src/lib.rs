//! amble-crypto: every secret amble holds, and every operation on one.
//!
//! This crate sits at the bottom of the map in `docs/ARCHITECTURE.md`; it depends on no
//! other amble crate. It owns:
//!
//! - the node **keyring** ([`Keyring`]): versioned node master keys (KEKs), the pseudonym
//!   pepper and the node's Ed25519 signing seed, kept in one key file that must be mode 0600;
//! - **per-subject data keys** ([`DataKey`]), random 256-bit keys that only ever reach disk
//!   wrapped under the current KEK ([`WrappedKey`]); rotating the KEK rewraps them and never
//!   touches records;
//! - **sealing** ([`seal`] / [`open`]): AES-256-GCM with an AAD that binds the ciphertext
//!   to its subject, collection and record, so a ciphertext moved elsewhere does not open;
//! - **pseudonyms** ([`ExternalRef`] → [`SubjectId`]): HMAC-SHA256 under the pepper, so an
//!   external identifier such as a phone number never has to be stored;
//! - **signing** ([`SigningKey`] / [`VerifyingKey`]): Ed25519 for receipts and checkpoints.
//!
//! Every secret type zeroizes on drop and prints `[redacted]` under `Debug`. Ring's AES
//! key schedules are rebuilt per call and dropped at once; ring does not zeroize them,
//! which is the one residue we accept.
//!
//! ```
//! use amble_crypto::{DataKey, RecordAad, SubjectId, open, seal};
//!
//! let key = DataKey::generate(1)?;
//! let subject = SubjectId::from_bytes([7; 32]);
//! let aad = RecordAad { subject: &subject, collection: "profile", record_id: b"r-1" };
//! let sealed = seal(&key, &aad, br#"{"city":"Lyon"}"#)?;
//! assert_eq!(open(&key, &aad, &sealed)?.as_bytes(), br#"{"city":"Lyon"}"#);
//! // Moved to another collection, the ciphertext no longer opens.
//! let elsewhere = RecordAad { collection: "events", ..aad };
//! assert!(open(&key, &elsewhere, &sealed).is_err());
//! # Ok::<(), amble_crypto::CryptoError>(())
//! ```

mod error;
mod keyring;
pub mod pki;
mod private_file;
mod pseudonym;
mod seal;
mod secret;
mod sign;

pub use error::CryptoError;
pub use keyring::{KEYRING_FORMAT, KekVersion, Keyring};
pub use private_file::{check_private, create_private_dir, write_private};
pub use pseudonym::{ExternalRef, SubjectId};
pub use seal::{DataKey, RecordAad, SEAL_OVERHEAD, SEAL_VERSION, WrappedKey, open, seal};
pub use secret::{Plaintext, Secret32};
pub use sign::{SignatureBytes, SigningKey, VerifyingKey};

/// Fills `buf` from the operating system's cryptographically secure generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), CryptoError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| CryptoError::Rng)
}

/// SHA-256 of `data` — the one hash amble uses (audit leaves, model digests, key ids).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
