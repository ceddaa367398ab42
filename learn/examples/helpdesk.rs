//! Helpdesk next-activity evaluation:
//! `cargo run --release -p amble-learn --example helpdesk`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
use std::path::PathBuf;

use amble_learn::train::{
    NeedTrainConfig, read_event_log, train_needs_cases, train_needs_helpdesk,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/helpdesk");
    let mut cfg = NeedTrainConfig::default();
    let args: Vec<String> = std::env::args().collect();
    if let Some(v) = args.get(1) {
        cfg.sgd.epochs = v.parse()?;
    }
    if let Some(v) = args.get(2) {
        cfg.sgd.learning_rate = v.parse()?;
    }
    if let Some(v) = args.get(3) {
        cfg.resource_tag = v == "1";
    }
    if let Some(v) = args.get(4) {
        cfg.features.last_k = v.parse()?;
    }
    // VALIDATE=1: the last fifth of the training cases (chronological) is the test set.
    let r = if std::env::var("VALIDATE").is_ok() {
        let cases = read_event_log(&root.join("train.csv"))?;
        let (tr, va) = cases.split_at(cases.len() * 4 / 5);
        train_needs_cases(tr, va, &cfg, None)?
    } else {
        train_needs_helpdesk(&root.join("train.csv"), &root.join("test.csv"), &cfg, None)?
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
