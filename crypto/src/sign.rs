//! Ed25519 signing keys: the node's identity for consent receipts and audit checkpoints.

use crate::{CryptoError, Secret32};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use std::fmt;

/// A raw 64-byte Ed25519 signature (RFC 8032).
pub type SignatureBytes = [u8; 64];

/// An Ed25519 private key, held as its 32-byte seed (zeroized on drop).
pub struct SigningKey {
    seed: Secret32,
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// A new key from a random seed drawn from the OS generator.
    pub fn generate() -> Result<Self, CryptoError> {
        Self::from_seed(Secret32::random()?)
    }

    /// The key whose RFC 8032 private seed is `seed`; the same seed always gives the same key.
    pub fn from_seed(seed: Secret32) -> Result<Self, CryptoError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .map_err(|_| CryptoError::BadSigningKey)?;
        Ok(SigningKey { seed, pair })
    }

    /// The 32-byte private seed, for writing the key back to a key file; never log it.
    pub fn seed(&self) -> &Secret32 {
        &self.seed
    }

    /// The public half, which others use to check this key's signatures.
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut pk = [0u8; 32];
        pk.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey(pk)
    }

    /// Signs `msg` (deterministic, as Ed25519 is: same key and message, same signature).
    pub fn sign(&self, msg: &[u8]) -> SignatureBytes {
        let sig = self.pair.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {}, [redacted])", self.verifying_key())
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    /// Wraps 32 raw public-key bytes; they are only checked when a signature is verified.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        VerifyingKey(b)
    }
    /// Like [`VerifyingKey::from_bytes`], but fails with [`CryptoError::BadSigningKey`] unless the
    /// slice is exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, CryptoError> {
        Ok(VerifyingKey(
            b.try_into().map_err(|_| CryptoError::BadSigningKey)?,
        ))
    }
    /// The 32 raw public-key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Standard base64 of the 32 key bytes.
    pub fn to_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
    /// Parses the standard base64 form written by [`VerifyingKey::to_base64`], ignoring
    /// surrounding whitespace; fails with [`CryptoError::BadSigningKey`] unless it decodes to
    /// exactly 32 bytes.
    pub fn from_base64(s: &str) -> Result<Self, CryptoError> {
        use base64::Engine;
        let v = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| CryptoError::BadSigningKey)?;
        Self::from_slice(&v)
    }

    /// Checks that `sig` is this key's Ed25519 signature over `msg`, or returns
    /// [`CryptoError::BadSignature`].
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), CryptoError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(msg, sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.to_base64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8032_test_1_signature_is_reproduced() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let k = SigningKey::from_seed(Secret32::from_slice(&seed).unwrap()).unwrap();
        assert_eq!(
            hex::encode(k.verifying_key().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = k.sign(b"");
        assert_eq!(
            hex::encode(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(k.verifying_key().verify(b"", &sig).is_ok());
        assert!(k.verifying_key().verify(b"x", &sig).is_err());
    }
}
