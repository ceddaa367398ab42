//! `amble policy …`: check a policy file and derive its record of processing.

use crate::output::Output;
use amble_policy::Policy;
use anyhow::Result;
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

pub(crate) fn run(cmd: PolicyCommand, out: &Output) -> Result<ExitCode> {
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
