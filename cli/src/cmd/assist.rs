//! `amble assist classify`: ask a running node what a text is about and who should answer it.
//! `amble assist needs`: ask it what a person is likely to need next, and why.

use crate::common::{Denied, RemoteArgs};
use crate::output::Output;
use amble_node::server::client::{ClientIdentity, source_chain};
use amble_proto::v1 as pb;
use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum AssistCommand {
    /// Classify a text and route it (self-service, bot draft, human agent or expert).
    Classify {
        #[command(flatten)]
        remote: RemoteArgs,
        /// What the person wrote or said; never stored or logged by the node.
        text: String,
        /// The person's reference (`channel:id`), so their AI-assistance choice applies.
        #[arg(long)]
        subject: Option<String>,
        /// How many intents to show.
        #[arg(long, default_value_t = 3)]
        k: u32,
    },
    /// Predict a person's next needs, each with the features that drove it. The node reads the
    /// person's archive through the purpose `personalisation` (their consent decides; the
    /// example policy allows the app and node roles, so an agent certificate is refused).
    Needs {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The person's reference (`channel:id`).
        #[arg(long)]
        subject: String,
        /// How many needs to show (1..=20).
        #[arg(long, default_value_t = 3)]
        k: u32,
    },
}

/// A refused call as the CLI reports it (exit code 3 when consent or policy refused).
fn call_error(what: &str, s: tonic::Status) -> anyhow::Error {
    let mut msg = format!("{what}: {} ({:?})", s.message(), s.code());
    if let Some(src) = std::error::Error::source(&s) {
        msg.push_str(": ");
        msg.push_str(&source_chain(src));
    }
    anyhow::Error::msg(msg).context(Denied(s.code() == tonic::Code::PermissionDenied))
}

pub(crate) fn run(cmd: AssistCommand, out: &Output) -> Result<ExitCode> {
    let rt = crate::common::runtime()?;
    let (remote, text, subject, k) = match cmd {
        AssistCommand::Classify {
            remote,
            text,
            subject,
            k,
        } => (remote, text, subject, k),
        AssistCommand::Needs { remote, subject, k } => {
            return needs(&rt, remote, subject, k, out);
        }
    };
    let result = rt.block_on(async {
        let id = ClientIdentity::load(&remote.cert, &remote.key, &remote.ca)?;
        let mut c = pb::assist_client::AssistClient::new(id.connect(&remote.node).await?);
        c.classify(pb::ClassifyRequest {
            text,
            subject_ref: subject.unwrap_or_default(),
            k,
            min_confidence: 0.0,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| call_error("classify", s))
    });
    let r = match result {
        Ok(r) => r,
        Err(e) if matches!(e.downcast_ref::<Denied>(), Some(Denied(true))) => {
            out.error(&e);
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e),
    };
    let route = r
        .route()
        .as_str_name()
        .trim_start_matches("ROUTE_")
        .to_lowercase();
    let v = serde_json::json!({
        "route": route,
        "reason": r.reason,
        "line": r.line,
        "assistance_level": r.assistance_level,
        "threshold": r.threshold,
        "model_sha256": r.model_sha256,
        "policy_version": r.policy_version,
        "intents": r.intents.iter()
            .map(|s| serde_json::json!({"label": s.label, "probability": s.probability}))
            .collect::<Vec<_>>(),
    });
    out.report(&v, || {
        let mut s = format!("route: {route} — {}\n", r.reason);
        for i in &r.intents {
            s.push_str(&format!("  {:>5.1}%  {}\n", i.probability * 100.0, i.label));
        }
        s.push_str(&format!(
            "line {} · AI assistance {} · threshold {:.2} · model {}",
            r.line,
            r.assistance_level,
            r.threshold,
            &r.model_sha256[..r.model_sha256.len().min(16)]
        ));
        s
    });
    Ok(ExitCode::SUCCESS)
}

fn needs(
    rt: &tokio::runtime::Runtime,
    remote: RemoteArgs,
    subject: String,
    k: u32,
    out: &Output,
) -> Result<ExitCode> {
    let result = rt.block_on(async {
        let id = ClientIdentity::load(&remote.cert, &remote.key, &remote.ca)?;
        let mut c = pb::assist_client::AssistClient::new(id.connect(&remote.node).await?);
        c.predict_needs(pb::PredictNeedsRequest {
            subject_ref: subject,
            k,
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| call_error("predict needs", s))
    });
    let r = match result {
        Ok(r) => r,
        Err(e) if matches!(e.downcast_ref::<Denied>(), Some(Denied(true))) => {
            out.error(&e);
            return Ok(ExitCode::from(3));
        }
        Err(e) => return Err(e),
    };
    let v = serde_json::json!({
        "model_sha256": r.model_sha256,
        "needs": r.needs.iter().map(|n| serde_json::json!({
            "need": n.need,
            "probability": n.probability,
            "drivers": n.drivers.iter()
                .map(|d| serde_json::json!({"feature": d.feature, "contribution": d.contribution}))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    out.report(&v, || {
        let mut s = String::new();
        for n in &r.needs {
            s.push_str(&format!("{:>5.1}%  {}\n", n.probability * 100.0, n.need));
            for d in &n.drivers {
                s.push_str(&format!("         {:+.3}  {}\n", d.contribution, d.feature));
            }
        }
        s.push_str(&format!(
            "model {}",
            &r.model_sha256[..r.model_sha256.len().min(16)]
        ));
        s
    });
    Ok(ExitCode::SUCCESS)
}
