//! The services' logs carry no personal data and no secrets. A small federation runs as
//! separate processes with JSON logs (the lab starts them with `AMBLE_LOG_FORMAT=json`); people
//! are ingested, classified, change their consent, export and erase over gRPC, calls are refused
//! and fail; then every log file is searched for every external reference, every ingested text
//! and the key material in the data directories. A planted canary proves the search finds
//! what it looks for.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use aho_corasick::AhoCorasick;
use amble_cli::lab::{Lab, LabSpec, banking77, person_ref};
use amble_coordinator::Phase;
use amble_proto::v1 as pb;
use pb::archive_client::ArchiveClient;
use pb::assist_client::AssistClient;
use pb::subject_client::SubjectClient;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Someone the test ingests over gRPC (not part of the lab's Banking77 people).
const NEW_REF: &str = "email:zelda.quux@example.org";
const NEW_TEXT: &str = "My name is Zelda Quux and card 4111 1111 1111 1111 was declined twice";

/// What a log must never contain, and why.
struct Needle {
    kind: &'static str,
    text: String,
}

/// The PEM body lines of a private key (the base64 of the key itself).
fn pem_body_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

/// The secrets of a node key file: every master key, the pseudonym pepper, the signing seed.
fn key_file_secrets(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|v| key_file_secrets(v, out)),
        serde_json::Value::Object(o) => {
            for (k, v) in o {
                match v {
                    serde_json::Value::String(s)
                        if ["key", "pepper", "signing_seed"].contains(&k.as_str()) =>
                    {
                        out.push(s.clone())
                    }
                    _ => key_file_secrets(v, out),
                }
            }
        }
        _ => {}
    }
}

fn read_key_file(lab: &Lab, node: usize) -> String {
    std::fs::read_to_string(lab.node_data_dir(node).join("node.key")).unwrap()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Which needles (by index) occur in which file under `dir`, raw or as a JSON string escapes them.
fn search(dir: &Path, needles: &[Needle]) -> Vec<(PathBuf, usize)> {
    let mut patterns = Vec::new();
    let mut owner = Vec::new();
    for (i, n) in needles.iter().enumerate() {
        patterns.push(n.text.clone());
        owner.push(i);
        let escaped = serde_json::to_string(&n.text).unwrap();
        let escaped = escaped[1..escaped.len() - 1].to_owned();
        if escaped != n.text {
            patterns.push(escaped);
            owner.push(i);
        }
    }
    let ac = AhoCorasick::new(&patterns).unwrap();
    let mut files = Vec::new();
    files_under(dir, &mut files);
    let mut hits = BTreeSet::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        for m in ac.find_overlapping_iter(&bytes) {
            hits.insert((f.clone(), owner[m.pattern().as_usize()]));
        }
    }
    hits.into_iter().collect()
}

fn grpc_calls(lab: &Lab) {
    let app = lab.org_identity(0, "app").unwrap();
    let admin = lab.org_identity(1, "admin").unwrap();
    let auditor = lab.org_identity(1, "auditor").unwrap();
    let (url0, url1) = (lab.node_url(0).to_owned(), lab.node_url(1).to_owned());
    lab.block_on(async {
        let mut archive = ArchiveClient::new(app.connect(&url0).await.unwrap());
        let data = serde_json::json!({
            "channel": "chat", "text": NEW_TEXT, "intent": "declined_card_payment", "outcome": "open"
        });
        archive
            .append(pb::AppendRequest {
                records: vec![pb::NewRecord {
                    r#ref: NEW_REF.into(),
                    collection: "interactions".into(),
                    time: "2026-05-01T10:00:00Z".into(),
                    data_json: data.to_string(),
                }],
            })
            .await
            .unwrap();
        // Reads, an unknown purpose, an unknown person: answered or refused, never logged with the ref.
        let _ = archive
            .read(pb::ReadRequest {
                r#ref: NEW_REF.into(),
                purpose: "support".into(),
                ..Default::default()
            })
            .await;
        let _ = archive
            .read(pb::ReadRequest {
                r#ref: NEW_REF.into(),
                purpose: "no.such.purpose".into(),
                ..Default::default()
            })
            .await;
        let mut subject = SubjectClient::new(app.connect(&url0).await.unwrap());
        let _ = subject
            .access_log(pb::SubjectRef {
                r#ref: "phone:+19990000000".into(),
            })
            .await;
        // Consent: a withdrawal and a gift, and one for a purpose that does not exist.
        for (who, purpose, give) in [
            (person_ref(0, 1), "train.intent", false),
            (NEW_REF.to_owned(), "train.intent", true),
            (person_ref(0, 2), "no.such.purpose", true),
        ] {
            let _ = subject
                .set_consent(pb::SetConsentRequest {
                    r#ref: who,
                    purpose: purpose.into(),
                    give,
                    ..Default::default()
                })
                .await;
        }
        // Assist reads the text and the person's AI-assistance choice.
        let _ = AssistClient::new(app.connect(&url0).await.unwrap())
            .classify(pb::ClassifyRequest {
                text: NEW_TEXT.into(),
                subject_ref: NEW_REF.into(),
                ..Default::default()
            })
            .await;
        // A refused call (the auditor may not erase), logged with the caller's id only.
        let _ = SubjectClient::new(auditor.connect(&url1).await.unwrap())
            .erase(pb::SubjectRef {
                r#ref: person_ref(1, 2),
            })
            .await;
        // Export and erase as the person would (through the admin role), then export again.
        let mut rights = SubjectClient::new(admin.connect(&url1).await.unwrap());
        let who = pb::SubjectRef {
            r#ref: person_ref(1, 2),
        };
        rights.export(who.clone()).await.unwrap();
        rights.erase(who.clone()).await.unwrap();
        assert!(rights.export(who).await.is_err());
    });
}

#[test]
fn a_federation_with_consent_export_and_erase_logs_no_personal_data_or_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77");
    let b = banking77(&data, 3, Some(100)).unwrap();
    let mut spec = LabSpec::new(
        PathBuf::from(env!("CARGO_BIN_EXE_amble")),
        tmp.path().to_owned(),
        3,
        2,
        None,
    );
    spec.dim_log2 = 12;
    spec.round_deadline_secs = 60;
    let mut lab = Lab::create(spec, &b.labels, &b.nodes, &|_: &str| {}).unwrap();
    let key_files_before: Vec<String> = (0..3).map(|i| read_key_file(&lab, i)).collect();
    lab.start_coordinator().unwrap();
    for i in 0..3 {
        lab.start_node(i).unwrap();
    }
    lab.wait_until(Duration::from_secs(300), |s| s.phase == Phase::Done, |_| {})
        .unwrap();
    grpc_calls(&lab);
    lab.stop_all().unwrap();

    let mut needles = Vec::new();
    for (n, d) in b.nodes.iter().enumerate() {
        for (i, row) in d.rows.iter().enumerate() {
            let r = person_ref(n, i);
            let id = r.split_once(':').map(|(_, id)| id.to_owned()).unwrap();
            needles.push(Needle {
                kind: "external ref",
                text: r,
            });
            needles.push(Needle {
                kind: "external ref id",
                text: id,
            });
            needles.push(Needle {
                kind: "ingested text",
                text: row.text.trim().to_owned(),
            });
        }
    }
    for (kind, text) in [
        ("external ref", NEW_REF),
        ("external ref id", "zelda.quux@example.org"),
        ("ingested text", NEW_TEXT),
        ("ingested text", "Zelda Quux"),
    ] {
        needles.push(Needle {
            kind,
            text: text.to_owned(),
        });
    }
    // Erasure rotated node-b's master key: the key files from before the run count too.
    let key_files_after: Vec<String> = (0..3).map(|i| read_key_file(&lab, i)).collect();
    for (i, text) in key_files_before.iter().chain(&key_files_after).enumerate() {
        let i = i % 3;
        let key: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut secrets = Vec::new();
        key_file_secrets(&key, &mut secrets);
        assert!(
            secrets.len() >= 3,
            "node.key of node {i}: {} secrets",
            secrets.len()
        );
        needles.extend(secrets.into_iter().map(|text| Needle {
            kind: "node.key",
            text,
        }));
    }
    let mut pki = Vec::new();
    files_under(lab.ca_dir(), &mut pki);
    let mut private_keys = 0;
    for key in pki
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
    {
        private_keys += 1;
        needles.extend(pem_body_lines(key).into_iter().map(|text| Needle {
            kind: "TLS private key",
            text,
        }));
    }
    assert!(private_keys >= 7, "CA, coordinator, 3 nodes, app, admin…");

    // The logs are JSON lines, one object per line, and there is something in them.
    let logs = tmp.path().join("logs");
    let mut files = Vec::new();
    files_under(&logs, &mut files);
    assert_eq!(files.len(), 4, "{files:?}");
    let mut lines = 0;
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {line}", f.display()));
            assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
            lines += 1;
        }
    }
    assert!(lines >= 8, "the services logged only {lines} lines");

    // The search works: a canary with one needle of each kind is found, and only it.
    let canary = logs.join("canary.log");
    let mut planted = BTreeSet::new();
    let mut text = String::new();
    for kind in [
        "external ref",
        "ingested text",
        "node.key",
        "TLS private key",
    ] {
        let (i, n) = needles
            .iter()
            .enumerate()
            .find(|(_, n)| n.kind == kind)
            .unwrap();
        planted.insert(i);
        text.push_str(&serde_json::json!({ "level": "INFO", "message": n.text }).to_string());
        text.push('\n');
    }
    std::fs::write(&canary, text).unwrap();
    let hits = search(&logs, &needles);
    let in_canary: BTreeSet<usize> = hits
        .iter()
        .filter(|(f, _)| *f == canary)
        .map(|(_, i)| *i)
        .collect();
    assert!(
        planted.is_subset(&in_canary),
        "the search missed planted needles"
    );
    let leaks: Vec<String> = hits
        .iter()
        .filter(|(f, _)| *f != canary)
        .map(|(f, i)| {
            format!(
                "{} in {}: {:?}",
                needles[*i].kind,
                f.display(),
                needles[*i].text
            )
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "personal data or secrets in logs:\n{}",
        leaks.join("\n")
    );
    eprintln!(
        "{} needles ({} log lines in {} files) searched: none found outside the canary",
        needles.len(),
        lines,
        files.len()
    );
}
