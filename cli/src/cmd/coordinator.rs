//! `amble coordinator …`: run the federation's coordinator and ask it where it is.

use crate::output::Output;
use amble_coordinator::{CoordinatorConfig, CoordinatorServer, FederationStatus};
use amble_net::ClientIdentity;
use amble_proto::v1 as pb;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum CoordinatorCommand {
    /// Run the coordinator (mutual TLS 1.3) until SIGTERM or Ctrl-C. The plan — model, rounds,
    /// nodes per round, deadline, clip bound, aggregation, local training and ε — is in the
    /// config file; see deploy/coordinator.example.toml. Restarting with the same data_dir
    /// resumes the federation where it stopped.
    Serve {
        /// The coordinator configuration (coordinator.toml).
        #[arg(long, env = "AMBLE_COORDINATOR_CONFIG")]
        config: PathBuf,
    },
    /// Check a coordinator.toml and print the resolved plan (σ calibrated for the ε budget).
    Plan {
        #[arg(long, env = "AMBLE_COORDINATOR_CONFIG")]
        config: PathBuf,
    },
    /// Where a running federation is: rounds, members, updates, ε (roles node, auditor, admin).
    Status {
        /// The coordinator, https://HOST:PORT.
        #[arg(long, env = "AMBLE_COORDINATOR")]
        coordinator: String,
        /// Our client certificate (PEM), from `amble pki issue`.
        #[arg(long, env = "AMBLE_CERT")]
        cert: PathBuf,
        /// Our private key (PEM, mode 0600).
        #[arg(long, env = "AMBLE_KEY")]
        key: PathBuf,
        /// The federation CA (PEM).
        #[arg(long, env = "AMBLE_CA")]
        ca: PathBuf,
    },
}

pub(crate) fn run(cmd: CoordinatorCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        CoordinatorCommand::Serve { config } => serve(&config, out),
        CoordinatorCommand::Plan { config } => {
            let plan = CoordinatorConfig::load(&config)?.plan()?;
            out.report(&plan, || {
                let privacy = match &plan.privacy {
                    Some(p) => format!(
                        "DP-SGD at every node: ε = {} at δ = {} per person over all {} rounds",
                        p.epsilon, p.delta, plan.rounds
                    ),
                    None => "NOT private: plain local SGD (public or synthetic data only)".into(),
                };
                format!(
                    "model {} ({} intents, 2^{} features)\nrounds {} · close at {} updates, or at the deadline ({} s) with ≥ {}\nclip bound {} · aggregation {:?}\n{privacy}\nlocal training {}",
                    plan.model,
                    plan.labels.len(),
                    plan.features.dim_log2,
                    plan.rounds,
                    plan.nodes_per_round,
                    plan.round_deadline_secs,
                    plan.min_nodes,
                    plan.clip_bound,
                    plan.aggregation,
                    serde_json::to_string(&plan.local).unwrap_or_default()
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        CoordinatorCommand::Status {
            coordinator,
            cert,
            key,
            ca,
        } => {
            let s = crate::common::runtime()?.block_on(status(&coordinator, &cert, &key, &ca))?;
            out.report(&s, || render_status(&s));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Fetches `Federation.Status`.
pub(crate) async fn status(
    url: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<FederationStatus> {
    let id = ClientIdentity::load(cert, key, ca)?;
    let channel = id.connect(url).await?;
    let mut client = pb::federation_client::FederationClient::new(channel);
    let json = client
        .status(pb::StatusRequest {})
        .await
        .context("Federation.Status")?
        .into_inner()
        .status_json;
    serde_json::from_str(&json).context("coordinator status")
}

pub(crate) fn render_status(s: &FederationStatus) -> String {
    let mut t = format!(
        "federation {} · round {}/{} ({:?}) · model version {}\n",
        s.federation, s.round, s.rounds_total, s.phase, s.model_version
    );
    if let Some(e) = s.epsilon {
        t.push_str(&format!(
            "privacy: ε = {e} at δ = {} per person at each node over all rounds\n",
            s.delta.unwrap_or(0.0)
        ));
    }
    t.push_str(&format!("members: {}\n", s.members.len()));
    for m in &s.members {
        t.push_str(&format!(
            "  {:<16} cosigned log size {}\n",
            m.id,
            m.cosigned.as_ref().map_or("-".into(), |c| c.0.to_string())
        ));
    }
    t.push_str("round  updates  declined  closed by     |aggregate|\n");
    for h in &s.history {
        t.push_str(&format!(
            "{:>5}  {:>7}  {:>8}  {:<12} {:>10.4}\n",
            h.round,
            h.updates.len(),
            h.declined.len(),
            h.closed_by,
            h.aggregate_norm
        ));
    }
    t
}

fn serve(config: &Path, out: &Output) -> Result<ExitCode> {
    // The log subscriber is installed by main (`--log-format`).
    let config = CoordinatorConfig::load(config)?;
    crate::common::runtime()?.block_on(async {
        let server = CoordinatorServer::bind(config).await?;
        let addr = server.local_addr()?;
        let witness = server.coordinator().witness_key().to_string();
        out.report(
            &serde_json::json!({ "listening": addr.to_string(), "witness_key": witness }),
            || format!("coordinator listening on {addr} (mutual TLS 1.3)\nwitness key {witness}"),
        );
        server.run_until_signalled().await?;
        Ok(ExitCode::SUCCESS)
    })
}
