//! Appends/s and reads/s over mutual-TLS gRPC from 1, 8 and 64 concurrent clients, with p99
//! latency, next to the same operations on an in-process `Node` — the cost of the wire.
//!
//! Run: `cargo bench -p amble-node --bench server` (prints a table; no criterion, since the
//! interesting numbers are throughput under concurrency and tail latency).

#[path = "../tests/server_support/mod.rs"]
mod server_support;

use amble_consent::Method;
use amble_crypto::ExternalRef;
use amble_node::{Actor, NewRecord, Node, TimeRange};
use amble_policy::{Collection, Role};
use amble_proto::v1 as pb;
use server_support::Fixture;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEVELS: [usize; 3] = [1, 8, 64];
const SUBJECTS: usize = 64;

fn row(what: &str, clients: usize, ops: usize, elapsed: Duration, mut lat: Vec<Duration>) {
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{what:<22} {clients:>7} {ops:>7} {:>10.0} {:>9.2} {:>9.2}",
        ops as f64 / elapsed.as_secs_f64(),
        p(0.5).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3
    );
}

fn record(i: usize) -> pb::NewRecord {
    pb::NewRecord {
        r#ref: format!("phone:+1555{:07}", i % SUBJECTS),
        collection: "interactions".into(),
        time: "2026-05-01T10:00:00Z".into(),
        data_json: format!(r#"{{"channel":"chat","text":"message {i}","intent":"card_lost"}}"#),
    }
}

async fn grpc(fx: &Fixture, clients: usize, per_client: usize, read: bool) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        // One connection per client, as separate apps would have.
        let ch = fx.channel("crm");
        tasks.push(tokio::spawn(async move {
            let mut cl = pb::archive_client::ArchiveClient::new(ch);
            let mut lat = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                if read {
                    cl.read(pb::ReadRequest {
                        r#ref: format!("phone:+1555{:07}", (c + i) % SUBJECTS),
                        purpose: "support".into(),
                        ..Default::default()
                    })
                    .await
                    .expect("read");
                } else {
                    cl.append(pb::AppendRequest {
                        records: vec![record(c * per_client + i)],
                    })
                    .await
                    .expect("append");
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    let what = if read {
        "read  grpc+mTLS"
    } else {
        "append grpc+mTLS"
    };
    row(what, clients, clients * per_client, started.elapsed(), lat);
}

fn in_process(node: &Arc<Node>, clients: usize, per_client: usize, read: bool) {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let node = Arc::clone(node);
            std::thread::spawn(move || {
                let actor = Actor::new("bench", Role::App, Method::Api);
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    let r = ExternalRef::parse(&format!("phone:+1555{:07}", (c + i) % SUBJECTS))
                        .expect("ref");
                    if read {
                        node.read(&actor, &r, "support", TimeRange::default())
                            .expect("read");
                    } else {
                        let mut data = serde_json::Map::new();
                        data.insert("text".into(), format!("message {i}").into());
                        let rec = NewRecord {
                            collection: Collection::Interactions,
                            time: time::OffsetDateTime::now_utc(),
                            data,
                        };
                        node.append(&actor, &r, &rec).expect("append");
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.join().expect("thread"));
    }
    let what = if read {
        "read  in-process"
    } else {
        "append in-process"
    };
    row(what, clients, clients * per_client, started.elapsed(), lat);
}

fn per_client(clients: usize, total: usize) -> usize {
    (total / clients).max(4)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let total = if quick { 64 } else { 1024 };
    println!(
        "{:<22} {:>7} {:>7} {:>10} {:>9} {:>9}",
        "operation", "clients", "ops", "ops/s", "p50 ms", "p99 ms"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let fx = Fixture::start().await;
        for &c in &LEVELS {
            grpc(&fx, c, per_client(c, total), false).await;
        }
        for &c in &LEVELS {
            grpc(&fx, c, per_client(c, total), true).await;
        }
        fx.stop().await;
    });

    let tmp = tempfile::tempdir().expect("tempdir");
    let node = Arc::new(Node::init(&tmp.path().join("data"), None).expect("init"));
    for &c in &LEVELS {
        in_process(&node, c, per_client(c, total), false);
    }
    for &c in &LEVELS {
        in_process(&node, c, per_client(c, total), true);
    }
}
