//! The auditor's workflow at the command line: export, verify offline, detect tampering,
//! prove inclusion, and answer "who looked at my data".
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
use common::*;

#[test]
fn export_verify_tamper_prove_and_subject_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let d = d.to_str().unwrap();
    ok(&amble(&["node", "init", "--data-dir", d]));
    let f = dir.path().join("in.jsonl");
    let mut lines = String::new();
    for i in 0..5 {
        lines.push_str(&format!(
            "{{\"ref\":\"phone:+{i}\",\"collection\":\"goals\",\"time\":\"2026-11-01T10:00:00Z\",\"data\":{{\"goal\":\"g{i}\"}}}}\n"
        ));
    }
    std::fs::write(&f, lines).unwrap();
    ok(&amble(&[
        "node",
        "ingest",
        "--data-dir",
        d,
        f.to_str().unwrap(),
    ]));
    let o = amble(&[
        "node",
        "read",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "--purpose",
        "support",
        "--role",
        "agent",
    ]);
    assert!(o.status.success());
    let o = amble(&[
        "node",
        "read",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "--purpose",
        "train.intent",
        "--role",
        "node",
    ]);
    assert_eq!(o.status.code(), Some(3));

    let old = dir.path().join("old");
    ok(&amble(&[
        "audit",
        "export",
        "--data-dir",
        d,
        "--out",
        old.to_str().unwrap(),
    ]));
    ok(&amble(&[
        "node",
        "export",
        "--data-dir",
        d,
        "--ref",
        "phone:+2",
    ]));
    let new = dir.path().join("new");
    ok(&amble(&[
        "audit",
        "export",
        "--data-dir",
        d,
        "--out",
        new.to_str().unwrap(),
    ]));
    let report = ok(&amble(&[
        "audit",
        "verify",
        new.to_str().unwrap(),
        "--since",
        old.join("checkpoint").to_str().unwrap(),
    ]));
    assert!(report.starts_with("OK"), "{report}");
    assert!(
        report.contains("train.intent"),
        "accesses by purpose: {report}"
    );

    // Tampering: change one entry's decision, then remove a line.
    let entries = new.join("entries.jsonl");
    let text = std::fs::read_to_string(&entries).unwrap();
    std::fs::write(&entries, text.replacen("\"deny\"", "\"allow\"", 1)).unwrap();
    let o = amble(&["audit", "verify", new.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "changed decision detected");
    let mut ls: Vec<_> = text.lines().collect();
    ls.remove(2);
    std::fs::write(&entries, ls.join("\n") + "\n").unwrap();
    let o = amble(&["audit", "verify", new.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "removed line detected");
    assert!(String::from_utf8_lossy(&o.stderr).contains("FAILED"));

    let proof: serde_json::Value = serde_json::from_str(&ok(&amble(&[
        "audit",
        "prove",
        "--data-dir",
        d,
        "--index",
        "3",
    ])))
    .unwrap();
    assert_eq!(proof["leaf_index"], 3);
    assert!(proof["proof"].as_array().is_some_and(|p| !p.is_empty()));
    let cons: serde_json::Value = serde_json::from_str(&ok(&amble(&[
        "audit",
        "prove",
        "--data-dir",
        d,
        "--since-size",
        "2",
    ])))
    .unwrap();
    assert_eq!(cons["old_size"], 2);

    let who = ok(&amble(&[
        "--json",
        "audit",
        "subject",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
    ]));
    let who: Vec<serde_json::Value> = serde_json::from_str(&who).unwrap();
    let actions: Vec<_> = who
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    // Ingest, the allowed and the denied read, and this lookup itself.
    assert_eq!(actions, ["append", "read", "read", "read"], "{who:?}");
    assert_eq!(who[3]["reason"], "access log");
    assert!(!who.iter().any(|e| e.to_string().contains("phone:")));
}

#[test]
fn the_offline_cli_logs_the_account_it_runs_as_not_what_user_says() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let d = d.to_str().unwrap();
    ok(&amble(&["node", "init", "--data-dir", d]));
    let f = dir.path().join("in.jsonl");
    std::fs::write(
        &f,
        "{\"ref\":\"phone:+1\",\"collection\":\"goals\",\"time\":\"2026-11-01T10:00:00Z\",\"data\":{\"goal\":\"g\"}}\n",
    )
    .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_amble"))
        .env("USER", "mallory")
        .env("LOGNAME", "mallory")
        .args(["node", "ingest", "--data-dir", d, f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.path().join("audit");
    ok(&amble(&[
        "audit",
        "export",
        "--data-dir",
        d,
        "--out",
        out.to_str().unwrap(),
    ]));
    let entries = std::fs::read_to_string(out.join("entries.jsonl")).unwrap();
    let actors: Vec<String> = entries
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["actor"].to_string())
        .collect();
    assert!(
        actors.iter().any(|a| a.starts_with("\"operator:")),
        "{actors:?}"
    );
    assert!(!entries.contains("mallory"), "{actors:?}");
}
