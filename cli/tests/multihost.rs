//! The federation over a network rather than loopback, without Docker: the coordinator and
//! three nodes each in a network namespace of its own, at addresses of their own on a bridge,
//! with certificates issued for those addresses (`amble_cli::lab` with `LabSpec::netns`).
//! One node's link is cut mid-round and later restored.
//!
//! Needs root and iproute2 (`.ci/run` runs as root and installs it). Anywhere else the test
//! is skipped with a message, except when `CI` is set: there it fails instead.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_cli::lab::{Lab, LabSpec, NetnsPlan, banking77, netns_available};
use amble_coordinator::{FederationStatus, Phase, RoundSummary};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Short, so the rounds without node-c close quickly; long enough that node-c's client is back
/// (it only notices the cut through TCP retransmissions, and retries with backoff) while
/// rounds are left.
const DEADLINE_SECS: u64 = 10;

fn namespaces_or_skip() -> bool {
    match netns_available() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "network namespaces are required in CI (.ci/run runs as root and installs iproute2): {e:#}"
            );
            eprintln!(
                "SKIPPED: cannot create network namespaces ({e:#}); run as root with iproute2 installed"
            );
            false
        }
    }
}

fn quiet(_: &str) {}

fn nodes_of(h: &RoundSummary) -> Vec<&str> {
    h.updates.iter().map(|u| u.node.as_str()).collect()
}

/// Every round's updates come from distinct nodes: nothing counted twice.
fn assert_no_double_counting(s: &FederationStatus) {
    for h in &s.history {
        let mut nodes = nodes_of(h);
        nodes.sort();
        let n = nodes.len();
        nodes.dedup();
        assert_eq!(nodes.len(), n, "round {} counted a node twice", h.round);
    }
}

/// Polls the status every 50 ms (finer than `Lab::wait_until`, to catch a round early on).
fn poll(
    lab: &Lab,
    timeout: Duration,
    done: impl Fn(&FederationStatus) -> bool,
) -> FederationStatus {
    let t0 = Instant::now();
    loop {
        match lab.status() {
            Ok(s) if done(&s) => return s,
            _ => {}
        }
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?}: {:?}",
            lab.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whatever is still there from the lab `prefix`: namespaces and root-namespace links.
fn leftovers(prefix: &str) -> Vec<String> {
    let ip = |args: &[&str]| {
        let o = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    format!(
        "{}\n{}",
        ip(&["netns", "list"]),
        ip(&["-o", "link", "show"])
    )
    .lines()
    .filter(|l| l.contains(prefix))
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_node_cut_off_mid_round_does_not_stall_the_federation_and_takes_part_again() {
    if !namespaces_or_skip() {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77");
    let b = banking77(&data, 3, Some(100)).unwrap();
    let mut sp = LabSpec::new(
        PathBuf::from(env!("CARGO_BIN_EXE_amble")),
        tmp.path().to_owned(),
        3,
        6,
        None,
    );
    sp.dim_log2 = 12;
    sp.min_nodes = 2;
    sp.round_deadline_secs = DEADLINE_SECS;
    sp.netns = Some(NetnsPlan::default());
    let mut lab = Lab::create(sp, &b.labels, &b.nodes, &quiet).unwrap();
    let prefix = lab.netns().unwrap().prefix().to_owned();
    lab.start_coordinator().unwrap();
    for i in 0..3 {
        lab.start_node(i).unwrap();
    }

    // Every participant listens at an address of its own, none on loopback.
    let mut addrs = vec![lab.address("coordinator")];
    assert!(
        lab.coordinator_url()
            .starts_with(&format!("https://{}:", addrs[0])),
        "{}",
        lab.coordinator_url()
    );
    for i in 0..3 {
        let a = lab.address(&lab.node_name(i));
        assert!(
            lab.node_url(i).starts_with(&format!("https://{a}:")),
            "{}",
            lab.node_url(i)
        );
        addrs.push(a);
    }
    let mut distinct = addrs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{addrs:?}");
    assert!(addrs.iter().all(|a| !a.is_loopback()), "{addrs:?}");

    // Round 2 under way, all three in the federation and node-c not yet done with the round:
    // cut node-c off there.
    let s = poll(&lab, Duration::from_secs(120), |s| {
        s.phase == Phase::Done
            || (s.round >= 2
                && s.members.len() == 3
                && !s.accepted_in_round.iter().any(|n| n == "node-c"))
    });
    assert_ne!(
        s.phase,
        Phase::Done,
        "the federation finished before node-c could be cut off"
    );
    lab.cut_link("node-c").unwrap();
    let cut = lab.status().unwrap();
    let cut_at = cut.round;
    eprintln!(
        "{:.1} s: node-c cut off in round {cut_at}",
        t0.elapsed().as_secs_f64()
    );
    // Node-c's last update can be in round `cut_at` at the latest, so every round from
    // `cut_at + 1` on is one it cannot reach: without it, the quota of 3 is out of reach and
    // the round closes at its deadline with the two others.
    let s = lab
        .wait_until(
            Duration::from_secs(6 * DEADLINE_SECS + 60),
            |s| {
                s.history
                    .iter()
                    .any(|h| h.round >= cut_at && h.closed_by == "deadline")
            },
            |_| {},
        )
        .unwrap();
    let cut_off: Vec<&RoundSummary> = s.history.iter().filter(|h| h.round > cut_at).collect();
    for h in &cut_off {
        assert_eq!(h.closed_by, "deadline", "{h:?}");
    }
    for h in s.history.iter().filter(|h| h.closed_by == "deadline") {
        assert!(h.round >= cut_at, "{h:?}");
        let mut nodes = nodes_of(h);
        nodes.sort();
        assert_eq!(nodes, ["node-a", "node-b"], "round {}", h.round);
    }
    assert_ne!(
        s.phase,
        Phase::Done,
        "rounds must be left for node-c to come back to (cut in round {cut_at})"
    );
    let restored_after = s.history.len() as u64;
    lab.restore_link("node-c").unwrap();
    eprintln!(
        "{:.1} s: node-c's link restored after round {restored_after}",
        t0.elapsed().as_secs_f64()
    );

    // Node-c's client reconnects (or its stalled call completes) and it trains again; the
    // federation finishes. Each round without it costs at most one deadline.
    let s = lab
        .wait_until(
            Duration::from_secs(6 * DEADLINE_SECS + 120),
            |s| s.phase == Phase::Done,
            |_| {},
        )
        .unwrap();
    assert_eq!(s.history.len(), 6);
    assert_no_double_counting(&s);
    assert!(s.history.iter().all(|h| h.updates.len() >= 2));
    let back: Vec<u64> = s
        .history
        .iter()
        .filter(|h| h.round > restored_after && nodes_of(h).contains(&"node-c"))
        .map(|h| h.round)
        .collect();
    assert!(
        !back.is_empty(),
        "node-c takes part again once its link is back: {:#?}",
        s.history
    );
    let summary: Vec<String> = s
        .history
        .iter()
        .map(|h| format!("{}:{}:{}", h.round, h.closed_by, nodes_of(h).join("+")))
        .collect();
    eprintln!(
        "{:.1} s: done; node-c back in rounds {back:?}; rounds {summary:?}",
        t0.elapsed().as_secs_f64()
    );

    // Dropping the lab kills the processes and deletes every namespace and link it made.
    drop(lab);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}
