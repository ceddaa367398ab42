//! Consent, policy-gated reads and policy files at the command line.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
use common::*;

#[test]
fn consent_gates_reads_and_receipts_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let d = d.to_str().unwrap();
    ok(&amble(&["node", "init", "--data-dir", d]));
    let f = dir.path().join("in.jsonl");
    std::fs::write(
        &f,
        r#"{"ref":"phone:+1","collection":"profile","time":"2026-11-01T10:00:00Z","data":{"birth_year":1990,"city":"Lyon","language":"fr"}}
"#,
    )
    .unwrap();
    ok(&amble(&[
        "node",
        "ingest",
        "--data-dir",
        d,
        f.to_str().unwrap(),
    ]));
    let read = [
        "node",
        "read",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "--purpose",
        "personalisation",
        "--role",
        "app",
    ];
    let o = amble(&read);
    assert_eq!(o.status.code(), Some(3), "denied without consent");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no consent for personalisation"));

    let receipt = dir.path().join("receipt.json");
    ok(&amble(&[
        "node",
        "consent",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "give",
        "--purpose",
        "personalisation",
        "--receipt-out",
        receipt.to_str().unwrap(),
    ]));
    let projection: serde_json::Value = serde_json::from_str(&ok(&amble(&read))).unwrap();
    let text = projection.to_string();
    assert!(
        !text.contains("1990"),
        "birth year never leaves, only its band: {text}"
    );

    let key = dir.path().join("node.pub");
    ok(&amble(&[
        "node",
        "pubkey",
        "--data-dir",
        d,
        "--out",
        key.to_str().unwrap(),
    ]));
    ok(&amble(&[
        "consent",
        "verify-receipt",
        receipt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]));
    let mut bytes = std::fs::read(&receipt).unwrap();
    let n = bytes.len() / 3;
    bytes[n] ^= 0x02;
    std::fs::write(&receipt, &bytes).unwrap();
    let o = amble(&[
        "consent",
        "verify-receipt",
        receipt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "a changed receipt fails");

    ok(&amble(&[
        "node",
        "consent",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "withdraw",
        "--purpose",
        "personalisation",
    ]));
    let o = amble(&read);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("withdrawn on"));
    let shown = ok(&amble(&[
        "node",
        "consent",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "show",
    ]));
    assert!(shown.contains("personalisation"), "{shown}");
}

#[test]
fn policy_check_reports_line_and_column_and_ropa_names_purposes() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policy.example.toml");
    let table = ok(&amble(&["policy", "check", example]));
    assert!(table.contains("train.intent"), "{table}");
    assert!(
        !table.contains("falls back"),
        "the example is translated: {table}"
    );
    // A purpose without its zh-TW text: the check says which text those readers see instead.
    let untranslated = std::fs::read_to_string(example)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\"zh-TW\""))
        .collect::<Vec<_>>()
        .join("\n");
    let f = dir.path().join("untranslated.toml");
    std::fs::write(&f, untranslated).unwrap();
    let warned = ok(&amble(&["policy", "check", f.to_str().unwrap()]));
    assert!(
        warned.contains(
            "purpose `support` has no zh-TW description; readers of zh-TW see the zh-CN one"
        ),
        "{warned}"
    );
    let ropa = ok(&amble(&["policy", "ropa", example]));
    for p in [
        "support",
        "personalisation",
        "train.intent",
        "train.needs",
        "analytics",
    ] {
        assert!(ropa.contains(p), "RoPA misses {p}");
    }
    let bad = std::fs::read_to_string(example).unwrap().replacen(
        "legal_basis = \"contract\"",
        "legal_basis = \"vibes\"",
        1,
    );
    let line = bad.lines().position(|l| l.contains("vibes")).unwrap() + 1;
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, bad).unwrap();
    let o = amble(&["policy", "check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("{line}:")),
        "line {line} named in {err}"
    );
}

/// A new node under `dir` holding one person, `phone:+1`, with a profile; its data directory.
fn node_with_one_person(dir: &std::path::Path) -> String {
    let d = dir.join("n");
    let d = d.to_str().unwrap().to_owned();
    ok(&amble(&["node", "init", "--data-dir", &d]));
    let f = dir.join("in.jsonl");
    std::fs::write(
        &f,
        r#"{"ref":"phone:+1","collection":"profile","time":"2026-11-01T10:00:00Z","data":{"birth_year":1990,"city":"Lyon"}}
"#,
    )
    .unwrap();
    ok(&amble(&[
        "node",
        "ingest",
        "--data-dir",
        &d,
        f.to_str().unwrap(),
    ]));
    d
}

#[test]
fn an_operator_restricts_objects_and_sets_the_assistance_level_with_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let d = node_with_one_person(dir.path());
    let d = d.as_str();
    let right = |args: &[&str]| {
        let mut v = vec!["node", "right", "--data-dir", d, "--ref", "phone:+1"];
        v.extend_from_slice(args);
        amble(&v)
    };
    let read = |purpose: &str, role: &str| {
        amble(&[
            "node",
            "read",
            "--data-dir",
            d,
            "--ref",
            "phone:+1",
            "--purpose",
            purpose,
            "--role",
            role,
        ])
    };
    ok(&read("support", "agent"));

    let receipt = dir.path().join("restriction.json");
    ok(&right(&[
        "--receipt-out",
        receipt.to_str().unwrap(),
        "restrict",
    ]));
    let key = dir.path().join("node.pub");
    ok(&amble(&[
        "node",
        "pubkey",
        "--data-dir",
        d,
        "--out",
        key.to_str().unwrap(),
    ]));
    ok(&amble(&[
        "consent",
        "verify-receipt",
        receipt.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]));
    let o = read("support", "agent");
    assert_eq!(o.status.code(), Some(3), "a restricted archive is not read");
    assert!(String::from_utf8_lossy(&o.stderr).contains("restricted since"));
    let o = right(&["restrict"]);
    assert!(
        !o.status.success(),
        "restricting twice says nothing changed"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing to change"));
    ok(&right(&["unrestrict"]));
    ok(&read("support", "agent"));

    ok(&right(&["object", "--purpose", "analytics"]));
    let o = read("analytics", "admin");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("objects to analytics"));
    let o = right(&["object", "--purpose", "support"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("admits no objection"));

    ok(&right(&["assistance", "ai-suggests"]));
    let shown: serde_json::Value = serde_json::from_str(&ok(&amble(&[
        "--json",
        "node",
        "consent",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "show",
    ])))
    .unwrap();
    assert_eq!(shown["ai_assistance"], "ai_suggests");
    assert_eq!(shown["objections"], serde_json::json!(["analytics"]));
    assert_eq!(shown["restricted_since"], serde_json::Value::Null);

    // Each request is in the register, answered at once; none is open or overdue.
    let requests = |which: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&ok(&amble(&[
            "--json",
            "node",
            "requests",
            "--data-dir",
            d,
            "--which",
            which,
        ])))
        .unwrap()
    };
    let all = requests("all");
    let kinds: Vec<&str> = all.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["restriction", "restriction", "objection"],
        "{all:?}"
    );
    assert!(
        all.iter()
            .all(|r| r["outcome"] == "done" && r["overdue"] == false)
    );
    assert!(requests("overdue").is_empty());
    let table = ok(&amble(&["node", "requests", "--data-dir", d]));
    assert!(
        table.contains("objection") && table.contains("deadline"),
        "{table}"
    );
    let id = all[0]["id"].to_string();
    let answer = |outcome: &str| {
        let o = amble(&[
            "node",
            "answer-request",
            "--data-dir",
            d,
            "--id",
            &id,
            "--outcome",
            outcome,
        ]);
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(answer("refused").contains("answered already"));
    assert!(answer("maybe").contains("outcome \"maybe\" is not usable"));
}

#[test]
fn an_operator_corrects_a_record_and_the_export_shows_only_the_correction() {
    let dir = tempfile::tempdir().unwrap();
    let d = node_with_one_person(dir.path());
    let d = d.as_str();
    let export = |d: &str| -> serde_json::Value {
        serde_json::from_str(&ok(&amble(&[
            "node",
            "export",
            "--data-dir",
            d,
            "--ref",
            "phone:+1",
        ])))
        .unwrap()
    };
    let before = export(d);
    let id = before["document"]["archive"]["records"]["profile"][0]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no record id in {before}"));
    let id = id.to_string();
    ok(&amble(&[
        "node",
        "rectify",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "--record-id",
        &id,
        "--fields",
        r#"{"city": "Nantes"}"#,
    ]));
    let after = export(d).to_string();
    assert!(
        after.contains("Nantes") && !after.contains("Lyon"),
        "{after}"
    );
    let o = amble(&[
        "node",
        "rectify",
        "--data-dir",
        d,
        "--ref",
        "phone:+1",
        "--record-id",
        &id,
        "--fields",
        "[1]",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("JSON object"));
}
