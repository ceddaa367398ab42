//! `amble`: the one binary for node operators, federation operators, end users and auditors.
//!
//! A thin layer over the library crates (see `docs/ARCHITECTURE.md`): it parses arguments,
//! opens what the command needs, calls one library function and prints the result for a
//! person (or as JSON with `--json`). Each `amble <word>` is one file under `cmd/`. Exit codes: 0 success, 1 error, 2 usage error,
//! 3 access denied by consent or policy.

mod cmd;
mod common;
mod output;

use cmd::{
    assist, audit, consent, coordinator, demo, node, pki, policy, privacy, register, subject, train,
};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "amble",
    version,
    about = "Privacy-first life archives for customer service, learned from together",
    long_about = "amble keeps each person's life archive encrypted at the organisation that holds it, \
lets it be read only for purposes the person agreed to and the policy allows, and logs every access.\n\n\
Start with `amble demo` for a guided walkthrough, or `amble node init --data-dir ./node1` to set up a node.",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 denied by consent or policy."
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// How `node serve` and `coordinator serve` log to stderr: `text` for people, `json` for
    /// one JSON object per line (log collectors). Logs never carry personal data or secrets.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "AMBLE_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Installs the log subscriber of a long-running service: INFO and above to stderr, as text
/// (coloured only on a terminal) or as JSON lines.
fn init_service_log(format: LogFormat) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

#[derive(Subcommand)]
enum Command {
    /// A federation on this machine: CA, coordinator and organisation nodes learning together
    /// with per-person differential privacy; consent withdrawal, export, erase, audit (nothing
    /// left behind). `--single-node` walks through one node instead.
    Demo(demo::DemoArgs),
    /// Operate a node's data directory directly (offline commands).
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Check a policy file and derive its record of processing.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Export, verify and prove a node's tamper-evident access log (auditors).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Privacy accountant: ε for a training plan, or σ for a target ε.
    #[command(subcommand)]
    Privacy(privacy::PrivacyCommand),
    /// Train and evaluate models locally (intent classifier, need predictor).
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Verify consent receipts.
    #[command(subcommand)]
    Consent(consent::ConsentCommand),
    /// Run the federation's certificate authority: init, issue, revoke, list.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// A subject's rights over a running node (mutual TLS): consent, export, erase, access log.
    #[command(subcommand)]
    Subject(subject::SubjectCommand),
    /// The privacy officer's register of people's requests over a running node (mutual TLS):
    /// list what is open or overdue, answer a request.
    #[command(subcommand)]
    Register(register::RegisterCommand),
    /// Ask a running node what a text is about and who should answer it (mutual TLS).
    #[command(subcommand)]
    Assist(assist::AssistCommand),
    /// Run the federation's coordinator, check its plan, or ask where a federation is.
    #[command(subcommand)]
    Coordinator(coordinator::CoordinatorCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = output::Output { json: cli.json };
    if matches!(
        cli.command,
        Command::Node(node::NodeCommand::Serve { .. })
            | Command::Coordinator(coordinator::CoordinatorCommand::Serve { .. })
    ) {
        init_service_log(cli.log_format);
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args, &out),
        Command::Node(cmd) => node::run(cmd, &out),
        Command::Policy(cmd) => policy::run(cmd, &out),
        Command::Audit(cmd) => audit::run(cmd, &out),
        Command::Privacy(cmd) => privacy::run(cmd, &out),
        Command::Train(cmd) => train::run(cmd, &out),
        Command::Consent(cmd) => consent::run(cmd, &out),
        Command::Pki(cmd) => pki::run(cmd, &out),
        Command::Subject(cmd) => subject::run(cmd, &out),
        Command::Register(cmd) => register::run(cmd, &out),
        Command::Coordinator(cmd) => coordinator::run(cmd, &out),
        Command::Assist(cmd) => assist::run(cmd, &out),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            out.error(&e);
            ExitCode::from(1)
        }
    }
}
