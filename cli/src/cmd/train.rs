//! `amble train …`: local learning — the intent classifier and the need predictor.

use crate::cmd::node::DataDirArgs;
use crate::output::Output;
use amble_learn::model::FeatureKind;
use amble_learn::model::{Progress, SgdConfig};
use amble_learn::privacy::Budget;
use amble_learn::privacy::{Delta, Epsilon};
use amble_learn::train::{
    DpIntentConfig, IntentTrainConfig, NeedTrainConfig, Privacy, read_intent_csv, train_intent_csv,
    train_needs_helpdesk,
};
use amble_node::NeedsTrainConfig;
use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// What the intent classifier reads from a text.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Features {
    /// The built-in public sentence encoder (all-MiniLM-L6-v2, 384 values; English): the most
    /// accurate, above all under differential privacy.
    Sentence,
    /// Hashed character 2–5-grams and word 1–2-grams: any language, no segmentation (Chinese
    /// included), 2^--features-log2 values.
    Hashed,
    /// Both: the sentence encoder with 85 % of the norm, n-grams for the rest, for a mix of
    /// English and other languages.
    Both,
}

impl From<Features> for FeatureKind {
    fn from(f: Features) -> Self {
        match f {
            Features::Sentence => FeatureKind::Sentence,
            Features::Hashed => FeatureKind::Hashed,
            Features::Both => FeatureKind::Both,
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum TrainCommand {
    /// Train and evaluate the intent classifier: on CSV files (`text,category`, Banking77's
    /// format), or on a node's own archive with --data-dir (through the train.intent purpose).
    Intent(IntentArgs),
    /// Train and evaluate the need predictor on an event log (`case_id,activity,resource,timestamp`,
    /// e.g. data/helpdesk): predict each case's next activity from its prefix; or train this
    /// node's need model with --data-dir (through the train.needs purpose), which
    /// `Assist.PredictNeeds` then answers with.
    Needs(NeedsArgs),
}

#[derive(Args)]
pub(crate) struct NeedsArgs {
    #[arg(long, default_value = "data/helpdesk/train.csv")]
    train: PathBuf,
    #[arg(long, default_value = "data/helpdesk/test.csv")]
    test: PathBuf,
    /// Instead, generate N synthetic people (life stages → events → needs, with a planted
    /// rule) and measure against the known truth.
    #[arg(long, value_name = "N", conflicts_with = "data_dir")]
    synthetic: Option<usize>,
    /// Seed of the synthetic generator.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Train the need model of this node from its archive: only people whose consent for
    /// train.needs holds now, only the fields the policy grants that purpose.
    #[arg(long, env = "AMBLE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the node key file (default DATA_DIR/node.key).
    #[arg(long, env = "AMBLE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// With --data-dir: the policy file (default DATA_DIR/policy.toml).
    #[arg(long, env = "AMBLE_POLICY")]
    policy: Option<PathBuf>,
    /// With --data-dir: train with differential privacy at this ε per person, charged to the
    /// node's ledger (omit for a run with no privacy guarantee).
    #[arg(long, requires = "data_dir")]
    epsilon: Option<f64>,
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// With --data-dir: the node's ε budget per model and per person (kept in its ledger).
    #[arg(long, default_value_t = 10.0)]
    budget: f64,
    /// With --data-dir: the public list of needs (event kinds) the model may name, comma
    /// separated. Without it the needs are the event kinds seen at enough consenting people,
    /// a choice ε does not cover.
    #[arg(long, value_delimiter = ',', requires = "data_dir")]
    needs: Option<Vec<String>>,
}

#[derive(Args)]
pub(crate) struct IntentArgs {
    /// Training CSV (ignored with --data-dir).
    #[arg(long, default_value = "data/banking77/train.csv")]
    train: PathBuf,
    /// Test CSV.
    #[arg(long, default_value = "data/banking77/test.csv")]
    test: PathBuf,
    /// Train with differential privacy at this ε per person (omit for a non-private run).
    #[arg(long)]
    epsilon: Option<f64>,
    #[arg(long, default_value_t = 1e-5)]
    delta: f64,
    /// What the classifier reads from each text.
    #[arg(long, value_enum, default_value = "sentence")]
    features: Features,
    /// With --features hashed or both: n-gram buckets as a power of two (default: 16
    /// non-private, 14 private).
    #[arg(long, value_parser = clap::value_parser!(u8).range(8..=22))]
    features_log2: Option<u8>,
    /// Train on this node's archive instead of --train.
    #[arg(long, env = "AMBLE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the node key file (default DATA_DIR/node.key).
    #[arg(long, env = "AMBLE_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// With --data-dir: the policy file (default DATA_DIR/policy.toml).
    #[arg(long, env = "AMBLE_POLICY")]
    policy: Option<PathBuf>,
    /// With --data-dir: the node's ε budget per model and per person (kept in its ledger).
    #[arg(long, default_value_t = 10.0)]
    budget: f64,
}

fn intent_config(args: &IntentArgs) -> IntentTrainConfig {
    let private = args.epsilon.is_some();
    let features = FeatureKind::from(args.features).config(
        args.features_log2.unwrap_or(if private { 14 } else { 16 }),
        0.85,
    );
    let privacy = match args.epsilon {
        Some(e) => Privacy::Dp(DpIntentConfig {
            delta: args.delta,
            ..DpIntentConfig::for_features(&features, e)
        }),
        None => Privacy::None(SgdConfig::default()),
    };
    IntentTrainConfig { features, privacy }
}

pub(crate) fn run(cmd: TrainCommand, out: &Output) -> Result<ExitCode> {
    let bar = out.progress(0, "train");
    let progress = |p: Progress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
        bar.set_message(p.phase);
    };
    match cmd {
        TrainCommand::Intent(args) => {
            let cfg = intent_config(&args);
            let report = match &args.data_dir {
                None => train_intent_csv(&args.train, &args.test, &cfg, Some(&progress))
                    .with_context(|| format!("training on {}", args.train.display()))?,
                Some(dir) => {
                    let node = DataDirArgs {
                        data_dir: dir.clone(),
                        key_file: args.key_file.clone(),
                        policy: args.policy.clone(),
                    }
                    .open()?;
                    let test = read_intent_csv(&args.test)?;
                    let budget = Budget {
                        model_epsilon: Epsilon::new(args.budget)?,
                        subject_epsilon: Epsilon::new(args.budget)?,
                        delta: Delta::new(args.delta)?,
                    };
                    let trainer =
                        amble_node::Actor::local("node:trainer", amble_policy::Role::Node);
                    let run = node.train_intent(&trainer, &cfg, budget, &test, Some(&progress))?;
                    bar.finish_and_clear();
                    out.report(&run, || {
                        format!(
                            "trained on {} examples from {} consenting people ({} without consent were not read)\naccuracy {:.2} %, macro-F1 {:.3}{}",
                            run.examples,
                            run.subjects_used,
                            run.subjects_refused,
                            100.0 * run.report.accuracy,
                            run.report.macro_f1,
                            run.charge.as_ref().map_or(String::new(), |c| format!(
                                "\nthis run: ε = {:.3}; model total: ε = {:.3}",
                                c.run.epsilon.value(),
                                c.model_total.epsilon.value()
                            ))
                        )
                    });
                    return Ok(ExitCode::SUCCESS);
                }
            };
            bar.finish_and_clear();
            out.report(&report, || {
                format!(
                    "accuracy {:.2} %  macro-F1 {:.3}  calibration error {:.3}  {}\n{} classes, {} train / {} test examples; {:.1} s featurising, {:.2} s training ({:.3} s per epoch)",
                    100.0 * report.accuracy,
                    report.macro_f1,
                    report.calibration_error,
                    report
                        .guarantee
                        .clone()
                        .unwrap_or_else(|| "not private".into()),
                    report.classes,
                    report.train_examples,
                    report.test_examples,
                    report.featurise_seconds,
                    report.train_seconds,
                    report.seconds_per_epoch
                )
            });
        }
        TrainCommand::Needs(args) => return train_needs(args, out, &bar, &progress),
    }
    Ok(ExitCode::SUCCESS)
}

fn train_needs(
    args: NeedsArgs,
    out: &Output,
    bar: &indicatif::ProgressBar,
    progress: &dyn Fn(Progress),
) -> Result<ExitCode> {
    if let Some(dir) = &args.data_dir {
        let node = DataDirArgs {
            data_dir: dir.clone(),
            key_file: args.key_file.clone(),
            policy: args.policy.clone(),
        }
        .open()?;
        let mut cfg = match args.epsilon {
            Some(e) => NeedsTrainConfig::private(e, args.delta),
            None => NeedsTrainConfig::not_private(),
        };
        cfg.labels = args.needs.clone();
        let budget = Budget {
            model_epsilon: Epsilon::new(args.budget)?,
            subject_epsilon: Epsilon::new(args.budget)?,
            delta: Delta::new(args.delta)?,
        };
        let trainer = amble_node::Actor::local("node:trainer", amble_policy::Role::Node);
        let run = node
            .train_needs(&trainer, &cfg, budget, Some(progress))
            .with_context(|| format!("training the need model of {}", dir.display()))?;
        bar.finish_and_clear();
        out.report(&run, || {
            format!(
                "need model (run {}) trained on {} examples from {} consenting people ({} without consent were not read); it names {} needs ({} rare event kinds left out)\n{}\nmodel {}",
                run.run,
                run.examples,
                run.subjects_used,
                run.subjects_refused,
                run.needs,
                run.needs_dropped,
                run.charge.as_ref().map_or(
                    "not private: no differential-privacy guarantee (pass --epsilon for one)".to_owned(),
                    |c| format!(
                        "this run: ε = {:.3}; need model total: ε = {:.3}",
                        c.run.epsilon.value(),
                        c.model_total.epsilon.value()
                    )
                ),
                &run.model_sha256[..run.model_sha256.len().min(16)]
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(n) = args.synthetic {
        let synth = amble_learn::experiment::SynthConfig {
            subjects: n,
            seed: args.seed,
            ..amble_learn::experiment::SynthConfig::default()
        };
        let (_, r) = amble_learn::train::train_needs_synthetic(&synth, Some(progress))?;
        bar.finish_and_clear();
        out.report(&r, || {
            format!(
                "accuracy against the planted rule {:.4} over {} synthetic test people (majority baseline {:.4}); {} needs",
                r.accuracy, r.test_prefixes, r.baseline_accuracy, r.classes
            )
        });
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = NeedTrainConfig::default();
    let r = train_needs_helpdesk(&args.train, &args.test, &cfg, Some(progress))
        .with_context(|| format!("training on {}", args.train.display()))?;
    bar.finish_and_clear();
    out.report(&r, || {
        format!(
            "next-activity accuracy {:.4} over {} test prefixes (most-frequent-next baseline {:.4}); {} classes, {:.2} s",
            r.accuracy, r.test_prefixes, r.baseline_accuracy, r.classes, r.train_seconds
        )
    });
    Ok(ExitCode::SUCCESS)
}
