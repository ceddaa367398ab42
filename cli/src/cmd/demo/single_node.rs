//! `amble demo --single-node`: walks through the encrypted life archive on one temporary
//! node, in-process: ingest, unified identity, export, consent-gated reads, local private
//! training with a withdrawal, erase, key rotation, and a scan of every byte on disk for
//! plaintext.

use crate::cmd::node::operator;
use crate::output::Output;
use amble_crypto::ExternalRef;
use amble_learn::model::FeatureConfig;
use amble_learn::privacy::Budget;
use amble_learn::privacy::{Delta, Epsilon};
use amble_learn::train::{DpIntentConfig, IntentTrainConfig, Privacy, TextRow};
use amble_node::{ConsentChange, Node, ReadOutcome, TimeRange, ingest};
use amble_policy::Role;
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// What the single-node walkthrough needs.
pub(crate) struct NodeDemo {
    /// How many synthetic people to create.
    pub subjects: u32,
    /// Privacy budget of each local training run (ε per person, δ = 1e-5).
    pub epsilon: f64,
    /// Keep the demo node here instead of a temporary directory.
    pub keep: Option<PathBuf>,
}

#[derive(Serialize)]
struct DemoSummary {
    subjects: usize,
    records: usize,
    ingest_records_per_sec: f64,
    exported_records: usize,
    erased_records: usize,
    erased_subject_export_refused: bool,
    read_fields_allowed: usize,
    read_after_withdrawal_denied: bool,
    train_subjects_before_withdrawal: usize,
    train_subjects_after_withdrawal: usize,
    model_epsilon_spent: f64,
    audit_entries: u64,
    keys_rewrapped: usize,
    files_scanned: usize,
    bytes_scanned: u64,
    plaintext_hits: usize,
}

const STAGES: [&str; 5] = ["student", "new_parent", "freelancer", "retiree", "employee"];
const CITIES: [&str; 5] = ["Lyon", "Porto", "Leeds", "Graz", "Turin"];
/// Service conversations and the intent an agent resolved (Banking77 labels).
const TEXTS: [(&str, &str); 6] = [
    ("my card has not arrived yet", "card_arrival"),
    (
        "is there a fee to top up with a bank transfer",
        "top_up_by_bank_transfer_charge",
    ),
    (
        "I was charged twice for the same purchase",
        "transaction_charged_twice",
    ),
    ("please help me change my PIN", "change_pin"),
    ("my transfer was declined, why?", "declined_transfer"),
    (
        "can I get a virtual card for online shopping",
        "getting_virtual_card",
    ),
];

/// A distinctive marker per person, so the disk scan can look for it.
fn marker(i: u32) -> String {
    format!("ZQXMARK{i:07}")
}

fn person_ref(i: u32) -> String {
    format!("phone:+1555{i:07}")
}

/// Synthetic life archives: a profile, a life stage, a few events and conversations.
fn write_people(path: &Path, n: u32) -> Result<usize> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut count = 0;
    for i in 0..n {
        let r = person_ref(i);
        let stage = STAGES[(i as usize) % STAGES.len()];
        let mut line = |collection: &str, day: u32, data: serde_json::Value| -> Result<()> {
            let rec = serde_json::json!({
                "ref": r, "collection": collection,
                "time": format!("2026-{:02}-{:02}T10:00:00Z", 1 + (day / 28) % 12, 1 + day % 28),
                "data": data,
            });
            writeln!(f, "{rec}")?;
            count += 1;
            Ok(())
        };
        line(
            "profile",
            0,
            serde_json::json!({"birth_year": 1950 + (i % 55), "city": CITIES[(i as usize) % 5],
                "language": "en", "display_name": marker(i)}),
        )?;
        line(
            "life_stage",
            1,
            serde_json::json!({"stage": stage, "tags": [stage], "source": "declared"}),
        )?;
        for k in 0..3 {
            line(
                "events",
                2 + k * 10 + i % 7,
                serde_json::json!({"kind": "app_usage", "status": "ok", "amount": 10 * k, "tags": ["payments"]}),
            )?;
        }
        for k in 0..3u32 {
            let (t, intent) = TEXTS[((i + k) as usize) % TEXTS.len()];
            line(
                "interactions",
                5 + k * 20 + i % 5,
                serde_json::json!({"channel": "chat", "text": format!("{t}, call me on 0155{i:07} ({})", marker(i)),
                    "intent": intent, "outcome": "resolved", "satisfaction": 4}),
            )?;
        }
    }
    f.flush()?;
    Ok(count)
}

/// Counts occurrences of any needle in every file under `dir`.
fn scan_dir(dir: &Path, needles: &[Vec<u8>]) -> Result<(usize, u64, usize)> {
    let ac = aho_corasick::AhoCorasick::new(needles)?;
    let mut found = std::collections::HashSet::new();
    let (mut files, mut bytes) = (0, 0u64);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let data = std::fs::read(&p)?;
                files += 1;
                bytes += data.len() as u64;
                found.extend(ac.find_overlapping_iter(&data).map(|m| m.pattern()));
            }
        }
    }
    Ok((files, bytes, found.len()))
}

pub(crate) fn run(args: NodeDemo, out: &Output) -> Result<ExitCode> {
    let tmp = tempfile::tempdir()?;
    let base = args.keep.clone().unwrap_or_else(|| tmp.path().to_owned());
    let data_dir = base.join("node");
    let say = |s: &str| {
        if !out.json {
            println!("{s}");
        }
    };
    say(
        "amble demo — an organisation's node keeps life archives encrypted and under each person's control\n",
    );

    let archive = Node::init(&data_dir, None)?;
    let op = operator();
    say(&format!("1. initialised a node in {}", data_dir.display()));

    let input = base.join("people.jsonl");
    let n = write_people(&input, args.subjects)?;
    let bar = out.progress(n as u64, "ingest");
    let t0 = Instant::now();
    let written = ingest::ingest_file(&archive, &op, &input, &|d| bar.set_position(d as u64))?;
    let secs = t0.elapsed().as_secs_f64();
    bar.finish_and_clear();
    std::fs::remove_file(&input)?;
    say(&format!(
        "2. ingested {written} records for {} people ({:.0} records/s, each sealed under its person's own key)",
        archive.subject_count(),
        written as f64 / secs.max(1e-9)
    ));

    let ann = ExternalRef::parse(&person_ref(1))?;
    let ann_email = ExternalRef::parse("email:person1@example.org")?;
    archive.link(&op, &ann, &ann_email)?;
    let export = archive.export(&op, &ann_email)?;
    let exported = export.document["archive"]["record_count"]
        .as_u64()
        .unwrap_or(0) as usize;
    say(&format!(
        "3. linked an email to person 1; their signed export (found by email) holds {exported} records, consent history and access log"
    ));

    let agent = amble_node::Actor::local("app:demo", Role::App);
    let bob = ExternalRef::parse(&person_ref(3))?;
    let before = archive.read(&agent, &bob, "personalisation", TimeRange::ALL)?;
    archive.change_consent(
        &op,
        &bob,
        "personalisation",
        ConsentChange::Give {
            valid_until: None,
            explicit: false,
        },
    )?;
    let allowed = match archive.read(&agent, &bob, "personalisation", TimeRange::ALL)? {
        ReadOutcome::Allowed(p) => p.records().iter().map(|r| r.len()).sum(),
        ReadOutcome::Denied(_) => 0,
    };
    archive.change_consent(&op, &bob, "personalisation", ConsentChange::Withdraw)?;
    let after = archive.read(&agent, &bob, "personalisation", TimeRange::ALL)?;
    let denied_after = matches!(after, ReadOutcome::Denied(_));
    say(&format!(
        "4. the app reads person 3 for `personalisation`: {} → consent given → {allowed} fields allowed (text masked, age as a band) → consent withdrawn → {}",
        match &before {
            ReadOutcome::Denied(r) => format!("denied ({r})"),
            ReadOutcome::Allowed(_) => "allowed".into(),
        },
        match &after {
            ReadOutcome::Denied(r) => format!("denied ({r})"),
            ReadOutcome::Allowed(_) => "STILL ALLOWED".into(),
        },
    ));

    // Local private training: most people agreed to `train.intent`; the model is trained with
    // DP-SGD (per-person clipping) and charged to the node's budget ledger.
    let give_train = |i: u32| {
        archive.change_consent(
            &op,
            &ExternalRef::parse(&person_ref(i))?,
            "train.intent",
            ConsentChange::Give {
                valid_until: None,
                explicit: false,
            },
        )
    };
    for i in (0..args.subjects).filter(|i| i % 5 != 0) {
        give_train(i)?;
    }
    let trainer = amble_node::Actor::local("node:trainer", Role::Node);
    let test: Vec<TextRow> = TEXTS
        .iter()
        .map(|(t, l)| TextRow {
            text: (*t).to_owned(),
            label: (*l).to_owned(),
            subject: None,
        })
        .collect();
    let dp = IntentTrainConfig {
        features: FeatureConfig::sentence(),
        privacy: Privacy::Dp(DpIntentConfig::sentence(args.epsilon)),
    };
    let budget = Budget {
        model_epsilon: Epsilon::new(3.0 * args.epsilon)?,
        subject_epsilon: Epsilon::new(3.0 * args.epsilon)?,
        delta: Delta::new(1e-5)?,
    };
    let run1 = archive.train_intent(&trainer, &dp, budget.clone(), &test, None)?;
    archive.change_consent(
        &op,
        &ExternalRef::parse(&person_ref(1))?,
        "train.intent",
        ConsentChange::Withdraw,
    )?;
    let run2 = archive.train_intent(&trainer, &dp, budget, &test, None)?;
    let total_eps = run2
        .charge
        .as_ref()
        .map_or(0.0, |c| c.model_total.epsilon.value());
    say(&format!(
        "5. trained the intent model with DP-SGD (ε = {} per run, δ = 1e-5, per-person clipping) on {} consenting people ({} without consent never read);\n   person 1 withdrew, the next run read {} people; the ledger now holds ε = {total_eps:.2} for this model",
        args.epsilon, run1.subjects_used, run1.subjects_refused, run2.subjects_used
    ));

    let erased = archive.erase(&op, &ann)?;
    let refused = archive.export(&op, &ann_email).is_err();
    say(&format!(
        "6. erased person 1: key destroyed, {} records deleted; export now {}",
        erased.records_deleted,
        if refused {
            "finds nothing"
        } else {
            "STILL FINDS DATA"
        }
    ));

    let mut archive = archive;
    let rot = archive.rotate_key(&op)?;
    let still = archive.export(&op, &ExternalRef::parse(&person_ref(2))?)?;
    say(&format!(
        "7. rotated the node master key to v{}: {} data keys rewrapped, no record re-encrypted; person 2's {} records still open",
        rot.new_version, rot.keys_rewrapped, still.document["archive"]["record_count"]
    ));
    let audit_entries = archive.audit_log().size();
    let subjects = archive.subject_count();
    let records: usize = archive
        .subjects()?
        .iter()
        .map(|s| archive.count(s, None))
        .sum();
    drop(archive);

    let mut needles: Vec<Vec<u8>> = (0..args.subjects)
        .flat_map(|i| [marker(i).into_bytes(), person_ref(i).into_bytes()])
        .collect();
    needles.push(b"person1@example.org".to_vec());
    needles.extend((0..args.subjects).map(|i| format!("0155{i:07}").into_bytes()));
    let (files, bytes, hits) =
        scan_dir(&data_dir.join("archive"), &needles).context("scanning the data directory")?;
    say(&format!(
        "8. scanned {files} files ({bytes} bytes) of the archive for {} names, phone numbers and markers: {hits} found",
        needles.len()
    ));

    let summary = DemoSummary {
        subjects,
        records,
        ingest_records_per_sec: written as f64 / secs.max(1e-9),
        exported_records: exported,
        erased_records: erased.records_deleted,
        erased_subject_export_refused: refused,
        read_fields_allowed: allowed,
        read_after_withdrawal_denied: denied_after,
        train_subjects_before_withdrawal: run1.subjects_used,
        train_subjects_after_withdrawal: run2.subjects_used,
        model_epsilon_spent: total_eps,
        audit_entries,
        keys_rewrapped: rot.keys_rewrapped,
        files_scanned: files,
        bytes_scanned: bytes,
        plaintext_hits: hits,
    };
    out.report(&summary, || {
        let rows = [
            ("people / records", format!("{subjects} / {records}")),
            (
                "erased person readable afterwards",
                (if refused { "no" } else { "YES" }).to_owned(),
            ),
            ("plaintext found on disk", hits.to_string()),
            ("audit entries (every access)", audit_entries.to_string()),
            (
                "ingest throughput",
                format!("{:.0} records/s", summary.ingest_records_per_sec),
            ),
        ];
        let mut t = String::new();
        for (k, v) in rows {
            t.push_str(&format!("\n  {k:<34} {v}"));
        }
        t.push_str("\n\nRun `amble demo` (without --single-node) for the federation: a coordinator and three organisations learning together.");
        t
    });
    let ok = hits == 0
        && refused
        && denied_after
        && allowed > 0
        && summary.train_subjects_after_withdrawal + 1 == summary.train_subjects_before_withdrawal;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
