//! Seal/open throughput of amble's record sealing next to raw ring AES-256-GCM on the same
//! buffers, so the cost of the envelope (header, random nonce, AAD encoding) is visible.
//! Run: `cargo bench -p amble-crypto --bench seal`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use amble_crypto::{DataKey, RecordAad, SubjectId, open, seal};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::hint::black_box;

fn bench_seal(c: &mut Criterion) {
    let dek = DataKey::generate(1).expect("rng");
    let subject = SubjectId::from_bytes([9; 32]);
    let aad = RecordAad {
        subject: &subject,
        collection: "interactions",
        record_id: &[0, 0, 0, 0, 0, 0, 0, 42],
    };
    let raw_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).expect("key"));
    let mut g = c.benchmark_group("seal");
    for size in [256usize, 1024, 16 * 1024] {
        let data = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("amble_seal", size), &data, |b, d| {
            b.iter(|| seal(&dek, &aad, black_box(d)).expect("seal"))
        });
        let sealed = seal(&dek, &aad, &data).expect("seal");
        g.bench_with_input(BenchmarkId::new("amble_open", size), &sealed, |b, s| {
            b.iter(|| open(&dek, &aad, black_box(s)).expect("open"))
        });
        g.bench_with_input(BenchmarkId::new("ring_seal", size), &data, |b, d| {
            b.iter(|| {
                let mut buf = d.clone();
                raw_key
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key([1; 12]),
                        Aad::from(b"aad"),
                        &mut buf,
                    )
                    .expect("seal");
                buf
            })
        });
        let mut raw_sealed = data.clone();
        raw_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([1; 12]),
                Aad::from(b"aad"),
                &mut raw_sealed,
            )
            .expect("seal");
        g.bench_with_input(BenchmarkId::new("ring_open", size), &raw_sealed, |b, s| {
            b.iter(|| {
                let mut buf = s.clone();
                raw_key
                    .open_in_place(
                        Nonce::assume_unique_for_key([1; 12]),
                        Aad::from(b"aad"),
                        &mut buf,
                    )
                    .expect("open")
                    .len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_seal);
criterion_main!(benches);
