//! The one sealing function, and the data keys it seals with.
//!
//! Sealed record = `version(1) ‖ key_version(4, BE) ‖ nonce(12) ‖ ciphertext ‖ tag(16)`.
//! `key_version` is the subject's data-key generation. The AAD is
//! `"amble/record/v1" ‖ subject_id(32) ‖ len(collection)(2, BE) ‖ collection ‖ record_id`,
//! so a ciphertext copied to another subject, collection or record id fails to open.

use crate::{CryptoError, Plaintext, Secret32, SubjectId};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use std::fmt;

/// Format version byte at the start of every sealed record; [`open`] refuses any other
/// value with [`CryptoError::Malformed`].
pub const SEAL_VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Bytes a sealed record carries beyond its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TAG_LEN;
const RECORD_AAD_DOMAIN: &[u8] = b"amble/record/v1";

/// A subject's data key (DEK): random, 256-bit, zeroized on drop. The AES key schedule is
/// built once per unwrap and shared by clones, so sealing many records costs one expansion.
#[derive(Clone)]
pub struct DataKey {
    secret: Secret32,
    version: u32,
    aead: std::sync::Arc<LessSafeKey>,
}

impl DataKey {
    /// A fresh random data key of generation `version`.
    pub fn generate(version: u32) -> Result<Self, CryptoError> {
        Self::from_parts(Secret32::random()?, version)
    }

    /// This key's generation, written into the header of every record it seals.
    pub fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn from_parts(secret: Secret32, version: u32) -> Result<Self, CryptoError> {
        Ok(DataKey {
            aead: std::sync::Arc::new(aead_key(&secret)?),
            secret,
            version,
        })
    }

    pub(crate) fn secret(&self) -> &Secret32 {
        &self.secret
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(v{}, [redacted])", self.version)
    }
}

pub(crate) fn aead_key(secret: &Secret32) -> Result<LessSafeKey, CryptoError> {
    let unbound = UnboundKey::new(&AES_256_GCM, secret.expose()).map_err(|_| CryptoError::Rng)?;
    Ok(LessSafeKey::new(unbound))
}

/// A data key as it may be stored: wrapped (AES-256-GCM) under node master key `kek_version`.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Version of the node master key this data key is wrapped under; [`crate::Keyring::unwrap`]
    /// needs that version still in the keyring.
    pub kek_version: u32,
    /// `dek_version(4) ‖ nonce(12) ‖ ciphertext(32) ‖ tag(16)`
    pub(crate) body: Vec<u8>,
}

impl WrappedKey {
    /// Encodes as `kek_version(4, BE) ‖ body` for storage.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.body.len());
        v.extend_from_slice(&self.kek_version.to_be_bytes());
        v.extend_from_slice(&self.body);
        v
    }

    /// Decodes the form written by [`WrappedKey::to_bytes`]; fails with
    /// [`CryptoError::UnwrapFailed`] unless it is exactly 68 bytes long.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        if b.len() != 4 + 4 + NONCE_LEN + 32 + TAG_LEN {
            return Err(CryptoError::UnwrapFailed);
        }
        let (v, body) = b.split_at(4);
        let kek_version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        Ok(WrappedKey {
            kek_version,
            body: body.to_vec(),
        })
    }
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey(kek v{})", self.kek_version)
    }
}

/// Where a sealed record lives; bound into its AAD.
#[derive(Debug, Clone, Copy)]
pub struct RecordAad<'a> {
    /// The subject whose data key sealed the record.
    pub subject: &'a SubjectId,
    /// Name of the collection the record belongs to (`profile`, `events`, …); only its first
    /// 65,535 bytes are bound.
    pub collection: &'a str,
    /// The record's identifier within its collection, bound byte for byte.
    pub record_id: &'a [u8],
}

impl RecordAad<'_> {
    fn encode(&self) -> Vec<u8> {
        let c = self.collection.as_bytes();
        let clen = u16::try_from(c.len()).unwrap_or(u16::MAX);
        let mut v = Vec::with_capacity(RECORD_AAD_DOMAIN.len() + 32 + 2 + c.len() + 16);
        v.extend_from_slice(RECORD_AAD_DOMAIN);
        v.extend_from_slice(self.subject.as_bytes());
        v.extend_from_slice(&clen.to_be_bytes());
        v.extend_from_slice(&c[..usize::from(clen)]);
        v.extend_from_slice(self.record_id);
        v
    }
}

/// Seals `plaintext` under `key` for the place `aad` names.
pub fn seal(key: &DataKey, aad: &RecordAad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    seal_with_key(&key.aead, key.version, &aad.encode(), plaintext)
}

/// Lower level: seals with an already built AEAD key and raw AAD (used by key wrapping only).
pub(crate) fn seal_with_key(
    key: &LessSafeKey,
    key_version: u32,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    crate::random_bytes(&mut nonce)?;
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&key_version.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[HEADER_LEN..],
        )
        .map_err(|_| CryptoError::Rng)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens what [`seal`] sealed, for the same key and place; anything else fails.
pub fn open(key: &DataKey, aad: &RecordAad<'_>, sealed: &[u8]) -> Result<Plaintext, CryptoError> {
    open_with_key(&key.aead, key.version, &aad.encode(), sealed)
}

pub(crate) fn open_with_key(
    key: &LessSafeKey,
    key_version: u32,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Plaintext, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Malformed(sealed.first().copied().unwrap_or(0)));
    }
    if sealed[0] != SEAL_VERSION {
        return Err(CryptoError::Malformed(sealed[0]));
    }
    let version = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
    if version != key_version {
        return Err(CryptoError::OpenFailed);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[5..HEADER_LEN]);
    let mut buf = Plaintext::new(sealed[HEADER_LEN..].to_vec());
    let plain_len = {
        // Plaintext keeps the buffer in a Zeroizing<Vec>, so a failed open leaves no residue.
        let bytes = buf.buffer_mut();
        let plain = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), bytes)
            .map_err(|_| CryptoError::OpenFailed)?;
        plain.len()
    };
    buf.buffer_mut().truncate(plain_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sid(b: u8) -> SubjectId {
        SubjectId::from_bytes([b; 32])
    }

    proptest! {
        #[test]
        fn seal_then_open_returns_the_plaintext(data in proptest::collection::vec(any::<u8>(), 0..4096),
                                                coll in "[a-z_]{1,20}", rid in proptest::collection::vec(any::<u8>(), 0..24)) {
            let k = DataKey::generate(1).unwrap();
            let s = sid(7);
            let aad = RecordAad { subject: &s, collection: &coll, record_id: &rid };
            let sealed = seal(&k, &aad, &data).unwrap();
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            let opened = open(&k, &aad, &sealed).unwrap();
            prop_assert_eq!(opened.as_bytes(), &data[..]);
        }

        #[test]
        fn any_flipped_bit_fails_to_open(data in proptest::collection::vec(any::<u8>(), 1..512), bit in any::<usize>()) {
            let k = DataKey::generate(1).unwrap();
            let s = sid(1);
            let aad = RecordAad { subject: &s, collection: "events", record_id: b"r1" };
            let mut sealed = seal(&k, &aad, &data).unwrap();
            let bit = bit % (sealed.len() * 8);
            sealed[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open(&k, &aad, &sealed).is_err());
        }
    }

    #[test]
    fn moved_ciphertext_does_not_open() {
        let k = DataKey::generate(1).unwrap();
        let (a, b) = (sid(1), sid(2));
        let here = RecordAad {
            subject: &a,
            collection: "profile",
            record_id: b"1",
        };
        let sealed = seal(&k, &here, b"{\"city\":\"Lyon\"}").unwrap();
        for elsewhere in [
            RecordAad {
                subject: &b,
                ..here
            },
            RecordAad {
                collection: "events",
                ..here
            },
            RecordAad {
                record_id: b"2",
                ..here
            },
        ] {
            assert!(matches!(
                open(&k, &elsewhere, &sealed),
                Err(CryptoError::OpenFailed)
            ));
        }
        assert!(open(&k, &here, &sealed).is_ok());
    }

    #[test]
    fn wrong_key_fails_with_a_clear_error() {
        let k1 = DataKey::generate(1).unwrap();
        let k2 = DataKey::generate(1).unwrap();
        let s = sid(3);
        let aad = RecordAad {
            subject: &s,
            collection: "goals",
            record_id: b"x",
        };
        let sealed = seal(&k1, &aad, b"hello").unwrap();
        let err = open(&k2, &aad, &sealed).unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
    }

    #[test]
    fn truncated_or_unknown_version_is_malformed() {
        let k = DataKey::generate(1).unwrap();
        let s = sid(3);
        let aad = RecordAad {
            subject: &s,
            collection: "goals",
            record_id: b"x",
        };
        assert!(matches!(
            open(&k, &aad, &[1, 2, 3]),
            Err(CryptoError::Malformed(_))
        ));
        let mut sealed = seal(&k, &aad, b"hello").unwrap();
        sealed[0] = 9;
        assert!(matches!(
            open(&k, &aad, &sealed),
            Err(CryptoError::Malformed(9))
        ));
    }

    #[test]
    fn debug_of_keys_is_redacted() {
        let k = DataKey::generate(4).unwrap();
        assert_eq!(format!("{k:?}"), "DataKey(v4, [redacted])");
        let p = Plaintext::new(b"secret".to_vec());
        assert!(!format!("{p:?}").contains("secret"));
    }
}
