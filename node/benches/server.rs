//! Appends/s and reads/s over mutual-TLS gRPC from 1, 8 and 64 concurrent clients, with p99
//! latency, next to the same operations on an in-process `Node` — the cost of the wire.
//!
//! The last two rows are reads from 8 clients alone and then beside 16 tasks looping on one
//! person's self-service page, each request a new TLS connection. The session's rate limit
//! answers almost all of them 429 without touching the node (the line after the rows says how
//! many were served); what is left of the slowdown is the handshakes' CPU on the same cores
//! (see `README.md`).
//!
//! Run: `cargo bench -p amble-node --bench server` (prints a table; no criterion, since the
//! interesting numbers are throughput under concurrency and tail latency).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../tests/server_support/mod.rs"]
mod server_support;

use amble_crypto::ExternalRef;
use amble_node::{Actor, NewRecord, Node, TimeRange};
use amble_policy::{Collection, Role};
use amble_proto::v1 as pb;
use server_support::Fixture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

async fn grpc(fx: &Fixture, clients: usize, per_client: usize, read: bool, what: &str) {
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
                    let stream = cl
                        .read(pb::ReadRequest {
                            r#ref: format!("phone:+1555{:07}", (c + i) % SUBJECTS),
                            purpose: "support".into(),
                            ..Default::default()
                        })
                        .await
                        .expect("read")
                        .into_inner();
                    amble_proto::chunks::join(stream, 1 << 20)
                        .await
                        .expect("read's chunks");
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
    row(what, clients, clients * per_client, started.elapsed(), lat);
}

/// Reads from 8 clients alone, then beside 16 tasks looping on one person's page.
async fn reads_beside_page_views(fx: Arc<Fixture>, total: usize) {
    const CLIENTS: usize = 8;
    grpc(
        &fx,
        CLIENTS,
        per_client(CLIENTS, total),
        true,
        "read, no page views",
    )
    .await;
    let (_, links) = fx.portal.as_ref().expect("the fixture serves a portal");
    let token = links.issue(&record(0).r#ref).expect("a link");
    let opened =
        server_support::portal_request(&fx, http::Method::GET, &format!("/?t={token}"), None, None)
            .await;
    let cookie = opened
        .headers
        .get(http::header::SET_COOKIE)
        .and_then(|c| c.to_str().ok())
        .and_then(|c| c.split(';').next())
        .and_then(|c| c.split_once('='))
        .map(|(_, sid)| sid.to_owned())
        .expect("a session cookie");
    let stop = Arc::new(AtomicBool::new(false));
    let views = Arc::new(AtomicUsize::new(0));
    let slowed = Arc::new(AtomicUsize::new(0));
    let viewers: Vec<_> = (0..16)
        .map(|_| {
            let (fx, stop, views, slowed, cookie) = (
                Arc::clone(&fx),
                Arc::clone(&stop),
                Arc::clone(&views),
                Arc::clone(&slowed),
                cookie.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = server_support::portal_request(
                        &fx,
                        http::Method::GET,
                        "/",
                        Some(&cookie),
                        None,
                    )
                    .await;
                    match r.status {
                        http::StatusCode::OK => views.fetch_add(1, Ordering::Relaxed),
                        http::StatusCode::TOO_MANY_REQUESTS => {
                            slowed.fetch_add(1, Ordering::Relaxed)
                        }
                        other => panic!("a page view answered {other}: {}", r.body),
                    };
                }
            })
        })
        .collect();
    let started = Instant::now();
    grpc(
        &fx,
        CLIENTS,
        per_client(CLIENTS, total),
        true,
        "read, 16 page viewers",
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for v in viewers {
        v.await.expect("viewer task");
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "  (meanwhile page views served: {:.0}/s, answered 429: {:.0}/s)",
        views.load(Ordering::Relaxed) as f64 / secs,
        slowed.load(Ordering::Relaxed) as f64 / secs
    );
}

fn in_process(node: &Arc<Node>, clients: usize, per_client: usize, read: bool) {
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let node = Arc::clone(node);
            std::thread::spawn(move || {
                let actor = Actor::local("bench", Role::App);
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
        let fx = Arc::new(Fixture::start_with_portal().await);
        for &c in &LEVELS {
            grpc(&fx, c, per_client(c, total), false, "append grpc+mTLS").await;
        }
        for &c in &LEVELS {
            grpc(&fx, c, per_client(c, total), true, "read  grpc+mTLS").await;
        }
        reads_beside_page_views(Arc::clone(&fx), total).await;
        if let Ok(fx) = Arc::try_unwrap(fx) {
            fx.stop().await;
        }
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
