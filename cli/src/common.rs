//! What several commands share: reaching a running node over mutual-TLS gRPC (its address
//! and our identity, a runtime, how a refusal becomes exit code 3).

use crate::output::Output;
use amble_node::server::client::{ClientIdentity, source_chain};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use tonic::Code;
use tonic::transport::Channel;

/// Where the node is and who we are to it.
#[derive(Args, Clone)]
pub(crate) struct RemoteArgs {
    /// The node (or, for `audit fetch`, the coordinator), https://HOST:PORT.
    #[arg(long, env = "AMBLE_NODE")]
    pub node: String,
    /// Our client certificate (PEM), from `amble pki issue`.
    #[arg(long, env = "AMBLE_CERT")]
    pub cert: PathBuf,
    /// Our private key (PEM, mode 0600).
    #[arg(long, env = "AMBLE_KEY")]
    pub key: PathBuf,
    /// The CA that signed the node's certificate (PEM).
    #[arg(long, env = "AMBLE_CA")]
    pub ca: PathBuf,
}

impl RemoteArgs {
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let id = ClientIdentity::load(&self.cert, &self.key, &self.ca)?;
        Ok(id.connect(&self.node).await?)
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A refusal by consent or policy exits 3, like the offline commands; other statuses are
/// errors that carry the node's message.
pub(crate) fn rpc_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let code = s.code();
    let hint = match code {
        Code::Unavailable | Code::Unknown if s.message().contains("transport") => {
            "; the node refused the connection — is the certificate from the node's CA, unexpired and not revoked?"
        }
        Code::Unauthenticated => "; the node needs a valid client certificate",
        _ => "",
    };
    let mut msg = format!("{what}: {} ({code:?}){hint}", s.message());
    if let Some(src) = std::error::Error::source(&s) {
        msg.push_str(": ");
        msg.push_str(&source_chain(src));
    }
    anyhow::Error::msg(msg).context(Denied(code == Code::PermissionDenied))
}

/// Marks an error as a consent/policy/role refusal (exit code 3).
#[derive(Debug)]
pub(crate) struct Denied(pub bool);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "denied" } else { "failed" })
    }
}

pub(crate) fn print_json(out: &Output, text: &str) -> Result<()> {
    let v: serde_json::Value = serde_json::from_str(text).context("the node sent invalid JSON")?;
    out.report(&v, || serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

/// A right of the person other than consent, exercised on their behalf (`amble node right`
/// on a data directory, `amble subject right` over a running node). Each prints the signed
/// receipt the person keeps.
#[derive(clap::Subcommand, Clone)]
pub(crate) enum RightChange {
    /// How much AI serves the person; routing honours it from their next request.
    Assistance {
        /// human-only, ai-suggests (a person confirms) or ai-answers.
        #[arg(value_enum)]
        level: Level,
    },
    /// Restrict processing (GDPR Art. 18): the archive is kept but read for nothing except
    /// the organisation's legal obligations, until lifted.
    Restrict,
    /// Lift a restriction of processing.
    Unrestrict,
    /// Object (GDPR Art. 21) to a purpose that relies on legitimate interest: no read for it
    /// while the objection stands.
    Object {
        /// The purpose, as declared in the policy (`amble policy check` lists them).
        #[arg(long)]
        purpose: String,
    },
    /// Withdraw an objection.
    Unobject {
        /// The purpose objected to.
        #[arg(long)]
        purpose: String,
    },
}

/// The AI-assistance levels, as the command line spells them.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum Level {
    /// Only people answer the person's requests.
    HumanOnly,
    /// AI drafts an answer and a person confirms it.
    AiSuggests,
    /// AI may answer by itself where the policy allows.
    AiAnswers,
}

impl From<Level> for amble_consent::AssistanceLevel {
    fn from(l: Level) -> Self {
        match l {
            Level::HumanOnly => amble_consent::AssistanceLevel::HumanOnly,
            Level::AiSuggests => amble_consent::AssistanceLevel::AiSuggests,
            Level::AiAnswers => amble_consent::AssistanceLevel::AiAnswers,
        }
    }
}
