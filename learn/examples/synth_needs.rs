//! Need predictor against the planted rule of the synthetic archive, with the features that
//! drove one prediction:
//! `cargo run --release -p amble-learn --example synth_needs -- [subjects] [seed]`
//! (the same evaluation as `amble train needs --synthetic N`).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]
use amble_learn::experiment::{SynthConfig, generate};
use amble_learn::train::train_needs_synthetic;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let subjects: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let cfg = SynthConfig {
        subjects,
        seed,
        ..SynthConfig::default()
    };
    let (model, r) = train_needs_synthetic(&cfg, None)?;
    println!(
        "synthetic archive: {} train / {} test subjects, {} needs; accuracy vs planted rule {:.4} (majority baseline {:.4})",
        r.train_prefixes, r.test_prefixes, r.classes, r.accuracy, r.baseline_accuracy
    );
    let people = generate(&cfg);
    if let Some(p) = people.last() {
        println!(
            "example: stage {:?}, events {:?}",
            p.stage,
            p.context().events
        );
        for n in model.predict(&p.context(), 3, 3)? {
            println!(
                "  {} p={:.3} drivers {:?}",
                n.need, n.probability, n.drivers
            );
        }
        println!("  truth: {}", p.true_next_need);
    }
    Ok(())
}
