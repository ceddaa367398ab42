//! C2SP signed notes (<https://c2sp.org/signed-note>) with Ed25519 keys, and
//! C2SP `tlog-checkpoint` bodies (<https://c2sp.org/tlog-checkpoint>).
//!
//! A note is its text (ending in a newline), a blank line, then one line per signature:
//! `— <name> <base64(key id ‖ signature)>`. The key id is the first 4 bytes of
//! SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key). Signatures from keys the verifier does not know
//! are ignored, as the spec asks, so a witness (the coordinator) can add its cosignature
//! without breaking older verifiers.

use crate::error::NoteError;
use crate::hash::Hash;
use amble_crypto::{Secret32, SigningKey, VerifyingKey, sha256};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use std::fmt;
use zeroize::Zeroizing;

/// The Ed25519 signature-type byte of C2SP key encodings.
const ALG_ED25519: u8 = 0x01;
/// Upper bound on signature lines, as in the Go reference implementation.
const MAX_SIGNATURES: usize = 100;
const SIG_PREFIX: &str = "\u{2014} ";

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::BadKeyName(name.to_owned()));
    }
    Ok(())
}

/// First 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 34);
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(ALG_ED25519);
    buf.extend_from_slice(key.as_bytes());
    let h = sha256(&buf);
    [h[0], h[1], h[2], h[3]]
}

/// The common shape of both key strings: `name+hex8(key id)+base64(0x01 ‖ 32 key bytes)`.
/// The decoded bytes are zeroized on drop, since for a private key they are the seed.
struct KeyString<'a> {
    name: &'a str,
    id_hex: &'a str,
    key: Zeroizing<Vec<u8>>,
}

impl<'a> KeyString<'a> {
    fn parse(s: &'a str) -> Option<Self> {
        let mut parts = s.splitn(3, '+');
        let (name, id_hex, b64) = (parts.next()?, parts.next()?, parts.next()?);
        let key = Zeroizing::new(B64.decode(b64).ok()?);
        (key.len() == 33 && key[0] == ALG_ED25519).then_some(KeyString { name, id_hex, key })
    }

    fn check_id(&self, id: [u8; 4]) -> Result<(), NoteError> {
        if self.id_hex.len() != 8 || hex::encode(id) != self.id_hex {
            return Err(NoteError::KeyIdMismatch(self.name.to_owned()));
        }
        Ok(())
    }
}

/// A public note key: `name+hex8(key id)+base64(0x01 ‖ public key)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// The verifier for `key` under `name`, computing its key id; fails with
    /// [`NoteError::BadKeyName`] if `name` is empty or has whitespace or `+`.
    pub fn new(name: &str, key: VerifyingKey) -> Result<Self, NoteError> {
        check_name(name)?;
        Ok(NoteVerifier {
            name: name.to_owned(),
            id: key_id(name, &key),
            key,
        })
    }

    /// Parses a verifier key string and checks that its key id matches its name and key.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let s = s.trim();
        let parts = KeyString::parse(s).ok_or_else(|| NoteError::BadVerifierKey(s.to_owned()))?;
        let key = VerifyingKey::from_slice(&parts.key[1..])
            .map_err(|_| NoteError::BadVerifierKey(s.to_owned()))?;
        let v = NoteVerifier::new(parts.name, key)?;
        parts.check_id(v.id)?;
        Ok(v)
    }

    /// The key name, which signature lines must carry (for a log key, the log's origin).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The 4-byte key id that prefixes each of this key's signatures.
    pub fn key_id(&self) -> [u8; 4] {
        self.id
    }
    /// The Ed25519 public key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Display for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(raw)
        )
    }
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

/// A private note key: `PRIVATE+KEY+name+hex8(key id)+base64(0x01 ‖ seed)`.
/// `Debug` never shows the seed.
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl NoteSigner {
    /// A signer using `key` under `name`; fails with [`NoteError::BadKeyName`] if `name` is
    /// empty or has whitespace or `+`.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        check_name(name)?;
        let id = key_id(name, &key.verifying_key());
        Ok(NoteSigner {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// A signer over a copy of `key`'s seed (the copy is zeroized when dropped).
    pub fn from_key(name: &str, key: &SigningKey) -> Result<Self, NoteError> {
        let copy =
            SigningKey::from_seed(key.seed().clone()).map_err(|_| NoteError::BadSignerKey)?;
        NoteSigner::new(name, copy)
    }

    /// Parses a private key string and checks its key id.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let parts = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .and_then(KeyString::parse)
            .ok_or(NoteError::BadSignerKey)?;
        let seed = Secret32::from_slice(&parts.key[1..]).ok_or(NoteError::BadSignerKey)?;
        let key = SigningKey::from_seed(seed).map_err(|_| NoteError::BadSignerKey)?;
        let signer = NoteSigner::new(parts.name, key)?;
        parts.check_id(signer.id)?;
        Ok(signer)
    }

    /// The private key string. It carries the seed: write it only to a 0600 key file.
    pub fn to_private_key_string(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ALG_ED25519);
        raw.extend_from_slice(self.key.seed().expose());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.id),
            B64.encode(&*raw)
        ))
    }

    /// The public key string others check this signer's notes with.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The key name written on each signature line.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&sig);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }

    /// Signs `text` into a new note with this one signature.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        Ok(format!("{text}\n{}", self.signature_line(text)))
    }

    /// Adds this key's signature to an existing note (a cosignature). The note's existing
    /// signatures are kept as they are, verified or not; a signature by this same key is
    /// replaced rather than duplicated.
    pub fn add_signature(&self, note: &str) -> Result<String, NoteError> {
        let (text, sigs) = split_note(note)?;
        let mut out = format!("{text}\n");
        for s in sigs
            .iter()
            .filter(|s| !(s.name == self.name && s.id == self.id))
        {
            out.push_str(s.line);
        }
        out.push_str(&self.signature_line(text));
        Ok(out)
    }
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}, [redacted])", self.name)
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "text must be non-empty and end with a newline",
        ));
    }
    if text.chars().any(|c| c != '\n' && c.is_ascii_control()) {
        return Err(NoteError::Malformed(
            "text must not contain control characters other than newline",
        ));
    }
    Ok(())
}

struct RawSig<'a> {
    line: &'a str,
    name: &'a str,
    id: [u8; 4],
    sig: Vec<u8>,
}

fn split_note(note: &str) -> Result<(&str, Vec<RawSig<'_>>), NoteError> {
    let split = note
        .rfind("\n\n")
        .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
    let text = &note[..split + 1];
    check_text(text)?;
    let sig_block = &note[split + 2..];
    if sig_block.is_empty() || !sig_block.ends_with('\n') {
        return Err(NoteError::Malformed(
            "signature block must be non-empty and end with a newline",
        ));
    }
    let mut sigs = Vec::new();
    for line in sig_block.split_inclusive('\n') {
        if sigs.len() == MAX_SIGNATURES {
            return Err(NoteError::Malformed("more than 100 signatures"));
        }
        let body = line
            .strip_prefix(SIG_PREFIX)
            .and_then(|l| l.strip_suffix('\n'))
            .ok_or(NoteError::Malformed(
                "signature line must start with \"— \"",
            ))?;
        let (name, b64) = body.split_once(' ').ok_or(NoteError::Malformed(
            "signature line must be \"— name signature\"",
        ))?;
        check_name(name)?;
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not standard base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature too short"));
        }
        sigs.push(RawSig {
            line,
            name,
            id: [raw[0], raw[1], raw[2], raw[3]],
            sig: raw[4..].to_vec(),
        });
    }
    Ok((text, sigs))
}

/// A note whose signatures have been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Known keys whose signatures verified, in the order they appear.
    pub verified_by: Vec<NoteVerifier>,
    /// Signatures from keys not in the known set (ignored, per the spec).
    pub unknown_signers: Vec<String>,
}

/// Opens `note` against `known` keys. Every signature by a known key must verify (a bad one
/// is an error, not ignored); signatures by unknown keys are ignored; at least one known key
/// must have signed.
pub fn open_note(note: &str, known: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let (text, sigs) = split_note(note)?;
    let mut verified_by: Vec<NoteVerifier> = Vec::new();
    let mut unknown_signers = Vec::new();
    for s in &sigs {
        match known.iter().find(|k| k.name == s.name && k.id == s.id) {
            Some(k) => {
                if k.key.verify(text.as_bytes(), &s.sig).is_err() {
                    return Err(NoteError::BadSignature(s.name.to_owned()));
                }
                if !verified_by.contains(k) {
                    verified_by.push(k.clone());
                }
            }
            None => unknown_signers.push(s.name.to_owned()),
        }
    }
    if verified_by.is_empty() {
        return Err(NoteError::NoKnownSignature);
    }
    Ok(OpenedNote {
        text: text.to_owned(),
        verified_by,
        unknown_signers,
    })
}

/// Opens `note` and insists that `required` (e.g. the log's own key) is among the signers;
/// `others` (e.g. witnesses) are checked when present.
pub fn verify_note(
    note: &str,
    required: &NoteVerifier,
    others: &[NoteVerifier],
) -> Result<OpenedNote, NoteError> {
    let mut known = vec![required.clone()];
    known.extend(others.iter().filter(|k| *k != required).cloned());
    let opened = open_note(note, &known).map_err(|e| match e {
        NoteError::NoKnownSignature => NoteError::MissingSignature(required.name.clone()),
        other => other,
    })?;
    if !opened.verified_by.contains(required) {
        return Err(NoteError::MissingSignature(required.name.clone()));
    }
    Ok(opened)
}

/// A C2SP tlog-checkpoint body: origin, tree size, root hash (and optional extension lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name (first line); amble uses the log key's name.
    pub origin: String,
    /// Number of entries in the tree the checkpoint commits to.
    pub size: u64,
    /// RFC 9162 root hash of that tree.
    pub root: Hash,
    /// Extension lines after the root, each without its newline; amble writes none.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines; fails with [`NoteError::BadOrigin`] if `origin` is
    /// empty or contains a control character.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, NoteError> {
        if origin.is_empty() || origin.contains('\n') || origin.chars().any(|c| c.is_control()) {
            return Err(NoteError::BadOrigin(origin.to_owned()));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The note text: `origin\nsize\nbase64(root)\n` then any extension lines.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses a checkpoint body (the text of an opened note).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::BadCheckpoint("text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        let size = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("missing tree size line"))?;
        let root = lines
            .next()
            .ok_or(NoteError::BadCheckpoint("missing root hash line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::BadCheckpoint(
                "tree size must be a decimal number",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| NoteError::BadCheckpoint("tree size does not fit in 64 bits"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(NoteError::BadCheckpoint("root must be base64 of 32 bytes"))?;
        let mut cp = Checkpoint::new(origin, size, root)?;
        cp.extensions = lines.map(str::to_owned).collect();
        Ok(cp)
    }

    /// Signs this checkpoint with `key` under the key name `origin` (C2SP convention).
    pub fn sign(&self, key: &NoteSigner) -> Result<String, NoteError> {
        key.sign(&self.to_text())
    }
}
