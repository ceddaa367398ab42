//! Criterion bench of the coordinator's streaming aggregation: 100 updates of 1M and of 10M
//! `f32` parameters, each checked ([`UpdateCheck`]) and added ([`WeightedSum`]) chunk by chunk,
//! as the coordinator does when updates arrive. Throughput is in bytes of update data, so it
//! compares directly with `flwr_fedavg.py` (Flower's FedAvg `aggregate`); see `README.md`.
//!
//! Only four distinct update buffers are generated and reused, so the bench holds O(model)
//! memory like the coordinator (100 × 10M f32 would be 4 GB).
//! Run: `cargo bench -p amble-learn --bench aggregate`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use amble_learn::federation::{UpdateCheck, WeightedSum};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const UPDATES: usize = 100;
const DISTINCT: usize = 4;
/// 64 KiB of values per chunk, a typical gRPC message slice.
const CHUNK: usize = 16 * 1024;

/// Deterministic pseudo-random updates in [-0.01, 0.01) (xorshift; no dependency needed).
fn updates(len: usize) -> Vec<Vec<f32>> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..DISTINCT)
        .map(|_| {
            (0..len)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
                })
                .collect()
        })
        .collect()
}

/// One round: every update checked and summed chunk by chunk, then the mean taken.
fn round(bufs: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut sum = WeightedSum::new(len);
    for u in 0..UPDATES {
        let values = &bufs[u % bufs.len()];
        let weight = (100 + u) as f64;
        let mut check = UpdateCheck::new(len, 1e6);
        for (i, chunk) in values.chunks(CHUNK).enumerate() {
            check.feed(chunk).expect("finite update");
            sum.add_chunk(i * CHUNK, chunk, weight).expect("in range");
        }
        check.finish().expect("within the clip bound");
        sum.commit(weight);
    }
    sum.mean().expect("100 updates")
}

fn streaming(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate_stream_check_and_sum");
    g.sample_size(10);
    for (name, len) in [("100x1M", 1_000_000usize), ("100x10M", 10_000_000)] {
        let bufs = updates(len);
        g.throughput(Throughput::Bytes((UPDATES * len * 4) as u64));
        g.bench_function(name, |b| b.iter(|| round(&bufs, len)));
    }
    g.finish();
}

criterion_group!(benches, streaming);
criterion_main!(benches);
