//! The coordinator's round state machine in-process (the multi-process tests in
//! `cli/tests/federation.rs` cover the same paths over mutual TLS).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{AuditLog, EntryDraft, NoteSigner};
use amble_coordinator::{Actor, Coordinator, CoordinatorConfig, Phase, Plan, TrainingRecord};
use amble_learn::federation::LocalTraining;
use amble_learn::federation::Rule;
use std::path::Path;

fn plan(rule: Rule, nodes_per_round: usize) -> Plan {
    Plan {
        model: "intent".into(),
        labels: vec!["a".into(), "b".into(), "c".into()],
        features: amble_learn::model::FeatureConfig {
            dim_log2: 4,
            ..Default::default()
        },
        label_prior: 0.0,
        rounds: 3,
        nodes_per_round,
        min_nodes: 1,
        round_deadline_secs: 3600,
        clip_bound: 10.0,
        aggregation: rule,
        server_learning_rate: 1.0,
        server_final_lr_fraction: 1.0,
        server_momentum: 0.0,
        local: LocalTraining::Plain {
            epochs: 1,
            learning_rate: 0.1,
            decay: 0.0,
            l2: 0.0,
        },
        privacy: None,
    }
}

fn caller(id: &str) -> Actor {
    Actor::certified(
        id,
        amble_net::Role::Node,
        "test.fed",
        amble_net::TrustRoot::Local,
    )
}

fn log_key(name: &str) -> (NoteSigner, String) {
    let k = amble_crypto::SigningKey::generate().unwrap();
    let s = NoteSigner::from_key(name, &k).unwrap();
    let v = s.verifier().to_string();
    (s, v)
}

fn open(dir: &Path, p: Plan) -> Coordinator {
    Coordinator::open(dir, p, "test.fed", "coordinator").unwrap()
}

/// Streams `values` as an update in chunks of 7 values.
fn submit(c: &Coordinator, node: &str, round: u64, values: &[f32]) -> Result<usize, String> {
    let bytes = amble_learn::federation::f32_to_le(values);
    let who = caller(node);
    let mut up = c
        .begin_upload(
            &who,
            round,
            "intent",
            round - 1,
            values.len() as u64,
            1.0,
            amble_crypto::sha256(&bytes).to_vec(),
            TrainingRecord::default(),
        )
        .map_err(|e| e.to_string())?;
    for chunk in bytes.chunks(28) {
        c.feed(&mut up, &who, chunk).map_err(|e| e.to_string())?;
    }
    c.finish(up, &who)
        .map(|(_, n)| n)
        .map_err(|e| e.to_string())
}

fn flat(c: &Coordinator, version: u64) -> Vec<f32> {
    let who = caller("n1");
    let (_, bytes) = c.model_bytes(&who, Some(version)).unwrap();
    amble_learn::model::IntentModel::from_bytes(&bytes)
        .unwrap()
        .to_flat()
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_reachable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("coordinator-data");
    let _c = open(&dir, plan(Rule::Mean, 2));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{mode:o}");
}

#[test]
fn a_round_publishes_the_mean_of_its_updates() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), plan(Rule::Mean, 2));
    for n in ["n1", "n2"] {
        c.join(&caller(n), &log_key(n).1).unwrap();
    }
    let len = c.parameters();
    let before = flat(&c, 0);
    assert_eq!(submit(&c, "n1", 1, &vec![0.2; len]), Ok(1));
    assert_eq!(c.status().unwrap().phase, Phase::Collecting);
    assert_eq!(submit(&c, "n2", 1, &vec![0.6; len]), Ok(2));
    let s = c.status().unwrap();
    assert_eq!((s.round, s.model_version), (2, 1));
    assert_eq!(s.history[0].closed_by, "quota");
    let after = flat(&c, 1);
    for (a, b) in after.iter().zip(&before) {
        assert!((a - b - 0.4).abs() < 1e-6);
    }
}

#[test]
fn the_median_ignores_one_poisoned_update() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), plan(Rule::Median, 3));
    for n in ["n1", "n2", "n3"] {
        c.join(&caller(n), &log_key(n).1).unwrap();
    }
    let len = c.parameters();
    let mut poison = vec![0.0; len];
    poison[0] = 9.9; // within the norm bound, far from the others
    submit(&c, "n1", 1, &vec![0.01; len]).unwrap();
    submit(&c, "n2", 1, &vec![0.02; len]).unwrap();
    submit(&c, "n3", 1, &poison).unwrap();
    let d: Vec<f32> = flat(&c, 1)
        .iter()
        .zip(flat(&c, 0))
        .map(|(a, b)| a - b)
        .collect();
    assert!(
        (d[0] - 0.02).abs() < 1e-6,
        "median of 0.01, 0.02, 9.9 is 0.02: {}",
        d[0]
    );
    assert!(
        (d[1] - 0.01).abs() < 1e-6,
        "median of 0.01, 0.02, 0 is 0.01: {}",
        d[1]
    );
}

#[test]
fn bad_updates_are_refused_and_nothing_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), plan(Rule::Mean, 2));
    c.join(&caller("n1"), &log_key("n1").1).unwrap();
    let len = c.parameters();
    let mut nan = vec![0.0; len];
    nan[3] = f32::NAN;
    assert!(submit(&c, "n1", 1, &nan).unwrap_err().contains("NaN"));
    assert!(
        submit(&c, "n1", 1, &vec![0.0; len + 1])
            .unwrap_err()
            .contains("values")
    );
    assert!(
        submit(&c, "n1", 1, &vec![5.0; len])
            .unwrap_err()
            .contains("norm")
    );
    assert!(
        submit(&c, "n1", 2, &vec![0.0; len])
            .unwrap_err()
            .contains("round")
    );
    assert!(
        submit(&c, "stranger", 1, &vec![0.0; len])
            .unwrap_err()
            .contains("join")
    );
    assert!(c.status().unwrap().accepted_in_round.is_empty());
    // A header whose hash does not match the values.
    let who = caller("n1");
    let mut up = c
        .begin_upload(
            &who,
            1,
            "intent",
            0,
            len as u64,
            1.0,
            vec![0; 32],
            TrainingRecord::default(),
        )
        .unwrap();
    c.feed(
        &mut up,
        &who,
        &amble_learn::federation::f32_to_le(&vec![0.0; len]),
    )
    .unwrap();
    assert!(
        c.finish(up, &who)
            .unwrap_err()
            .to_string()
            .contains("sha256")
    );
    assert!(c.status().unwrap().accepted_in_round.is_empty());
}

#[test]
fn a_restart_resumes_the_round_with_exactly_the_accepted_updates() {
    let dir = tempfile::tempdir().unwrap();
    let len;
    {
        let c = open(dir.path(), plan(Rule::Mean, 2));
        c.join(&caller("n1"), &log_key("n1").1).unwrap();
        c.join(&caller("n2"), &log_key("n2").1).unwrap();
        len = c.parameters();
        submit(&c, "n1", 1, &vec![0.2; len]).unwrap();
        // n2's upload is cut off half way (the process dies): spooled blocks, no receipt.
        let who = caller("n2");
        let bytes = amble_learn::federation::f32_to_le(&vec![0.6; len]);
        let mut up = c
            .begin_upload(
                &who,
                1,
                "intent",
                0,
                len as u64,
                1.0,
                amble_crypto::sha256(&bytes).to_vec(),
                TrainingRecord::default(),
            )
            .unwrap();
        c.feed(&mut up, &who, &bytes[..(len / 2) * 4]).unwrap();
        c.flush().unwrap();
    }
    let c = open(dir.path(), plan(Rule::Mean, 2));
    let s = c.status().unwrap();
    assert_eq!(s.accepted_in_round, vec!["n1".to_owned()]);
    assert!(
        submit(&c, "n1", 1, &vec![0.2; len])
            .unwrap_err()
            .contains("duplicate"),
        "n1's update was counted before the restart"
    );
    let before = flat(&c, 0);
    assert_eq!(submit(&c, "n2", 1, &vec![0.6; len]), Ok(2));
    for (a, b) in flat(&c, 1).iter().zip(&before) {
        assert!((a - b - 0.4).abs() < 1e-6, "n1 once and n2 once: mean 0.4");
    }
    // A plan changed under a running federation is refused.
    let mut other = plan(Rule::Mean, 2);
    other.rounds = 9;
    drop(c);
    assert!(Coordinator::open(dir.path(), other, "test.fed", "coordinator").is_err());
}

#[test]
fn cosigning_requires_the_pinned_key_and_a_log_that_only_grew() {
    let dir = tempfile::tempdir().unwrap();
    let c = open(dir.path(), plan(Rule::Mean, 2));
    let k = amble_crypto::SigningKey::generate().unwrap();
    let origin = "amble.node/test";
    let signer = NoteSigner::from_key(origin, &k).unwrap();
    c.join(&caller("n1"), &signer.verifier().to_string())
        .unwrap();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let log = AuditLog::open(&db).unwrap();
    let add = |n: u64| {
        for i in 0..n {
            log.append(EntryDraft::new(
                "x",
                "node",
                amble_audit::Action::Read,
                format!("{i}"),
            ))
            .unwrap();
        }
    };
    add(3);
    let cp1 = log.checkpoint(&k, origin).unwrap();
    let (cosigned, prev) = c.cosign(&caller("n1"), &cp1, "").unwrap();
    assert_eq!(prev, 0);
    assert!(
        cosigned.lines().count() > cp1.lines().count(),
        "a signature was added"
    );
    add(2);
    let cp2 = log.checkpoint(&k, origin).unwrap();
    let proof = log.consistency_proof_json(3, 5).unwrap();
    assert_eq!(c.cosign(&caller("n1"), &cp2, &proof).unwrap().1, 3);
    // A rewritten log: same size as last cosigned, another root.
    let db2 = sled::Config::new().temporary(true).open().unwrap();
    let forged = AuditLog::open(&db2).unwrap();
    for i in 0..5 {
        forged
            .append(EntryDraft::new(
                "y",
                "node",
                amble_audit::Action::Read,
                format!("{i}"),
            ))
            .unwrap();
    }
    let bad = forged.checkpoint(&k, origin).unwrap();
    assert!(
        c.cosign(&caller("n1"), &bad, "")
            .unwrap_err()
            .to_string()
            .contains("rewritten")
    );
    // A checkpoint signed by another key.
    let other = amble_crypto::SigningKey::generate().unwrap();
    let alien = log.checkpoint(&other, origin).unwrap();
    assert!(c.cosign(&caller("n1"), &alien, "").is_err());
}

#[test]
fn the_example_config_resolves_to_a_private_plan() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/coordinator.example.toml"),
    )
    .unwrap()
    .replace(
        "/etc/amble/intents.json",
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../data/banking77/categories.json")
            .to_string_lossy(),
    );
    let p = dir.path().join("coordinator.toml");
    std::fs::write(&p, &text).unwrap();
    let plan = CoordinatorConfig::load(&p).unwrap().plan().unwrap();
    assert_eq!(plan.labels.len(), 77);
    assert_eq!(plan.epsilon(), Some(8.0));
    let LocalTraining::Dp(dp) = &plan.local else {
        panic!("the example trains privately")
    };
    assert!(dp.noise_multiplier > 0.5);
    // The example reads texts through the built-in sentence encoder, named by its weights.
    let enc = plan.features.sentence.as_ref().expect("sentence features");
    assert_eq!(
        enc.encoder,
        amble_learn::model::SentenceEncoder::builtin_id()
    );
    assert_eq!(plan.features.dim(), 384);
    let both = text.replace("features = \"sentence\"", "features = \"both\"");
    std::fs::write(&p, &both).unwrap();
    let plan = CoordinatorConfig::load(&p).unwrap().plan().unwrap();
    assert_eq!(plan.features.dim(), (1 << 14) + 384);
    std::fs::write(
        &p,
        both.replace("# sentence_share = 0.85", "sentence_share = 1.5"),
    )
    .unwrap();
    let e = CoordinatorConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("[model]") && e.contains("share"), "{e}");
    std::fs::write(
        &p,
        text.replace("features = \"sentence\"", "features = \"words\""),
    )
    .unwrap();
    let e = CoordinatorConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("sentence") && e.contains("hashed"), "{e}");
    // Bad values are refused with the field named.
    std::fs::write(&p, text.replace("min_nodes = 5", "min_nodes = 50")).unwrap();
    let e = CoordinatorConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("min_nodes"), "{e}");
    std::fs::write(&p, text.replace("[tls]", "plaintext = true\n[tls]")).unwrap();
    assert!(CoordinatorConfig::load(&p).is_err());
}

/// The round machine on a clock the test moves: deadlines, quotas and the minimum number of
/// nodes, decided without a single sleep.
mod on_a_manual_clock {
    use super::*;
    use amble_audit::ManualClock;
    use std::sync::Arc;
    use std::time::Duration;

    const START_MS: u64 = 1_800_000_000_000;
    const DEADLINE_SECS: u64 = 60;

    fn open_at(
        dir: &Path,
        clock: &ManualClock,
        nodes_per_round: usize,
        min_nodes: usize,
    ) -> Coordinator {
        let p = Plan {
            min_nodes,
            round_deadline_secs: DEADLINE_SECS,
            ..plan(Rule::Mean, nodes_per_round)
        };
        Coordinator::open_with_clock(dir, p, "test.fed", "coordinator", Arc::new(clock.clone()))
            .unwrap()
    }

    fn members(c: &Coordinator, n: usize) {
        for i in 1..=n {
            let id = format!("n{i}");
            c.join(&caller(&id), &log_key(&id).1).unwrap();
        }
    }

    #[test]
    fn a_round_closes_at_its_deadline_not_a_millisecond_before() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START_MS);
        let c = open_at(dir.path(), &clock, 3, 1);
        members(&c, 3);
        let s = c.status().unwrap();
        assert_eq!(s.deadline_ms, START_MS + DEADLINE_SECS * 1000);
        assert_eq!(submit(&c, "n1", 1, &vec![0.1; c.parameters()]), Ok(1));
        clock.advance(Duration::from_millis(DEADLINE_SECS * 1000 - 1));
        c.tick().unwrap();
        assert_eq!(c.status().unwrap().round, 1, "one millisecond early");
        clock.advance(Duration::from_millis(1));
        c.tick().unwrap();
        let s = c.status().unwrap();
        assert_eq!(s.round, 2);
        assert_eq!(s.history[0].closed_by, "deadline");
        assert_eq!(s.history[0].closed_ms, START_MS + DEADLINE_SECS * 1000);
        assert_eq!(
            s.deadline_ms,
            START_MS + 2 * DEADLINE_SECS * 1000,
            "the next round's deadline runs from its opening"
        );
    }

    #[test]
    fn too_few_updates_at_the_deadline_extend_it_and_the_round_closes_once_enough_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START_MS);
        let c = open_at(dir.path(), &clock, 3, 2);
        members(&c, 3);
        let len = c.parameters();
        assert_eq!(submit(&c, "n1", 1, &vec![0.1; len]), Ok(1));
        clock.advance(Duration::from_secs(DEADLINE_SECS + 5));
        c.tick().unwrap();
        let s = c.status().unwrap();
        assert_eq!(s.round, 1, "one update is below min_nodes = 2");
        assert_eq!(
            s.deadline_ms,
            START_MS + (2 * DEADLINE_SECS + 5) * 1000,
            "extended from the tick that found too few"
        );
        assert_eq!(submit(&c, "n2", 1, &vec![0.3; len]), Ok(2));
        c.tick().unwrap();
        assert_eq!(
            c.status().unwrap().round,
            1,
            "enough, but the new deadline is ahead"
        );
        clock.advance(Duration::from_secs(DEADLINE_SECS));
        c.tick().unwrap();
        let s = c.status().unwrap();
        assert_eq!((s.round, s.history[0].closed_by.as_str()), (2, "deadline"));
        assert_eq!(s.history[0].updates.len(), 2);
    }

    #[test]
    fn the_quota_and_every_member_answering_close_a_round_before_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START_MS);
        let c = open_at(dir.path(), &clock, 2, 1);
        members(&c, 3);
        let len = c.parameters();
        assert_eq!(submit(&c, "n1", 1, &vec![0.1; len]), Ok(1));
        assert_eq!(submit(&c, "n2", 1, &vec![0.1; len]), Ok(2));
        assert_eq!(c.status().unwrap().history[0].closed_by, "quota");
        // Round 2: one update, the others decline; every member has answered.
        assert_eq!(submit(&c, "n1", 2, &vec![0.2; len]), Ok(1));
        c.decline(&caller("n2"), 2, "no consenting people").unwrap();
        assert_eq!(c.status().unwrap().round, 2, "n3 has not answered");
        c.decline(&caller("n3"), 2, "maintenance").unwrap();
        let s = c.status().unwrap();
        assert_eq!(
            (s.round, s.history[1].closed_by.as_str()),
            (3, "all_answered")
        );
        assert_eq!(s.history[1].closed_ms, START_MS, "no time passed");
    }

    #[test]
    fn a_restart_keeps_the_deadline_and_the_round_still_closes_on_time() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(START_MS);
        {
            let c = open_at(dir.path(), &clock, 3, 1);
            members(&c, 3);
            assert_eq!(submit(&c, "n1", 1, &vec![0.1; c.parameters()]), Ok(1));
            clock.advance(Duration::from_secs(30));
            c.flush().unwrap();
        }
        let c = open_at(dir.path(), &clock, 3, 1);
        let s = c.status().unwrap();
        assert_eq!(
            s.deadline_ms,
            START_MS + DEADLINE_SECS * 1000,
            "not restarted by a restart"
        );
        assert_eq!(s.accepted_in_round, vec!["n1".to_owned()]);
        clock.advance(Duration::from_secs(29));
        c.tick().unwrap();
        assert_eq!(c.status().unwrap().round, 1);
        clock.advance(Duration::from_secs(1));
        c.tick().unwrap();
        let s = c.status().unwrap();
        assert_eq!((s.round, s.history[0].closed_by.as_str()), (2, "deadline"));
    }
}

#[test]
fn server_momentum_carries_across_rounds_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = Plan {
        server_momentum: 0.5,
        ..plan(Rule::Mean, 1)
    };
    let len;
    let (g0, g2) = {
        let c = open(dir.path(), p.clone());
        c.join(&caller("n1"), &log_key("n1").1).unwrap();
        len = c.parameters();
        let g0 = flat(&c, 0);
        assert_eq!(submit(&c, "n1", 1, &vec![0.1; len]), Ok(1));
        assert_eq!(submit(&c, "n1", 2, &vec![0.2; len]), Ok(1));
        c.flush().unwrap();
        (g0, flat(&c, 2))
    };
    // velocity: 0.1, then 0.5·0.1 + 0.2 = 0.25; the model moved by 0.1 + 0.25.
    for (a, b) in g2.iter().zip(&g0) {
        assert!((a - b - 0.35).abs() < 1e-5, "{a} - {b}");
    }
    // After a restart the velocity is the stored one: 0.5·0.25 + 0.3 = 0.425.
    let c = open(dir.path(), p);
    assert_eq!(submit(&c, "n1", 3, &vec![0.3; len]), Ok(1));
    for (a, b) in flat(&c, 3).iter().zip(&g2) {
        assert!((a - b - 0.425).abs() < 1e-5, "{a} - {b}");
    }
}
