//! External references and the pseudonyms ([`SubjectId`]) they map to under the pepper.

use crate::{CryptoError, Secret32};
use ring::hmac;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// An identifier from outside (`phone:+15550001`, `email:ann@example.org`, `openid:…`).
///
/// It exists only in memory: amble stores the [`SubjectId`] it maps to, never this.
/// Zeroized on drop; `Debug` shows the channel only.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct ExternalRef(String);

/// Characters that render as nothing and would make one person several subjects.
const INVISIBLE: [char; 6] = [
    '\u{00AD}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}',
];

/// A phone number in E.164 form: `+` and 1 to 15 digits. Spaces, dashes, dots and brackets
/// are dropped, full-width digits become ASCII (NFKC), and a leading `00` becomes `+`.
fn canonical_phone(id: &str) -> Result<String, CryptoError> {
    use unicode_normalization::UnicodeNormalization;
    let compact: zeroize::Zeroizing<String> = zeroize::Zeroizing::new(
        id.nfkc()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{00A0}'))
            .collect(),
    );
    let digits = match compact.strip_prefix('+') {
        Some(d) => d,
        None => compact.strip_prefix("00").ok_or(CryptoError::BadExternalRef(
            "a phone number starts with + and its country code (E.164), e.g. phone:+8613800138000",
        ))?,
    };
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::BadExternalRef(
            "a phone number is + and 1 to 15 digits (E.164); spaces, dashes, dots and brackets may separate them",
        ));
    }
    Ok(format!("+{digits}"))
}

impl ExternalRef {
    /// Parses `channel:id` into its canonical form, so that every way of writing one
    /// identifier gives one reference (and one pseudonym):
    /// - invisible characters (zero-width spaces and joiners, soft hyphens, BOM) are dropped and
    ///   surrounding whitespace is trimmed, around the whole and around the id;
    /// - the channel is ASCII letters, digits, `_` or `-`, lower-cased;
    /// - `phone:` ids are E.164 (`+` and up to 15 digits, see [`canonical_phone`]);
    /// - `email:` ids are Unicode NFC and lower-cased (mail providers ignore case);
    /// - other ids (`openid:…`, …) are opaque and case-sensitive, in Unicode NFC.
    ///
    /// The id is 1 to 512 bytes with no control characters.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        use unicode_normalization::UnicodeNormalization;
        // Intermediate copies of the identifier are wiped like the reference itself.
        let cleaned: zeroize::Zeroizing<String> =
            zeroize::Zeroizing::new(s.chars().filter(|c| !INVISIBLE.contains(c)).collect());
        let s = cleaned.trim();
        let (channel, id) = s.split_once(':').ok_or(CryptoError::BadExternalRef(
            "missing `:` between channel and id",
        ))?;
        let channel = channel.to_ascii_lowercase();
        let id = id.trim();
        if channel.is_empty() || channel.len() > 32 {
            return Err(CryptoError::BadExternalRef(
                "channel must be 1 to 32 characters",
            ));
        }
        if !channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(CryptoError::BadExternalRef(
                "channel may only use a-z, 0-9, `_` and `-`",
            ));
        }
        if id.is_empty() || id.len() > 512 {
            return Err(CryptoError::BadExternalRef("id must be 1 to 512 bytes"));
        }
        if id.chars().any(char::is_control) {
            return Err(CryptoError::BadExternalRef(
                "id contains control characters",
            ));
        }
        let id = zeroize::Zeroizing::new(match channel.as_str() {
            "phone" => canonical_phone(id)?,
            "email" => zeroize::Zeroizing::new(id.nfc().collect::<String>()).to_lowercase(),
            _ => id.nfc().collect(),
        });
        if id.len() > 512 {
            return Err(CryptoError::BadExternalRef("id must be 1 to 512 bytes"));
        }
        Ok(ExternalRef(format!("{channel}:{}", id.as_str())))
    }

    /// The lowercase channel before the `:` (`phone`, `email`, …); safe to log.
    pub fn channel(&self) -> &str {
        self.0.split_once(':').map(|(c, _)| c).unwrap_or("")
    }

    /// The full reference, for display to the person it belongs to (never to logs).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ExternalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalRef({}:[redacted])", self.channel())
    }
}

/// A subject's pseudonym: HMAC-SHA256(pepper, external reference) of the first reference
/// that created it. Safe to store and log; meaningless without the node's pepper.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectId([u8; 32]);

impl SubjectId {
    /// A pseudonym from its 32 raw bytes, as read back from storage.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        SubjectId(b)
    }
    /// A pseudonym from a slice, or `None` unless it is exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(SubjectId(b.try_into().ok()?))
    }
    /// The 32 raw bytes of the HMAC tag.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// Lowercase hex of the 32 bytes (64 characters), the form used in logs and exports.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses the form written by [`SubjectId::to_hex`] (either case); `None` unless it is valid
    /// hex of exactly 32 bytes.
    pub fn from_hex(s: &str) -> Option<Self> {
        let v = hex::decode(s).ok()?;
        Self::from_slice(&v)
    }

    /// Derives the pseudonym of `r` under `pepper`.
    pub fn derive(pepper: &Secret32, r: &ExternalRef) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, pepper.expose());
        let tag = hmac::sign(&key, r.expose().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        SubjectId(out)
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectId({})", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ref_same_pseudonym_other_pepper_other_pseudonym() {
        let r = ExternalRef::parse("phone:+15550001").unwrap();
        let p1 = Secret32::from_bytes([1; 32]);
        let p2 = Secret32::from_bytes([2; 32]);
        assert_eq!(SubjectId::derive(&p1, &r), SubjectId::derive(&p1, &r));
        assert_ne!(SubjectId::derive(&p1, &r), SubjectId::derive(&p2, &r));
    }

    #[test]
    fn pseudonym_matches_hmac_sha256_rfc4231_case_2() {
        // RFC 4231 test case 2 uses a 4-byte key; HMAC pads keys, so a 32-byte key made of
        // "Jefe" and zeros is the same key.
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(b"Jefe");
        let data = "what do ya want for nothing?";
        // Not a valid ExternalRef (no colon), so go through the HMAC directly.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
        let tag = hmac::sign(&key, data.as_bytes());
        assert_eq!(
            hex::encode(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_refs_are_refused_with_a_reason() {
        for bad in [
            "",
            "phone",
            ":123",
            "Phone:1",
            "phone:",
            "ph one:1",
            "phone:a\nb",
            "phone:5550001",
            "phone:+1234567890123456",
            "phone:+1 555 CALL",
            "phone:\u{200B}",
        ] {
            assert!(ExternalRef::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ExternalRef::parse(" email:ann@example.org ").is_ok());
    }

    #[test]
    fn every_way_of_writing_one_identifier_is_one_reference() {
        let same = |forms: &[&str]| {
            let first = ExternalRef::parse(forms[0]).unwrap();
            for f in forms {
                assert_eq!(ExternalRef::parse(f).unwrap(), first, "{f:?}");
            }
            first.expose().to_owned()
        };
        let phone = same(&[
            "phone:+8613800138000",
            "phone:+86 138 0013 8000",
            "Phone: +86-138-0013-8000",
            "phone:(+86) 138.0013.8000",
            "phone:008613800138000",
            "phone:＋８６１３８００１３８０００",
            "phone:+86\u{200B}13800138000",
        ]);
        assert_eq!(phone, "phone:+8613800138000");
        let email = same(&[
            "email:ann@example.org",
            "EMAIL:Ann@Example.ORG",
            "email: ann@example.org\u{FEFF}",
        ]);
        assert_eq!(email, "email:ann@example.org");
        // Opaque ids keep their case: `openid:Ab` and `openid:ab` are two people.
        assert_ne!(
            ExternalRef::parse("openid:Ab").unwrap(),
            ExternalRef::parse("openid:ab").unwrap()
        );
        // NFC: a precomposed and a decomposed é are one id.
        assert_eq!(
            ExternalRef::parse("wechat:caf\u{e9}").unwrap(),
            ExternalRef::parse("wechat:cafe\u{301}").unwrap()
        );
    }

    #[test]
    fn debug_never_shows_the_id() {
        let r = ExternalRef::parse("phone:+15550001").unwrap();
        let d = format!("{r:?}");
        assert!(!d.contains("5550001"), "{d}");
        assert!(d.contains("phone"));
    }
}
