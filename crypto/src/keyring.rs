//! The node keyring: versioned master keys (KEKs), the pseudonym pepper, the signing seed.
//!
//! On disk it is one JSON file that must be readable by its owner only (mode 0600):
//! `{"format":"amble-keyring/v1","current":2,"keks":[{"version":1,"key":"<b64>"},…],
//!   "pepper":"<b64>","signing_seed":"<b64>"}`.
//! A future HSM would replace this file behind the same type.

use crate::private_file::{check_private, write_private};
use crate::seal::{aead_key, open_with_key, seal_with_key};
use crate::{CryptoError, DataKey, Secret32, SigningKey, SubjectId, WrappedKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

/// The `format` value a key file must carry; any other value is refused on load.
pub const KEYRING_FORMAT: &str = "amble-keyring/v1";
const DEK_AAD_DOMAIN: &[u8] = b"amble/dek/v1";

/// Generation number of a node master key (KEK), starting at 1 and raised by each rotation.
pub type KekVersion = u32;

/// The node's keys. Zeroized on drop (each key is a [`Secret32`]); never printed.
pub struct Keyring {
    keks: BTreeMap<KekVersion, Secret32>,
    current: KekVersion,
    pepper: Secret32,
    signing_seed: Secret32,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    format: String,
    current: KekVersion,
    keks: Vec<KekEntry>,
    pepper: String,
    signing_seed: String,
}

#[derive(Serialize, Deserialize)]
struct KekEntry {
    version: KekVersion,
    key: String,
}

impl Keyring {
    /// A new keyring with one master key (version 1), a pepper and a signing seed.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut keks = BTreeMap::new();
        keks.insert(1, Secret32::random()?);
        Ok(Keyring {
            keks,
            current: 1,
            pepper: Secret32::random()?,
            signing_seed: Secret32::random()?,
        })
    }

    /// Generates a keyring and writes it to `path` (mode 0600). Refuses to overwrite.
    pub fn create(path: &Path) -> Result<Self, CryptoError> {
        if path.exists() {
            return Err(CryptoError::KeyFileExists(path.to_owned()));
        }
        let k = Self::generate()?;
        k.save(path)?;
        Ok(k)
    }

    /// Loads the key file at `path`, refusing one that group or others can read.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        check_private(path)?;
        let io = |source| CryptoError::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let fmt_err = |reason: String| CryptoError::KeyFileFormat {
            path: path.to_owned(),
            reason,
        };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| fmt_err(e.to_string()))?;
        let file = ZeroizingKeyFile(file);
        if file.0.format != KEYRING_FORMAT {
            return Err(fmt_err(format!(
                "format is {:?}, expected {KEYRING_FORMAT:?}",
                file.0.format
            )));
        }
        let decode = |name: &str, s: &str| -> Result<Secret32, CryptoError> {
            let bytes = Zeroizing::new(
                B64.decode(s)
                    .map_err(|_| fmt_err(format!("{name} is not base64")))?,
            );
            Secret32::from_slice(&bytes).ok_or_else(|| fmt_err(format!("{name} is not 32 bytes")))
        };
        let mut keks = BTreeMap::new();
        for e in &file.0.keks {
            let k = decode(&format!("master key v{}", e.version), &e.key)?;
            if keks.insert(e.version, k).is_some() {
                return Err(fmt_err(format!("master key v{} appears twice", e.version)));
            }
        }
        if !keks.contains_key(&file.0.current) {
            return Err(fmt_err(format!(
                "current master key v{} is missing",
                file.0.current
            )));
        }
        Ok(Keyring {
            keks,
            current: file.0.current,
            pepper: decode("pepper", &file.0.pepper)?,
            signing_seed: decode("signing_seed", &file.0.signing_seed)?,
        })
    }

    /// Writes the keyring to `path` atomically with mode 0600 (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        let io = |source| CryptoError::KeyFileIo {
            path: path.to_owned(),
            source,
        };
        let file = ZeroizingKeyFile(KeyFile {
            format: KEYRING_FORMAT.to_owned(),
            current: self.current,
            keks: self
                .keks
                .iter()
                .map(|(v, k)| KekEntry {
                    version: *v,
                    key: B64.encode(k.expose()),
                })
                .collect(),
            pepper: B64.encode(self.pepper.expose()),
            signing_seed: B64.encode(self.signing_seed.expose()),
        });
        let text = Zeroizing::new(serde_json::to_string_pretty(&file.0).map_err(|e| {
            CryptoError::KeyFileFormat {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        })?);
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() + 1));
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        write_private(path, &bytes).map_err(io)
    }

    /// The master key version that [`Keyring::wrap`] uses for new and rewrapped data keys.
    pub fn current_version(&self) -> KekVersion {
        self.current
    }

    /// Every master key version still held, in ascending order (the current one included).
    pub fn versions(&self) -> Vec<KekVersion> {
        self.keks.keys().copied().collect()
    }

    /// Adds a new master key and makes it current. Older versions stay until
    /// [`Keyring::retire_all_but_current`], so data keys wrapped under them still open.
    pub fn rotate(&mut self) -> Result<KekVersion, CryptoError> {
        let next = self.current.checked_add(1).ok_or(CryptoError::Rng)?;
        let next = next.max(self.keks.keys().last().map_or(1, |v| v + 1));
        self.keks.insert(next, Secret32::random()?);
        self.current = next;
        Ok(next)
    }

    /// Forgets every master key but the current one; call once every data key is rewrapped.
    pub fn retire_all_but_current(&mut self) -> Vec<KekVersion> {
        let old: Vec<_> = self
            .keks
            .keys()
            .copied()
            .filter(|v| *v != self.current)
            .collect();
        for v in &old {
            self.keks.remove(v);
        }
        old
    }

    /// The HMAC key that turns external references into [`SubjectId`]s. Losing or changing it
    /// makes every stored pseudonym unreachable from its external reference.
    pub fn pepper(&self) -> &Secret32 {
        &self.pepper
    }

    /// The node's Ed25519 signing key, rebuilt from the stored seed on each call.
    pub fn signing_key(&self) -> Result<SigningKey, CryptoError> {
        SigningKey::from_seed(self.signing_seed.clone())
    }

    /// Wraps `dek` for `subject` under the current master key.
    pub fn wrap(&self, subject: &SubjectId, dek: &DataKey) -> Result<WrappedKey, CryptoError> {
        let kek = self
            .keks
            .get(&self.current)
            .ok_or(CryptoError::UnknownKekVersion(self.current))?;
        let aad = dek_aad(subject, dek.version());
        let sealed = seal_with_key(&aead_key(kek)?, self.current, &aad, dek.secret().expose())?;
        // sealed = ver(1) ‖ kek_version(4) ‖ nonce ‖ ct ‖ tag; store dek_version ‖ nonce ‖ ct ‖ tag.
        let mut body = Vec::with_capacity(sealed.len() - 1);
        body.extend_from_slice(&dek.version().to_be_bytes());
        body.extend_from_slice(&sealed[5..]);
        Ok(WrappedKey {
            kek_version: self.current,
            body,
        })
    }

    /// Unwraps a data key stored for `subject`, with whichever master key version wrapped it.
    pub fn unwrap(&self, subject: &SubjectId, w: &WrappedKey) -> Result<DataKey, CryptoError> {
        let kek = self
            .keks
            .get(&w.kek_version)
            .ok_or(CryptoError::UnknownKekVersion(w.kek_version))?;
        if w.body.len() < 4 {
            return Err(CryptoError::UnwrapFailed);
        }
        let dek_version = u32::from_be_bytes([w.body[0], w.body[1], w.body[2], w.body[3]]);
        let mut sealed = Vec::with_capacity(w.body.len() + 1);
        sealed.push(crate::SEAL_VERSION);
        sealed.extend_from_slice(&w.kek_version.to_be_bytes());
        sealed.extend_from_slice(&w.body[4..]);
        let plain = open_with_key(
            &aead_key(kek)?,
            w.kek_version,
            &dek_aad(subject, dek_version),
            &sealed,
        )
        .map_err(|_| CryptoError::UnwrapFailed)?;
        let secret = Secret32::from_slice(plain.as_bytes()).ok_or(CryptoError::UnwrapFailed)?;
        DataKey::from_parts(secret, dek_version)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Keyring(current v{}, versions {:?}, [redacted])",
            self.current,
            self.versions()
        )
    }
}

fn dek_aad(subject: &SubjectId, dek_version: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(DEK_AAD_DOMAIN.len() + 36);
    v.extend_from_slice(DEK_AAD_DOMAIN);
    v.extend_from_slice(subject.as_bytes());
    v.extend_from_slice(&dek_version.to_be_bytes());
    v
}

/// Holds the serialised key file's strings and wipes them on drop.
struct ZeroizingKeyFile(KeyFile);

impl Drop for ZeroizingKeyFile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.pepper.zeroize();
        self.0.signing_seed.zeroize();
        for e in &mut self.0.keks {
            e.key.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> SubjectId {
        SubjectId::from_bytes([5; 32])
    }

    #[test]
    fn key_file_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        let k = Keyring::create(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let k2 = Keyring::load(&p).unwrap();
        let dek = DataKey::generate(1).unwrap();
        let w = k.wrap(&sid(), &dek).unwrap();
        assert_eq!(
            k2.unwrap(&sid(), &w).unwrap().secret(),
            dek.secret(),
            "loaded keyring unwraps what the original wrapped"
        );
        assert!(matches!(
            Keyring::create(&p),
            Err(CryptoError::KeyFileExists(_))
        ));
    }

    #[cfg(unix)]
    #[test]
    fn group_readable_key_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        Keyring::create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::load(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn rotation_keeps_old_wraps_open_until_retired() {
        let mut k = Keyring::generate().unwrap();
        let dek = DataKey::generate(1).unwrap();
        let old = k.wrap(&sid(), &dek).unwrap();
        assert_eq!(k.rotate().unwrap(), 2);
        assert_eq!(k.unwrap(&sid(), &old).unwrap().secret(), dek.secret());
        let new = k.wrap(&sid(), &dek).unwrap();
        assert_eq!(new.kek_version, 2);
        assert_eq!(k.retire_all_but_current(), vec![1]);
        assert!(matches!(
            k.unwrap(&sid(), &old),
            Err(CryptoError::UnknownKekVersion(1))
        ));
        assert!(k.unwrap(&sid(), &new).is_ok());
    }

    #[test]
    fn wrapped_key_bound_to_its_subject() {
        let k = Keyring::generate().unwrap();
        let dek = DataKey::generate(1).unwrap();
        let w = k.wrap(&sid(), &dek).unwrap();
        let w2 = WrappedKey::from_bytes(&w.to_bytes()).unwrap();
        assert!(k.unwrap(&sid(), &w2).is_ok());
        assert!(matches!(
            k.unwrap(&SubjectId::from_bytes([6; 32]), &w2),
            Err(CryptoError::UnwrapFailed)
        ));
        let other = Keyring::generate().unwrap();
        assert!(other.unwrap(&sid(), &w2).is_err());
    }

    #[test]
    fn keyring_debug_is_redacted() {
        let k = Keyring::generate().unwrap();
        let d = format!("{k:?}");
        assert!(d.contains("[redacted]"));
        assert!(!d.contains(&B64.encode(k.pepper().expose())));
    }
}
