//! `amble policy …`: check a policy file and derive its record of processing and the
//! skeleton of its impact assessment.

use crate::output::Output;
use amble_policy::{Language, Policy, TrainingGuarantee};
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
    /// Print the skeleton of an impact assessment (GDPR Art. 35 DPIA, PIPL Art. 55–56 PIIA)
    /// derived from a policy, as Markdown: what the policy and the node enforce is filled in,
    /// what only the organisation can judge is left as questions. With --data-dir, the node's
    /// privacy ledger states the ε each trained model has spent so far.
    Dpia {
        file: PathBuf,
        /// A node's data directory, to read its privacy ledger (the node must be stopped, or
        /// this is refused: the archive is open in the running node).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The node key file; defaults to DATA_DIR/node.key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: PolicyCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        PolicyCommand::Check { file } => {
            let p = Policy::load(&file)?;
            let fallbacks = fallbacks(&p);
            out.report(
                &serde_json::json!({"file": file, "version": p.version(),
                    "language": p.language().as_str(),
                    "controller": p.controller().map(|c| c.pii_controller.clone()),
                    "purposes": p.purposes().map(|x| x.id.clone()).collect::<Vec<_>>(),
                    "fallbacks": fallbacks.iter().map(|f| serde_json::json!({
                        "purpose": f.purpose, "language": f.wanted.as_str(),
                        "shown_in": f.shown_in.as_str()})).collect::<Vec<_>>()}),
                || {
                    let mut text = format!(
                        "{} is valid (version {})\n\n{}",
                        file.display(),
                        p.version(),
                        p.summary_table()
                    );
                    if p.controller().is_none() {
                        text.push_str(
                            "\nThe policy names no [controller]: receipts, exports and the \
                             self-service page will name a placeholder. Add one (name, contact, \
                             address, email, phone).\n",
                        );
                    }
                    if !fallbacks.is_empty() {
                        text.push_str(
                            "\nNot every description is translated; the self-service page falls \
                             back (add `descriptions` to the purpose to fix):\n",
                        );
                    }
                    for f in &fallbacks {
                        text.push_str(&format!(
                            "  purpose `{}` has no {} description; readers of {} see the {} one\n",
                            f.purpose, f.wanted, f.wanted, f.shown_in
                        ));
                    }
                    text
                },
            );
        }
        PolicyCommand::Ropa { file } => {
            let p = Policy::load(&file)?;
            println!("{}", p.ropa_markdown());
        }
        PolicyCommand::Dpia {
            file,
            data_dir,
            key_file,
        } => {
            let p = Policy::load(&file)?;
            let training = match data_dir {
                Some(dir) => Some(training_guarantees(&dir, key_file.as_deref())?),
                None => None,
            };
            println!("{}", p.dpia_markdown(training.as_deref()));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A purpose the self-service page shows in another language than its reader's.
struct Fallback<'p> {
    purpose: &'p str,
    wanted: Language,
    shown_in: Language,
}

fn fallbacks(p: &Policy) -> Vec<Fallback<'_>> {
    p.untranslated()
        .into_iter()
        .filter_map(|(id, wanted)| {
            let shown_in = p.purpose(id)?.description_in(wanted).language;
            Some(Fallback {
                purpose: id,
                wanted,
                shown_in,
            })
        })
        .collect()
}

/// What each model trained at the node in `dir` has spent, from its privacy ledger.
fn training_guarantees(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
) -> Result<Vec<TrainingGuarantee>> {
    let node = amble_node::Node::open(dir, key_file, None)?;
    let Some(ledger) = node.stored_ledger()? else {
        return Ok(Vec::new());
    };
    let mut models: Vec<&str> = ledger.runs().iter().map(|r| r.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let budget = ledger.budget();
    models
        .into_iter()
        .map(|model| {
            let spent = ledger.model_spent(model)?;
            Ok(TrainingGuarantee {
                purpose: match model {
                    "needs" => "train.needs".to_owned(),
                    m if m.starts_with("intent") => "train.intent".to_owned(),
                    other => other.to_owned(),
                },
                model: model.to_owned(),
                runs: ledger.runs().iter().filter(|r| r.model == model).count(),
                epsilon: spent.epsilon.value(),
                delta: spent.delta.value(),
                budget_epsilon: budget.model_epsilon.value(),
                subject_budget_epsilon: budget.subject_epsilon.value(),
            })
        })
        .collect()
}
