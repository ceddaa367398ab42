//! The coordinator's Ed25519 key: signs its own audit checkpoints and, as the federation's
//! witness, cosigns nodes' checkpoints. A 32-byte seed in a 0600 file in the data directory.

use crate::{CoordinatorError, Result};
use amble_crypto::{Secret32, SigningKey};
use std::path::Path;
use zeroize::Zeroizing;

pub(crate) fn load_or_create(path: &Path) -> Result<SigningKey> {
    let io = |source| CoordinatorError::Io {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        amble_crypto::check_private(path)?;
        let bytes = Zeroizing::new(std::fs::read(path).map_err(io)?);
        let seed = Secret32::from_slice(&bytes).ok_or_else(|| {
            CoordinatorError::Corrupt(format!(
                "{} must hold exactly 32 bytes (the witness key seed)",
                path.display()
            ))
        })?;
        return Ok(SigningKey::from_seed(seed)?);
    }
    let key = SigningKey::generate()?;
    amble_crypto::write_private(path, key.seed().expose()).map_err(io)?;
    Ok(key)
}
