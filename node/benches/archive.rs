//! Archive append and read of ~1 KiB records next to raw sled inserts/reads of the same
//! bytes (same batch size, same flush), so the cost of pseudonyms, key unwrap and sealing
//! is visible. Target: the encrypted archive at ≥ 0.7× raw sled throughput.
//! Run briefly (see `README.md`):
//! `cargo bench -p amble-node --bench archive -- --warm-up-time 1 --measurement-time 3`.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use amble_crypto::ExternalRef;
use amble_node::{Actor, Collection, NewRecord, Node, ReadOutcome, TimeRange};
use amble_policy::Role;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const BATCH: usize = 256;
const SUBJECTS: usize = 64;

fn record(i: usize) -> NewRecord {
    let serde_json::Value::Object(data) = serde_json::json!({ "text": "x".repeat(1000), "i": i })
    else {
        unreachable!()
    };
    NewRecord {
        collection: Collection::Interactions,
        time: time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(i as i64),
        data,
    }
}

fn bench_archive(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = Node::init(&dir.path().join("a"), None).expect("init");
    let op = Actor::local("bench", Role::Admin);
    let refs: Vec<ExternalRef> = (0..SUBJECTS)
        .map(|i| ExternalRef::parse(&format!("phone:+1{i}")).expect("ref"))
        .collect();
    let items: Vec<(ExternalRef, NewRecord)> = (0..BATCH)
        .map(|i| (refs[i % SUBJECTS].clone(), record(i)))
        .collect();
    let bytes: Vec<Vec<u8>> = items
        .iter()
        .map(|(_, r)| serde_json::to_vec(&r.data).expect("json"))
        .collect();
    let raw = sled::Config::new()
        .path(dir.path().join("raw"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("sled");
    let raw_tree = raw.open_tree("records").expect("tree");

    let mut g = c.benchmark_group("append_1k_batch256");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("amble_archive", |b| {
        b.iter(|| {
            archive
                .append_batch(&op, black_box(&items))
                .expect("append")
        })
    });
    // Raw sled with the archive's key layout (subject ‖ collection ‖ time ‖ id, 64 subjects),
    // so the comparison isolates pseudonyms, sealing and audit entries from key locality.
    let mut next = 0u64;
    g.bench_function("raw_sled", |b| {
        b.iter(|| {
            for (i, v) in bytes.iter().enumerate() {
                next += 1;
                let mut key = [0u8; 49];
                key[..32].copy_from_slice(&[(i % SUBJECTS) as u8; 32]);
                key[32] = 5;
                key[33..41].copy_from_slice(&(i as u64).to_be_bytes());
                key[41..].copy_from_slice(&next.to_be_bytes());
                raw_tree.insert(key, v.as_slice()).expect("insert");
            }
            raw.flush().expect("flush")
        })
    });
    g.finish();

    // Reads: one subject's 100 records, decrypted and parsed, vs raw scan + parse.
    let reader = ExternalRef::parse("phone:+19999").expect("ref");
    let hundred: Vec<_> = (0..100).map(|i| (reader.clone(), record(i))).collect();
    archive.append_batch(&op, &hundred).expect("append");
    let raw_read = raw.open_tree("read").expect("tree");
    for (i, v) in bytes.iter().take(100).enumerate() {
        raw_read
            .insert((i as u64).to_be_bytes(), v.as_slice())
            .expect("insert");
    }
    let mut g = c.benchmark_group("read_100x1k");
    g.throughput(Throughput::Elements(100));
    // The only public read path: policy decision, a durable audit entry, decryption of the
    // granted collection, projection (here `support`: interaction text is masked).
    let agent = Actor::local("bench-agent", Role::Agent);
    g.bench_function("amble_node_read_support", |b| {
        b.iter(|| {
            match archive
                .read(&agent, black_box(&reader), "support", TimeRange::ALL)
                .expect("read")
            {
                ReadOutcome::Allowed(p) => p.records().len(),
                ReadOutcome::Denied(r) => panic!("denied: {r}"),
            }
        })
    });
    g.bench_function("raw_sled_scan_parse", |b| {
        b.iter(|| {
            raw_read
                .iter()
                .values()
                .map(|v| {
                    let v = v.expect("value");
                    serde_json::from_slice::<serde_json::Value>(&v).expect("json")
                })
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_archive);
criterion_main!(benches);
