//! The operator's CLI on good and bad input: each mistake gives one line naming the
//! problem, a non-zero exit, and an archive left exactly as it was.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::Path;
mod common;
use common::*;

fn init(dir: &Path) -> String {
    let d = dir.join("node").display().to_string();
    let o = amble(&["node", "init", "--data-dir", &d]);
    assert!(o.status.success(), "{}", stderr(&o));
    d
}

fn status(d: &str) -> serde_json::Value {
    let o = amble(&["--json", "node", "status", "--data-dir", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

const GOOD: &str = r#"{"ref":"phone:+15550001","collection":"interactions","time":"2026-05-01T10:00:00Z","data":{"text":"hi"}}"#;

#[test]
fn ingest_export_erase_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = init(dir.path());
    let f = dir.path().join("in.jsonl");
    std::fs::write(&f, format!("{GOOD}\n\n{}\n", GOOD.replace("hi", "again"))).unwrap();
    let o = amble(&["node", "ingest", "--data-dir", &d, f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(status(&d)["records"], 2);
    let o = amble(&[
        "node",
        "export",
        "--data-dir",
        &d,
        "--ref",
        "phone:+15550001",
    ]);
    let export: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let doc = &export["document"];
    assert_eq!(doc["schema"], "amble.export/v1");
    assert_eq!(
        doc["archive"]["records"]["interactions"][1]["data"]["text"],
        "again"
    );
    assert!(
        export["signature"]["value"]
            .as_str()
            .is_some_and(|v| v.len() > 80)
    );
    let log = doc["access_log"].as_array().unwrap();
    assert!(log.iter().any(|e| e["action"] == "append"), "ingest logged");
    assert!(
        log.iter().any(|e| e["action"] == "export"),
        "this export logged"
    );
    let o = amble(&[
        "node",
        "erase",
        "--data-dir",
        &d,
        "--ref",
        "phone:+15550001",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = amble(&[
        "node",
        "export",
        "--data-dir",
        &d,
        "--ref",
        "phone:+15550001",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no subject is known"), "{}", stderr(&o));
}

#[cfg(unix)]
#[test]
fn an_export_out_file_is_0600_and_a_symlink_there_is_replaced_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = init(dir.path());
    let f = dir.path().join("in.jsonl");
    std::fs::write(&f, format!("{GOOD}\n")).unwrap();
    assert!(
        amble(&["node", "ingest", "--data-dir", &d, f.to_str().unwrap()])
            .status
            .success()
    );
    // An existing world-readable file, and a symlink to another one.
    let existing = dir.path().join("existing.json");
    std::fs::write(&existing, "old").unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let elsewhere = dir.path().join("elsewhere.json");
    std::fs::write(&elsewhere, "untouched").unwrap();
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    for out in [&existing, &link] {
        let o = amble(&[
            "node",
            "export",
            "--data-dir",
            &d,
            "--ref",
            "phone:+15550001",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let meta = std::fs::symlink_metadata(out).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} is still a symlink",
            out.display()
        );
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            out.display()
        );
    }
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "untouched");
}

#[test]
fn bad_lines_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = init(dir.path());
    let cases = [
        ("{not json", "line 2: not a valid record"),
        (
            &GOOD.replace("interactions", "horoscope"),
            "line 2: unknown collection `horoscope`",
        ),
        (
            &GOOD.replace("2026-05-01T10:00:00Z", "yesterday"),
            "line 2: `time` must be RFC 3339",
        ),
        (
            &GOOD.replace("phone:+15550001", "15550001"),
            "line 2: `ref`",
        ),
        (
            &GOOD.replace(r#"{"text":"hi"}"#, "[1]"),
            "line 2: `data` must be a JSON object",
        ),
    ];
    for (bad, expect) in cases {
        let f = dir.path().join("bad.jsonl");
        std::fs::write(&f, format!("{GOOD}\n{bad}\n{GOOD}\n")).unwrap();
        let o = amble(&["node", "ingest", "--data-dir", &d, f.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            !err.contains("15550001") || expect.contains("`ref`"),
            "no ref echoed: {err}"
        );
        assert_eq!(status(&d)["records"], 0, "nothing written for {bad}");
    }
}

#[test]
fn missing_dir_exposed_key_and_wrong_key_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = amble(&[
        "node",
        "status",
        "--data-dir",
        dir.path().join("nope").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("amble node init"), "{}", stderr(&o));

    let d = init(dir.path());
    let key = Path::new(&d).join("node.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = amble(&["node", "status", "--data-dir", &d]);
        assert_eq!(o.status.code(), Some(1));
        let err = stderr(&o);
        assert!(
            err.contains("chmod 600") && err.trim().lines().count() == 1,
            "{err}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let other = init(&dir.path().join("other"));
    let other_key = Path::new(&other).join("node.key");
    let o = amble(&[
        "node",
        "status",
        "--data-dir",
        &d,
        "--key-file",
        other_key.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not belong to this data directory"),
        "{}",
        stderr(&o)
    );
    assert_eq!(status(&d)["subjects"], 0);
}

#[test]
fn rotate_key_keeps_records_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = init(dir.path());
    let f = dir.path().join("in.jsonl");
    std::fs::write(&f, format!("{GOOD}\n")).unwrap();
    assert!(
        amble(&["node", "ingest", "--data-dir", &d, f.to_str().unwrap()])
            .status
            .success()
    );
    let o = amble(&["--json", "node", "rotate-key", "--data-dir", &d]);
    let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rep["new_version"], 2);
    assert_eq!(rep["keys_rewrapped"], 1);
    let o = amble(&[
        "node",
        "export",
        "--data-dir",
        &d,
        "--ref",
        "phone:+15550001",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn demo_runs_and_finds_no_plaintext() {
    let o = amble(&["--json", "demo", "--single-node", "--subjects", "20"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["plaintext_hits"], 0);
    assert_eq!(s["erased_subject_export_refused"], true);
    assert_eq!(s["subjects"], 19);
    assert_eq!(s["read_after_withdrawal_denied"], true);
    let before = s["train_subjects_before_withdrawal"].as_u64().unwrap();
    assert_eq!(
        s["train_subjects_after_withdrawal"].as_u64().unwrap() + 1,
        before
    );
    assert_eq!(before, 16, "4 of 20 people gave no train.intent consent");
    assert!(s["model_epsilon_spent"].as_f64().unwrap() > 4.0);
}
