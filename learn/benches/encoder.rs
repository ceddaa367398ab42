//! Criterion benches for the sentence encoder: tokenizing and embedding Banking77 texts with the
//! built-in all-MiniLM-L6-v2, on one thread and on two. `st_encode.py` runs the same texts through
//! the reference implementation (sentence-transformers on PyTorch) for comparison.
//! Run briefly: `cargo bench -p amble-learn --bench encoder -- --warm-up-time 1 --measurement-time 5`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use std::path::PathBuf;

use amble_learn::model::SentenceEncoder;
use amble_learn::train::read_intent_csv;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn texts(n: usize) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/banking77/train.csv");
    read_intent_csv(&path)
        .expect("banking77 train.csv")
        .into_iter()
        .take(n)
        .map(|r| r.text)
        .collect()
}

fn encoder(c: &mut Criterion) {
    let enc = SentenceEncoder::builtin().expect("built-in encoder");
    let owned = texts(512);
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    let mut g = c.benchmark_group("encoder");
    g.throughput(Throughput::Elements(texts.len() as u64));
    g.bench_function("tokenize_512_texts", |b| {
        b.iter(|| texts.iter().map(|t| enc.tokenize(t).len()).sum::<usize>())
    });
    g.sample_size(10);
    for threads in [1usize, 2] {
        g.bench_function(format!("embed_512_texts_{threads}_threads"), |b| {
            b.iter(|| enc.embed(&texts, threads, None).expect("embed").len())
        });
    }
    g.bench_function("embed_one_text", |b| {
        b.iter(|| enc.embed_one(texts[0]).expect("embed").len())
    });
    g.finish();
}

criterion_group!(benches, encoder);
criterion_main!(benches);
