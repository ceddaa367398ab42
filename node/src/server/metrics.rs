//! The node's metrics: the request families of the shared endpoint ([`amble_net::metrics`],
//! which also explains why this one listener is plain HTTP), then the values read from the
//! store when the endpoint is scraped — subjects, audit-log size, policy version, federated
//! rounds trained, ε spent — never on a request's path.

use amble_net::metrics::{GrpcStats, Scrape};

/// The prefix of every family the node exports.
pub(crate) const PREFIX: &str = "amble_node";

/// The node's `/metrics` text: the request metrics, then the values read from the store now.
pub(crate) fn render(shared: &super::Shared, grpc: &GrpcStats) -> Result<String, String> {
    let mut scrape = Scrape::new(PREFIX);
    shared
        .with_node(|n| -> Result<(), crate::NodeError> {
            scrape.gauge(
                "archive_subjects",
                "Subjects (pseudonyms) in the archive.",
                n.subject_count() as f64,
            );
            scrape.gauge(
                "audit_log_entries",
                "Entries ever appended to the audit log (its Merkle tree size, pruned ones included).",
                n.audit_log().size() as f64,
            );
            scrape.gauge(
                "policy_version",
                "Version of the policy in force.",
                n.policy().version() as f64,
            );
            let runs = n.round_runs()?;
            scrape.counter(
                "federation_rounds_trained",
                "Federated rounds this node trained in.",
                runs.len() as u64,
            );
            let epsilon = runs.iter().rev().find_map(|r| r.epsilon_total).unwrap_or(0.0);
            scrape.labelled_gauge(
                "federation_epsilon_spent",
                "Epsilon per person this node has spent on the federated model (0 for plain training).",
                ("model", "intent"),
                epsilon,
            );
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    grpc.render(scrape).map_err(|e| e.to_string())
}
