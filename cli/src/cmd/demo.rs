//! `amble demo`: the main job. A federation on this machine — a CA, a coordinator and
//! organisation nodes as separate processes on 127.0.0.1 with real mutual TLS and their own
//! stores — trains the intent classifier on Banking77 (split non-IID across the
//! organisations) with per-person differential privacy at every node. Mid-way one person
//! withdraws consent and is left out of every later round; afterwards a person exports and
//! erases their archive, every audit log is fetched and verified (with the coordinator's
//! witness cosignatures), and every byte the nodes wrote is scanned for identifiers.
//!
//! `--single-node` runs the older in-process walkthrough of one node instead.

mod single_node;

use crate::output::Output;
use amble_cli::lab::{Lab, LabSpec, TestSet, banking77, person_ref};
use amble_coordinator::{FederationStatus, Phase};
use amble_proto::v1 as pb;
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Organisations (nodes) in the federation, 1–10.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    nodes: u32,
    /// Federated rounds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=500))]
    rounds: u64,
    /// Privacy budget per person at each node over all rounds (δ = 1e-5).
    #[arg(long, default_value_t = 8.0)]
    epsilon: f64,
    /// Train without differential privacy (plain FedAvg) — to compare; not for real people.
    #[arg(long, conflicts_with = "epsilon")]
    no_privacy: bool,
    /// The Banking77 folder (train.csv, test.csv, categories.json and the 10-node split).
    #[arg(long, default_value = "data/banking77")]
    data: PathBuf,
    /// Use at most this many training rows per node (evenly spaced) to go faster.
    #[arg(long)]
    rows_per_node: Option<usize>,
    /// Keep everything (CA, data directories, logs, audit exports) here instead of a
    /// temporary directory that is removed afterwards.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Run the single-node walkthrough instead (ingest, consent, local training, erase, scan).
    #[arg(long)]
    single_node: bool,
    /// People in the single-node walkthrough.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    subjects: u32,
}

#[derive(Serialize)]
struct RoundLine {
    round: u64,
    accuracy: f64,
    updates: usize,
    epsilon_by_node: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct AuditLine {
    log: String,
    entries: u64,
    verified: bool,
    witnessed_size: Option<u64>,
    witnesses: Vec<String>,
}

#[derive(Serialize)]
struct Summary {
    nodes: usize,
    people: usize,
    rounds: u64,
    private: bool,
    epsilon_budget: Option<f64>,
    delta: Option<f64>,
    initial_accuracy: f64,
    final_accuracy: f64,
    rounds_detail: Vec<RoundLine>,
    withdrawn_person_rounds_before: Vec<u64>,
    withdrawn_person_rounds_after: Vec<u64>,
    exported_records: u64,
    erased_records: u64,
    export_after_erase_refused: bool,
    audit: Vec<AuditLine>,
    files_scanned: usize,
    identifier_hits: usize,
    seconds: f64,
}

pub(crate) fn run(args: DemoArgs, out: &Output) -> Result<ExitCode> {
    if args.single_node {
        return single_node::run(
            single_node::NodeDemo {
                subjects: args.subjects,
                epsilon: args.epsilon,
                keep: args.keep,
            },
            out,
        );
    }
    let t0 = Instant::now();
    let say = |s: &str| {
        if !out.json {
            crate::output::print_line(s);
        }
    };
    if !args.data.join("train.csv").exists() {
        bail!(
            "{} has no train.csv; run the demo from the repository root (where data/banking77 is) or pass --data",
            args.data.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let base = match &args.keep {
        // The services run with absolute paths in their configs; a relative --keep is taken
        // from the current directory.
        Some(k) => std::path::absolute(k)
            .with_context(|| format!("cannot resolve --keep {}", k.display()))?,
        None => tmp.path().to_owned(),
    };
    let nodes = args.nodes as usize;
    let epsilon = (!args.no_privacy).then_some(args.epsilon);
    let mut spec = LabSpec::new(
        std::env::current_exe().context("cannot find the amble binary")?,
        base.clone(),
        nodes,
        args.rounds,
        epsilon,
    );
    if epsilon.is_none() {
        spec.local_epochs = 5;
    }
    say(&format!(
        "amble demo — {nodes} organisations learn an intent classifier together; raw data never leaves them\n{}\n",
        match epsilon {
            Some(e) => format!(
                "privacy: DP-SGD with per-person clipping at every node, ε = {e} per person over all {} rounds (δ = 1e-5)",
                args.rounds
            ),
            None =>
                "privacy: NONE (--no-privacy): plain federated averaging, for comparison".into(),
        }
    ));
    let b = banking77(&args.data, nodes, args.rows_per_node)?;
    let people: usize = b.nodes.iter().map(|d| d.rows.len()).sum();
    let mut lab = Lab::create(spec, &b.labels, &b.nodes, &say)?;
    lab.start_coordinator()?;
    for i in 0..nodes {
        lab.start_node(i)?;
    }
    say(&format!(
        "coordinator on {} and {nodes} nodes started (separate processes, mutual TLS 1.3); logs in {}\n",
        lab.coordinator_url(),
        base.join("logs").display()
    ));

    let v0 = lab.fetch_model(0)?;
    let test = TestSet::new(&v0, &b.test)?;
    let initial_accuracy = test.accuracy(&v0)?;
    say(&format!(
        "round  0  accuracy {:5.1} %  (the starting model: the intents' names through the public sentence encoder)",
        100.0 * initial_accuracy
    ));
    // The person who changes their mind: at node-a, one who consented.
    let who = person_ref(0, 1);
    let withdraw_after = (args.rounds / 2).max(1);
    let mut withdrawn = args.rounds == 1;
    let mut lines: Vec<RoundLine> = Vec::new();
    let mut seen = 0usize;
    let mut failure: Option<anyhow::Error> = None;
    let done = lab.wait_until(
        Duration::from_secs(60 * 30),
        |s| s.phase == Phase::Done,
        |s: &FederationStatus| {
            while seen < s.history.len() && failure.is_none() {
                let h = &s.history[seen];
                seen += 1;
                let acc = match lab
                    .fetch_model(h.version)
                    .and_then(|m| test.accuracy(&m))
                {
                    Ok(a) => a,
                    Err(e) => {
                        failure = Some(e);
                        return;
                    }
                };
                let eps: BTreeMap<String, f64> = h
                    .updates
                    .iter()
                    .map(|u| (u.node.clone(), u.record.epsilon_total))
                    .collect();
                say(&format!(
                    "round {:2}  accuracy {:5.1} %  updates {}  {}",
                    h.round,
                    100.0 * acc,
                    h.updates.len(),
                    if epsilon.is_some() {
                        format!(
                            "ε spent: {}",
                            eps.iter()
                                .map(|(n, e)| format!("{n} {e:.2}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    } else {
                        String::new()
                    }
                ));
                lines.push(RoundLine {
                    round: h.round,
                    accuracy: acc,
                    updates: h.updates.len(),
                    epsilon_by_node: eps,
                });
                if !withdrawn && h.round >= withdraw_after {
                    withdrawn = true;
                    match set_consent(&lab, 0, &who, "train.intent", false) {
                        Ok(()) => say(
                            "           a person at node-a withdraws consent for `train.intent` (through the organisation's app)",
                        ),
                        Err(e) => failure = Some(e),
                    }
                }
            }
        },
    )?;
    if let Some(e) = failure {
        return Err(e);
    }
    let final_accuracy = lines.last().map_or(initial_accuracy, |l| l.accuracy);

    // The withdrawn person, from node-a's audit log (asked through the app, like the person would).
    let entries = access_log(&lab, 0, &who)?;
    let withdrawal_seq = entries
        .iter()
        .find(|e| e["action"] == "consent_change" && e["reason"] == "withdrawn")
        .and_then(|e| e["seq"].as_u64());
    let train_rounds = |after: bool| -> Vec<u64> {
        entries
            .iter()
            .filter(|e| e["action"] == "train")
            .filter(|e| match (withdrawal_seq, e["seq"].as_u64()) {
                (Some(w), Some(s)) => (s > w) == after,
                _ => !after,
            })
            .filter_map(|e| e["counts"]["round"].as_u64())
            .collect()
    };
    let (before, after) = (train_rounds(false), train_rounds(true));
    say(&format!(
        "\nthe person who withdrew: in training rounds {before:?} before, in {after:?} after (their access log at node-a says so)"
    ));

    // Export and erase, as the person (here through the admin role; the portal works alike).
    let subject = person_ref(1.min(nodes - 1), 2);
    let (exported, erased, refused) = export_and_erase(&lab, 1.min(nodes - 1), &subject)?;
    say(&format!(
        "a person at {} exported their archive ({exported} records, signed) and then erased it ({erased} records deleted, key destroyed); a second export {}",
        lab.node_name(1.min(nodes - 1)),
        if refused {
            "finds nothing"
        } else {
            "STILL FINDS DATA"
        }
    ));

    // Every audit log, fetched over mTLS and verified offline with the witness's key.
    let witness = amble_audit::NoteVerifier::parse(lab.witness_key())
        .context("the coordinator's witness key")?;
    let mut audit = Vec::new();
    // Each node's log is fetched by its own organisation's auditor; the coordinator's by the
    // federation's.
    let mut logs: Vec<(String, String, Option<usize>)> = (0..nodes)
        .map(|i| (lab.node_name(i), lab.node_url(i).to_owned(), Some(i)))
        .collect();
    logs.push(("coordinator".into(), lab.coordinator_url().to_owned(), None));
    for (name, url, node) in &logs {
        let dir = base.join("audit").join(name);
        let id = match node {
            Some(i) => lab.org_identity(*i, "auditor")?,
            None => lab.identity("auditor")?,
        };
        let f = lab
            .block_on(async { amble_cli::fetch::fetch_log(id.connect(url).await?, &dir).await })?;
        let report = amble_audit::verify_dir(&dir, None, std::slice::from_ref(&witness));
        let line = match report {
            Ok(r) => AuditLine {
                log: name.clone(),
                entries: f.entries,
                verified: true,
                witnessed_size: r.witnessed.as_ref().map(|w| w.size),
                witnesses: r.witnessed.map(|w| w.witnesses).unwrap_or_default(),
            },
            Err(e) => {
                say(&format!("audit log of {name} FAILED verification: {e}"));
                AuditLine {
                    log: name.clone(),
                    entries: f.entries,
                    verified: false,
                    witnessed_size: None,
                    witnesses: Vec::new(),
                }
            }
        };
        audit.push(line);
    }
    lab.stop_all()?;

    // Every byte the nodes and the coordinator wrote, scanned for the people's references.
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for (i, d) in b.nodes.iter().enumerate() {
        for k in 0..d.rows.len() {
            let r = person_ref(i, k);
            needles.push(r.clone().into_bytes());
            if let Some(num) = r.strip_prefix("phone:") {
                needles.push(num.as_bytes().to_vec());
            }
        }
    }
    let mut dirs: Vec<PathBuf> = (0..nodes).map(|i| lab.node_data_dir(i)).collect();
    dirs.push(lab.coordinator_data_dir());
    let (files, hits) = scan(&dirs, &needles)?;

    let summary = Summary {
        nodes,
        people,
        rounds: args.rounds,
        private: epsilon.is_some(),
        epsilon_budget: epsilon,
        delta: epsilon.map(|_| 1e-5),
        initial_accuracy,
        final_accuracy,
        rounds_detail: lines,
        withdrawn_person_rounds_before: before,
        withdrawn_person_rounds_after: after,
        exported_records: exported,
        erased_records: erased,
        export_after_erase_refused: refused,
        audit,
        files_scanned: files,
        identifier_hits: hits,
        seconds: t0.elapsed().as_secs_f64(),
    };
    out.report(&summary, || render(&summary, &done));
    let ok = summary.audit.iter().all(|a| a.verified)
        && summary.withdrawn_person_rounds_after.is_empty()
        && refused
        && hits == 0;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(s: &Summary, status: &FederationStatus) -> String {
    let mut t = String::from("\n");
    let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<40} {v}\n"));
    row(
        "organisations / people",
        format!("{} / {}", s.nodes, s.people),
    );
    row(
        "rounds",
        format!("{} ({} published)", s.rounds, status.history.len()),
    );
    row(
        "accuracy (Banking77 test set)",
        format!(
            "{:.1} % → {:.1} %",
            100.0 * s.initial_accuracy,
            100.0 * s.final_accuracy
        ),
    );
    row(
        "privacy per person at each node",
        match s.epsilon_budget {
            Some(e) => format!("ε = {e}, δ = 1e-5 (DP-SGD, per-person clipping)"),
            None => "none (--no-privacy)".into(),
        },
    );
    row(
        "withdrawn person in rounds after",
        if s.withdrawn_person_rounds_after.is_empty() {
            "none".into()
        } else {
            format!("{:?} — NOT EXCLUDED", s.withdrawn_person_rounds_after)
        },
    );
    row(
        "erased person readable afterwards",
        (if s.export_after_erase_refused {
            "no"
        } else {
            "YES"
        })
        .into(),
    );
    for a in &s.audit {
        row(
            &format!("audit log {}", a.log),
            format!(
                "{} entries, {}{}",
                a.entries,
                if a.verified { "verified" } else { "FAILED" },
                match a.witnessed_size {
                    Some(n) => format!(", first {n} witnessed by {}", a.witnesses.join(", ")),
                    None => String::new(),
                }
            ),
        );
    }
    row(
        "identifiers found on disk",
        format!("{} (in {} files)", s.identifier_hits, s.files_scanned),
    );
    row("wall time", format!("{:.0} s", s.seconds));
    t
}

fn set_consent(lab: &Lab, node: usize, who: &str, purpose: &str, give: bool) -> Result<()> {
    let id = lab.org_identity(node, "app")?;
    let url = lab.node_url(node).to_owned();
    lab.block_on(async {
        pb::subject_client::SubjectClient::new(id.connect(&url).await?)
            .set_consent(pb::SetConsentRequest {
                r#ref: who.to_owned(),
                purpose: purpose.to_owned(),
                give,
                ..Default::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("SetConsent: {}", s.message()))?;
        Ok(())
    })
}

fn access_log(lab: &Lab, node: usize, who: &str) -> Result<Vec<serde_json::Value>> {
    let id = lab.org_identity(node, "app")?;
    let url = lab.node_url(node).to_owned();
    lab.block_on(async {
        let r = pb::subject_client::SubjectClient::new(id.connect(&url).await?)
            .access_log(pb::SubjectRef {
                r#ref: who.to_owned(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("AccessLog: {}", s.message()))?
            .into_inner();
        r.entries_json
            .iter()
            .map(|e| Ok(serde_json::from_str(e)?))
            .collect()
    })
}

fn export_and_erase(lab: &Lab, node: usize, who: &str) -> Result<(u64, u64, bool)> {
    let id = lab.org_identity(node, "admin")?;
    let url = lab.node_url(node).to_owned();
    lab.block_on(async {
        let mut c = pb::subject_client::SubjectClient::new(id.connect(&url).await?);
        let r = pb::SubjectRef {
            r#ref: who.to_owned(),
        };
        let export = async {
            let stream = c.export(r.clone()).await?.into_inner();
            amble_proto::chunks::join(stream, amble_proto::chunks::MAX_DOCUMENT_BYTES).await
        }
        .await
        .map_err(|s| anyhow::anyhow!("Export: {}", s.message()))?;
        let doc: serde_json::Value = serde_json::from_str(&export)?;
        let records = doc["document"]["archive"]["record_count"]
            .as_u64()
            .or_else(|| doc["archive"]["record_count"].as_u64())
            .unwrap_or(0);
        let erased = c
            .erase(r.clone())
            .await
            .map_err(|s| anyhow::anyhow!("Erase: {}", s.message()))?
            .into_inner();
        let refused = c.export(r).await.is_err();
        Ok((records, erased.records_deleted, refused))
    })
}

/// Files scanned and how many distinct needles were found in any of them.
fn scan(dirs: &[PathBuf], needles: &[Vec<u8>]) -> Result<(usize, usize)> {
    let ac = aho_corasick::AhoCorasick::new(needles)?;
    let mut found = std::collections::HashSet::new();
    let mut files = 0;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("scanning {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if !is_config(&p) {
                let data = std::fs::read(&p)?;
                files += 1;
                found.extend(ac.find_overlapping_iter(&data).map(|m| m.pattern()));
            }
        }
    }
    Ok((files, found.len()))
}

fn is_config(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "toml")
}
