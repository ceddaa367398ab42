//! `amble policy …` and `amble consent …`: checking policies and receipts offline.

use crate::output::Output;
use amble_crypto::VerifyingKey;
use amble_policy::Policy;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy file and print what each purpose may read (purposes × collections ×
    /// fields, with transforms). An invalid file is reported with its line and column.
    Check { file: PathBuf },
    /// Print the GDPR Art. 30 record of processing activities derived from a policy, as Markdown.
    Ropa { file: PathBuf },
}

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

pub(crate) fn run_policy(cmd: PolicyCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file } => {
            let p = Policy::load(&file)?;
            out.report(
                &serde_json::json!({"file": file, "version": p.version(),
                    "purposes": p.purposes().map(|x| x.id.clone()).collect::<Vec<_>>()}),
                || {
                    format!(
                        "{} is valid (version {})\n\n{}",
                        file.display(),
                        p.version(),
                        p.summary_table()
                    )
                },
            );
        }
        PolicyCommand::Ropa { file } => {
            let p = Policy::load(&file)?;
            println!("{}", p.ropa_markdown());
        }
    }
    Ok(ExitCode::SUCCESS)
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

pub(crate) fn run_consent(cmd: ConsentCommand, out: &Output) -> Result<ExitCode> {
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
