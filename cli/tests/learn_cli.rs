//! The accountant and local training at the command line.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
use common::*;
use std::process::Output;

fn number(o: &Output) -> f64 {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn privacy_epsilon_reproduces_published_values_and_sigma_inverts_it() {
    // Abadi et al. 2016 (moments accountant grid, classic conversion): ε ≈ 1.26.
    let e = number(&amble(&[
        "privacy",
        "epsilon",
        "--q",
        "0.01",
        "--sigma",
        "4",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--orders",
        "abadi",
        "--conversion",
        "classic",
    ]));
    assert!((e - 1.26).abs() / 1.26 < 0.01, "{e}");
    // dp_accounting's PLD on the same run: 0.947.
    let e = number(&amble(&[
        "privacy",
        "epsilon",
        "--q",
        "0.01",
        "--sigma",
        "4",
        "--steps",
        "10000",
        "--accountant",
        "pld",
    ]));
    assert!((e - 0.947).abs() / 0.947 < 0.01, "{e}");
    let s = number(&amble(&[
        "privacy",
        "sigma",
        "--q",
        "0.01",
        "--steps",
        "10000",
        "--epsilon",
        "1.0355",
    ]));
    assert!((s - 4.0).abs() < 0.02, "σ round trip: {s}");
    let o = amble(&[
        "privacy", "epsilon", "--q", "2", "--sigma", "1", "--steps", "5",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sample rate"));
}

#[test]
fn train_intent_on_a_small_csv_reports_accuracy_and_epsilon() {
    let dir = tempfile::tempdir().unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/banking77/train.csv");
    let text = std::fs::read_to_string(data).unwrap();
    // Three intents, every row of each: small enough for a test, big enough to learn.
    let mut small = String::from("text,category\n");
    for line in text.lines().skip(1) {
        if line.ends_with(",card_arrival")
            || line.ends_with(",lost_or_stolen_card")
            || line.ends_with(",exchange_rate")
        {
            small.push_str(line);
            small.push('\n');
        }
    }
    let f = dir.path().join("small.csv");
    std::fs::write(&f, small).unwrap();
    let f = f.to_str().unwrap();
    // `amble --json train intent` on the small file, with `extra` flags; its JSON report.
    let train = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--json", "train", "intent", "--train", f, "--test", f];
        args.extend_from_slice(extra);
        let o = amble(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let r = train(&[]);
    assert_eq!(r["classes"], 3);
    assert!(r["accuracy"].as_f64().unwrap() > 0.9, "{r}");
    assert!(r["epsilon"].is_null(), "non-private run spends nothing");
    let r = train(&["--epsilon", "4"]);
    let eps = r["epsilon"].as_f64().unwrap();
    assert!(eps <= 4.0 + 1e-6 && eps > 3.9, "spent {eps}");
    assert!(r["accuracy"].as_f64().unwrap() > 0.9, "{r}");
    // The n-gram featuriser is one flag away; an unknown one is a usage error naming the choices.
    let r = train(&["--features", "hashed"]);
    assert!(r["accuracy"].as_f64().unwrap() > 0.9, "{r}");
    let o = amble(&["train", "intent", "--features", "bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sentence") && err.contains("hashed"), "{err}");
    let o = amble(&[
        "train",
        "intent",
        "--train",
        "/nonexistent.csv",
        "--test",
        f,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonexistent.csv"));
}

#[test]
fn train_needs_on_a_synthetic_archive_beats_the_majority_baseline() {
    let o = amble(&[
        "--json",
        "train",
        "needs",
        "--synthetic",
        "600",
        "--seed",
        "3",
    ]);
    let r: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let (acc, base) = (
        r["accuracy"].as_f64().unwrap(),
        r["baseline_accuracy"].as_f64().unwrap(),
    );
    assert_eq!(r["test_prefixes"], 120);
    assert!(acc > base + 0.3, "accuracy {acc} vs baseline {base}");
}

#[test]
fn train_on_a_node_whose_key_file_lives_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let (d, key) = (d.to_str().unwrap(), dir.path().join("keys.key"));
    let key = key.to_str().unwrap();
    ok(&amble(&[
        "node",
        "init",
        "--data-dir",
        d,
        "--key-file",
        key,
    ]));
    let mut lines = String::new();
    for i in 0..8 {
        for (text, intent) in [
            ("my card has not arrived", "card_arrival"),
            ("I lost my card", "lost_or_stolen_card"),
        ] {
            lines.push_str(&format!(
                "{{\"ref\":\"phone:+{i}\",\"collection\":\"interactions\",\"time\":\"2026-11-01T10:00:00Z\",\"data\":{{\"text\":\"{text}\",\"intent\":\"{intent}\"}}}}\n"
            ));
        }
    }
    let f = dir.path().join("in.jsonl");
    std::fs::write(&f, lines).unwrap();
    ok(&amble(&[
        "node",
        "ingest",
        "--data-dir",
        d,
        "--key-file",
        key,
        f.to_str().unwrap(),
    ]));
    for i in 0..8 {
        let r = format!("phone:+{i}");
        ok(&amble(&[
            "node",
            "consent",
            "--data-dir",
            d,
            "--key-file",
            key,
            "--ref",
            &r,
            "give",
            "--purpose",
            "train.intent",
        ]));
    }
    let test = dir.path().join("test.csv");
    std::fs::write(
        &test,
        "text,category\nmy card has not arrived,card_arrival\nI lost my card,lost_or_stolen_card\n",
    )
    .unwrap();
    let o = amble(&[
        "--json",
        "train",
        "intent",
        "--data-dir",
        d,
        "--key-file",
        key,
        "--test",
        test.to_str().unwrap(),
    ]);
    let run: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(run["subjects_used"], 8);
    assert_eq!(run["examples"], 16);

    // The impact assessment states what the node's ledger says training has spent.
    let policy = format!("{d}/policy.toml");
    let dpia = |d: &str| {
        ok(&amble(&[
            "policy",
            "dpia",
            &policy,
            "--data-dir",
            d,
            "--key-file",
            key,
        ]))
    };
    assert!(
        dpia(d).contains("no private training yet"),
        "a non-private run spends nothing"
    );
    let o = amble(&[
        "--json",
        "train",
        "intent",
        "--data-dir",
        d,
        "--key-file",
        key,
        "--test",
        test.to_str().unwrap(),
        "--epsilon",
        "5",
    ]);
    let private: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    let spent = private["charge"]["model_total"]["epsilon"]
        .as_f64()
        .unwrap_or_else(|| panic!("no charge in {private}"));
    let text = dpia(d);
    assert!(
        text.contains(&format!("| `train.intent` | intent | 1 | {spent:.3} |")),
        "{text}"
    );
}
