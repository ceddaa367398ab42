//! Need predictor against the planted rule of the synthetic archive:
//! `cargo run --release -p amble-learn --example synth_needs -- [subjects] [seed]`.
use amble_learn::needs::{NeedFeatureConfig, NeedModel};
use amble_learn::softmax::SgdConfig;
use amble_learn::synth::{SynthConfig, generate};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let subjects: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(7);
    let people = generate(&SynthConfig {
        subjects,
        seed,
        ..SynthConfig::default()
    });
    let (train, test) = people.split_at(subjects * 4 / 5);
    let mut labels: Vec<String> = people.iter().map(|p| p.true_next_need.clone()).collect();
    labels.sort();
    labels.dedup();
    let mut m = NeedModel::new(
        labels,
        NeedFeatureConfig {
            dim_log2: 12,
            last_k: 4,
        },
    )?;
    let ex = train
        .iter()
        .enumerate()
        .map(|(i, p)| m.example(&p.context(), &p.true_next_need, i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    m.train(
        &ex,
        &SgdConfig {
            epochs: 10,
            ..SgdConfig::default()
        },
        None,
    )?;
    let mut right = 0;
    for p in test {
        if m.predict(&p.context(), 1, 0)?[0].need == p.true_next_need {
            right += 1;
        }
    }
    println!(
        "synthetic archive: {} train / {} test subjects, {} needs; accuracy vs planted rule {:.4}",
        train.len(),
        test.len(),
        m.labels().len(),
        right as f64 / test.len() as f64
    );
    let p = &test[0];
    println!(
        "example: stage {:?}, events {:?}",
        p.stage,
        p.context().events
    );
    for n in m.predict(&p.context(), 3, 3)? {
        println!(
            "  {} p={:.3} drivers {:?}",
            n.need, n.probability, n.drivers
        );
    }
    println!("  truth: {}", p.true_next_need);
    Ok(())
}
