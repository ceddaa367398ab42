//! Banking77 evaluation (the tuning tool behind `DpIntentConfig::banking77`):
//! `cargo run --release -p amble-learn --example banking77 -- np [dim_log2 epochs lr decay l2]`
//! `cargo run --release -p amble-learn --example banking77 -- <epsilon> [dim_log2 q epochs lr clip avg_tail final_lr label_prior]`
//! `VALIDATE=1` trains on 4/5 of train.csv and scores the held-out fifth (never test);
//! `CHAR_MIN`, `CHAR_MAX`, `WORD_MAX` change the featuriser.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
use amble_learn::model::FeatureConfig;
use amble_learn::model::SgdConfig;
use amble_learn::train::*;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77");
    let mode = args.get(1).map(String::as_str).unwrap_or("np");
    let dim_log2: u8 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let env = |k: &str, d: u8| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let hashed = FeatureConfig {
        dim_log2,
        char_min: env("CHAR_MIN", 2),
        char_max: env("CHAR_MAX", 5),
        word_max: env("WORD_MAX", 2),
        sentence: None,
    };
    // FEATURES=sentence | hashed | combined:SHARE (default sentence).
    let features = match std::env::var("FEATURES").as_deref().unwrap_or("sentence") {
        "hashed" => hashed,
        "sentence" => FeatureConfig::sentence(),
        other => {
            let share: f32 = other.trim_start_matches("combined:").parse()?;
            FeatureConfig {
                sentence: FeatureConfig::combined(dim_log2, share).sentence,
                ..hashed
            }
        }
    };
    let privacy = match mode {
        "np" => {
            let mut s = SgdConfig::default();
            if let Some(e) = args.get(3) {
                s.epochs = e.parse()?;
            }
            if let Some(l) = args.get(4) {
                s.learning_rate = l.parse()?;
            }
            if let Some(d) = args.get(5) {
                s.decay = d.parse()?;
            }
            if let Some(d) = args.get(6) {
                s.l2 = d.parse()?;
            }
            Privacy::None(s)
        }
        _ => {
            let mut d = DpIntentConfig::for_features(&features, mode.parse()?);
            if let Some(v) = args.get(3) {
                d.sample_rate = v.parse()?;
            }
            if let Some(v) = args.get(4) {
                d.epochs = v.parse()?;
            }
            if let Some(v) = args.get(5) {
                d.learning_rate = v.parse()?;
            }
            if let Some(v) = args.get(6) {
                d.clip_norm = v.parse()?;
            }
            if let Some(v) = args.get(7) {
                d.average_tail = v.parse()?;
            }
            if let Some(v) = args.get(8) {
                d.final_lr_fraction = v.parse()?;
            }
            if let Some(v) = args.get(9) {
                d.label_prior = v.parse()?;
            }
            Privacy::Dp(d)
        }
    };
    let cfg = IntentTrainConfig { features, privacy };
    // VALIDATE=1: tune on a held-out fifth of train (every 5th row), never on test.
    let r = if std::env::var("VALIDATE").is_ok() {
        let all = read_intent_csv(&root.join("train.csv"))?;
        let (mut tr, mut va) = (Vec::new(), Vec::new());
        for (i, row) in all.into_iter().enumerate() {
            if i % 5 == 4 {
                va.push(row)
            } else {
                tr.push(row)
            }
        }
        train_intent(&tr, &va, &cfg, None)?.1
    } else {
        train_intent_csv(&root.join("train.csv"), &root.join("test.csv"), &cfg, None)?
    };
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}
