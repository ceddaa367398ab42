//! `amble assist classify`: ask a running node what a text is about and who should answer it.

use crate::output::Output;
use crate::remote_cmd::{Denied, RemoteArgs};
use amble_node::server::client::{ClientIdentity, source_chain};
use amble_proto::v1 as pb;
use anyhow::Result;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AssistCommand {
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
}

pub fn run(cmd: AssistCommand, out: &Output) -> Result<ExitCode> {
    let rt = crate::remote_cmd::runtime()?;
    let AssistCommand::Classify {
        remote,
        text,
        subject,
        k,
    } = cmd;
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
        .map_err(|s| {
            let mut msg = format!("classify: {} ({:?})", s.message(), s.code());
            if let Some(src) = std::error::Error::source(&s) {
                msg.push_str(": ");
                msg.push_str(&source_chain(src));
            }
            anyhow::Error::msg(msg).context(Denied(s.code() == tonic::Code::PermissionDenied))
        })
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
