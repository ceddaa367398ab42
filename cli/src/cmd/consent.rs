//! `amble consent …`: verify consent receipts.

use crate::output::Output;
use amble_crypto::VerifyingKey;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum ConsentCommand {
    /// Check a consent receipt's signature against the node's public key.
    VerifyReceipt {
        /// The receipt file (as printed by `amble node consent … give|withdraw`).
        file: PathBuf,
        /// The node's public key file (from `amble node pubkey`), or the key itself in base64.
        #[arg(long)]
        key: String,
    },
}

/// Reads a public key given as a file or inline: 32 bytes in base64, or a C2SP verifier key
/// (`name+hex+base64(0x01‖key)`).
pub(crate) fn load_public_key(arg: &str) -> Result<VerifyingKey> {
    let text = match std::fs::read_to_string(arg) {
        Ok(t) => t,
        Err(_) => arg.to_owned(),
    };
    let text = text.trim();
    if let Ok(k) = VerifyingKey::from_base64(text) {
        return Ok(k);
    }
    let b64 = text
        .rsplit('+')
        .next()
        .context("key is neither base64 nor a verifier key string")?;
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("key is not valid base64")?;
    match raw.split_first() {
        Some((1, key)) => Ok(VerifyingKey::from_slice(key)?),
        _ => anyhow::bail!("key {arg:?} is not an Ed25519 public key"),
    }
}

pub(crate) fn run(cmd: ConsentCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        ConsentCommand::VerifyReceipt { file, key } => {
            let key = load_public_key(&key)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            match amble_consent::verify_receipt(&bytes, &key) {
                Ok(r) => {
                    out.report(&r, || {
                        format!("receipt {} is valid: signed by {key}", r.consent_receipt_id)
                    });
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    out.error(&anyhow::anyhow!(
                        "receipt {} does not verify: {e}",
                        file.display()
                    ));
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
