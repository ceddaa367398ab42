//! Audit log benchmarks: durable append throughput (unbatched and batched) and inclusion
//! proof generation / verification at 10^6 entries.
//!
//! Run briefly on a shared machine:
//! `cargo bench -p amble-audit -- --warm-up-time 1 --measurement-time 3`
//! `AMBLE_AUDIT_BENCH_N` overrides the size of the large log (default 1 000 000).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
// `missing_docs`: criterion_group! generates a public `benches()` that no attribute reaches.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_docs
)]

use amble_audit::{Action, AuditLog, Decision, EntryDraft, verify_inclusion};
use amble_crypto::SubjectId;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::cell::Cell;
use std::time::Instant;

fn draft(i: u64) -> EntryDraft {
    let mut d = EntryDraft::new(
        "app-frontdesk",
        "app",
        Action::Read,
        format!("req-{i:016x}"),
    )
    .subject(SubjectId::from_bytes([(i % 251) as u8; 32]))
    .purpose("care.followup")
    .decision(if i % 17 == 0 {
        Decision::Deny
    } else {
        Decision::Allow
    });
    d.collections = vec!["visits".into()];
    d.fields = vec!["date".into(), "reason".into(), "clinician".into()];
    d.policy_version = Some(3);
    d
}

fn open_temp() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::open(dir.path().join("db")).expect("sled");
    let log = AuditLog::open(&db).expect("open");
    (dir, log)
}

fn durable_appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    let (_dir, log) = open_temp();
    let i = Cell::new(0u64);
    g.throughput(Throughput::Elements(1));
    g.bench_function("unbatched", |b| {
        b.iter(|| {
            i.set(i.get() + 1);
            log.append_durable(draft(i.get())).expect("append")
        })
    });
    for n in [64usize, 256] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("batch_{n}"), |b| {
            b.iter_batched(
                || {
                    let start = i.get();
                    i.set(start + n as u64);
                    (start..start + n as u64).map(draft).collect::<Vec<_>>()
                },
                |drafts| log.append_batch(drafts).expect("append"),
                BatchSize::SmallInput,
            )
        });
    }
    // Concurrent durable appenders, one entry per call: what a busy node sees, and how
    // Tessera's published figure is measured (many clients, shared flushes).
    let log = std::sync::Arc::new(log);
    for threads in [4u64, 16] {
        g.throughput(Throughput::Elements(threads));
        g.bench_function(format!("unbatched_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                let per = iters.max(1);
                let base = i.get();
                i.set(base + threads * per);
                let t = Instant::now();
                let hs: Vec<_> = (0..threads)
                    .map(|k| {
                        let log = std::sync::Arc::clone(&log);
                        std::thread::spawn(move || {
                            for j in 0..per {
                                log.append_durable(draft(base + k * per + j))
                                    .expect("append");
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().expect("thread");
                }
                t.elapsed()
            })
        });
    }
    g.finish();
}

fn proofs_at_scale(c: &mut Criterion) {
    let n: u64 = std::env::var("AMBLE_AUDIT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (_dir, log) = open_temp();
    let t = Instant::now();
    // Built through the ordinary batched append path (one transaction + one flush per
    // 10 000 entries); no special bulk loader.
    let mut next = 0u64;
    while next < n {
        let k = (n - next).min(10_000);
        log.append_batch((next..next + k).map(draft).collect())
            .expect("append");
        next += k;
    }
    eprintln!(
        "built a {n}-entry log in {:.1} s ({:.0} entries/s)",
        t.elapsed().as_secs_f64(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    let root = log.root().expect("root");
    let mut g = c.benchmark_group(format!("inclusion_proof_{n}"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("generate", |b| {
        b.iter(|| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            log.inclusion_proof(x % n, n).expect("proof")
        })
    });
    let proofs: Vec<_> = (0..256u64)
        .map(|k| log.inclusion_proof((k * 3_900_007) % n, n).expect("proof"))
        .collect();
    let mut k = 0usize;
    g.bench_function("verify", |b| {
        b.iter(|| {
            k = (k + 1) % proofs.len();
            let p = &proofs[k];
            verify_inclusion(p.leaf_index, n, &p.leaf_hash, &p.proof, &root).expect("verifies")
        })
    });
    g.bench_function("consistency_generate", |b| {
        b.iter(|| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            log.consistency_proof(1 + x % (n - 1), n).expect("proof")
        })
    });
    g.finish();
}

criterion_group!(benches, durable_appends, proofs_at_scale);
criterion_main!(benches);
