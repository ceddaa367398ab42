//! The coordinator's metrics: the request families of the shared endpoint
//! ([`amble_net::metrics`], which also explains why this one listener is plain HTTP), refused
//! updates by class, and the values read from the store when the endpoint is scraped — the
//! round, rounds published, updates accepted, members, audit-log size.
//!
//! A refused update (`SubmitUpdate` answered FAILED_PRECONDITION) is counted by the class of
//! its reason — `shape`, `non_finite`, `norm`, `round`, `duplicate`, `replay`, `other` — read
//! from the refusal's message, the same text the audit log records.

use crate::state::{Coordinator, Phase};
use amble_net::metrics::{GrpcStats, Scrape};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tonic::Code;

/// The prefix of every family the coordinator exports.
pub(crate) const PREFIX: &str = "amble_coordinator";

/// The classes a refused update is counted under.
pub const REFUSAL_CLASSES: [&str; 7] = [
    "shape",
    "non_finite",
    "norm",
    "round",
    "duplicate",
    "replay",
    "other",
];

/// The class of a refused update's reason (the message the coordinator answered and logged).
pub fn refusal_class(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    // First the refusals whose text names another class too ("… (stale or replayed update)").
    if r.starts_with("duplicate") {
        "duplicate"
    } else if r.starts_with("replay") {
        "replay"
    } else if r.contains("nan or infinite") {
        "non_finite"
    } else if r.contains("norm") && r.contains("clip bound") {
        "norm"
    } else if r.contains(" values, the model has ") || r.contains("not a multiple of 4") {
        "shape"
    } else if r.contains("round") || r.contains("trained from version") {
        "round"
    } else {
        "other"
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The coordinator's registry: requests by method and code, and refused updates by class
/// (every class written, from 0) for `submit_path`.
pub(crate) fn grpc_stats(
    methods: impl IntoIterator<Item = &'static str>,
    submit_path: &'static str,
) -> GrpcStats {
    let refused = Family::<Reason, Counter>::default();
    for reason in REFUSAL_CLASSES {
        drop(refused.get_or_create(&Reason { reason }));
    }
    let mut stats = GrpcStats::new(PREFIX, methods);
    stats.registry_mut().register(
        "updates_refused",
        "Updates refused since the coordinator started, by the class of the reason.",
        refused.clone(),
    );
    stats.on_status(Box::new(move |method, code, message| {
        if method == submit_path && code == Code::FailedPrecondition {
            refused
                .get_or_create(&Reason {
                    reason: refusal_class(message),
                })
                .inc();
        }
    }))
}

/// The coordinator's `/metrics` text: the request metrics, then the values read from the
/// store now.
pub(crate) fn render(c: &Coordinator, grpc: &GrpcStats) -> Result<String, String> {
    let s = c.status().map_err(|e| e.to_string())?;
    let mut scrape = Scrape::new(PREFIX);
    scrape.gauge(
        "round",
        "The round open now (the last one once the federation is done).",
        s.round as f64,
    );
    scrape.gauge(
        "rounds_planned",
        "Rounds the plan runs.",
        s.rounds_total as f64,
    );
    scrape.counter(
        "rounds_published",
        "Rounds aggregated and published as a new model version.",
        s.history.len() as u64,
    );
    scrape.gauge(
        "federation_done",
        "1 once the last round is published.",
        if s.phase == Phase::Done { 1.0 } else { 0.0 },
    );
    let accepted: usize = s.history.iter().map(|h| h.updates.len()).sum::<usize>()
        + if s.phase == Phase::Done {
            0
        } else {
            s.accepted_in_round.len()
        };
    scrape.counter(
        "updates_accepted",
        "Updates accepted (their receipt written), over all rounds.",
        accepted as u64,
    );
    scrape.gauge(
        "members",
        "Nodes that have joined the federation.",
        s.members.len() as f64,
    );
    scrape.gauge(
        "audit_log_entries",
        "Entries ever appended to the coordinator's audit log (its Merkle tree size).",
        c.audit_log().size() as f64,
    );
    grpc.render(scrape).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use amble_learn::federation::Rejection;

    #[test]
    fn refusal_reasons_fall_in_their_class() {
        let checked = |r: Rejection| refusal_class(&r.to_string());
        assert_eq!(
            checked(Rejection::Shape {
                expected: 3,
                got: 4
            }),
            "shape"
        );
        assert_eq!(checked(Rejection::Encoding { bytes: 7 }), "shape");
        assert_eq!(checked(Rejection::NonFinite { index: 2 }), "non_finite");
        assert_eq!(
            checked(Rejection::Norm {
                norm: 9.0,
                bound: 1.0
            }),
            "norm"
        );
        // The coordinator's own refusals (coordinator/src/state.rs).
        for (reason, class) in [
            ("update has 5 values, the model has 4 parameters", "shape"),
            (
                "update is for round 1, but round 2 is open (stale or replayed update)",
                "round",
            ),
            (
                "update was trained from version 0, round 2 trains from 1",
                "round",
            ),
            ("round 3 closed while the update was streaming", "round"),
            (
                "duplicate: node n-1 already has an accepted update in round 2",
                "duplicate",
            ),
            (
                "replay: this exact update was already accepted in round 1",
                "replay",
            ),
            (
                "the values do not match the header's sha256 (corrupted or truncated upload)",
                "other",
            ),
            ("another upload from this node is in progress", "other"),
        ] {
            assert_eq!(refusal_class(reason), class, "{reason}");
        }
    }

    #[test]
    fn refusals_are_counted_for_submit_update_only_and_every_class_is_written() {
        let stats = grpc_stats(["/a.F/SubmitUpdate", "/a.F/Join"], "/a.F/SubmitUpdate");
        let zero = std::time::Duration::ZERO;
        let submit = stats.method("/a.F/SubmitUpdate");
        stats.record(submit, Code::FailedPrecondition, "replay: x", zero);
        stats.record(submit, Code::Ok, "", zero);
        let join = stats.method("/a.F/Join");
        stats.record(join, Code::FailedPrecondition, "replay: x", zero);
        let text = stats.render(Scrape::new(PREFIX)).unwrap();
        assert!(
            text.contains("amble_coordinator_updates_refused_total{reason=\"replay\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("amble_coordinator_updates_refused_total{reason=\"norm\"} 0\n"),
            "{text}"
        );
        assert!(text.contains(
            "amble_coordinator_grpc_requests_total{method=\"/a.F/SubmitUpdate\",code=\"FailedPrecondition\"} 1\n"
        ));
        assert!(text.contains(
            "amble_coordinator_grpc_requests_total{method=\"/a.F/Join\",code=\"FailedPrecondition\"} 1\n"
        ));
    }
}
