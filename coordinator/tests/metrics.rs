//! The coordinator's health, readiness and metrics endpoint, with the gRPC service running on
//! 127.0.0.1 over mutual TLS: it answers, and its counters move with joins, accepted and
//! refused updates.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_coordinator::{CoordinatorConfig, CoordinatorServer};
use amble_crypto::pki::{Ca, IssueRequest};
use amble_net::ClientIdentity;
use amble_proto::v1 as pb;
use pb::federation_client::FederationClient;
use std::net::SocketAddr;
use std::path::Path;
use tonic::Code;
use tonic::transport::Channel;

/// A one-shot HTTP/1.0 GET (the connection closes after the answer): status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_owned())
}

/// The value of one sample line (`name{labels} value`), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn config(dir: &Path, ca: &Ca) -> CoordinatorConfig {
    std::fs::write(dir.join("labels.json"), r#"["a","b","c"]"#).unwrap();
    let certs = dir.join("pki").join("certs");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\ncrl = {:?}\n\n[federation]\nrounds = 3\nnodes_per_round = 2\nmin_nodes = 1\nround_deadline_secs = 3600\nclip_bound = 10.0\n\n[model]\nkind = \"intent\"\nlabels_file = \"labels.json\"\ndim_log2 = 4\n\n[training]\nmode = \"plain\"\nepochs = 1\nlearning_rate = 0.1\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
        certs.join("coordinator.pem"),
        certs.join("coordinator.key"),
        ca.cert_path(),
        ca.crl_path(),
    );
    let path = dir.join("coordinator.toml");
    std::fs::write(&path, text).unwrap();
    CoordinatorConfig::load(&path).unwrap()
}

async fn client(dir: &Path, ca: &Ca, name: &str, url: &str) -> FederationClient<Channel> {
    let certs = dir.join("pki").join("certs");
    let id = ClientIdentity::load(
        &certs.join(format!("{name}.pem")),
        &certs.join(format!("{name}.key")),
        &ca.cert_path(),
    )
    .unwrap();
    FederationClient::new(id.connect(url).await.unwrap())
}

async fn submit(
    c: &mut FederationClient<Channel>,
    round: u64,
    values: &[f32],
) -> Result<pb::UpdateReceipt, tonic::Status> {
    let bytes = amble_learn::federation::f32_to_le(values);
    let header = pb::UpdateHeader {
        round,
        model: "intent".into(),
        base_version: round - 1,
        values: values.len() as u64,
        weight: 10.0,
        sha256: amble_crypto::sha256(&bytes).to_vec(),
        record: Some(pb::TrainingRecord::default()),
    };
    let parts = vec![
        pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Header(header)),
        },
        pb::UpdateChunk {
            part: Some(pb::update_chunk::Part::Data(bytes)),
        },
    ];
    c.submit_update(tokio_stream::iter(parts))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_and_count_joins_accepted_and_refused_updates_by_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = Ca::init(&tmp.path().join("pki"), "test.fed").unwrap();
    let mut req = IssueRequest::new("coordinator", "coordinator");
    req.ips.push("127.0.0.1".parse().unwrap());
    ca.issue(&req).unwrap();
    ca.issue(&IssueRequest::new("node-1", "node")).unwrap();
    ca.issue(&IssueRequest::new("node-2", "node")).unwrap();
    ca.issue(&IssueRequest::new("ops", "admin")).unwrap();
    let server = CoordinatorServer::bind(config(tmp.path(), &ca))
        .await
        .unwrap();
    let url = format!("https://{}", server.local_addr().unwrap());
    let metrics = server.metrics_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    assert_eq!(http_get(metrics, "/healthz").await.0, 200);
    assert_eq!(http_get(metrics, "/readyz").await.0, 200);
    assert_eq!(http_get(metrics, "/nowhere").await.0, 404);
    let (code, before) = http_get(metrics, "/metrics").await;
    assert_eq!(code, 200, "{before}");
    assert_eq!(sample(&before, "amble_coordinator_members"), Some(0.0));
    assert_eq!(sample(&before, "amble_coordinator_round"), Some(1.0));
    assert_eq!(
        sample(&before, "amble_coordinator_rounds_planned"),
        Some(3.0)
    );

    // Two members, so that the round stays open after node-1's update.
    let mut node = client(tmp.path(), &ca, "node-1", &url).await;
    for name in ["node-1", "node-2"] {
        let signer = amble_crypto::SigningKey::generate().unwrap();
        let log_key = amble_audit::NoteSigner::from_key(name, &signer)
            .unwrap()
            .verifier()
            .to_string();
        client(tmp.path(), &ca, name, &url)
            .await
            .join(pb::JoinRequest { log_key })
            .await
            .unwrap();
    }
    let parameters = {
        let mut s = node
            .fetch_model(pb::FetchModelRequest {
                model: "intent".into(),
                version: 0,
                latest: true,
            })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(c) = s.message().await.unwrap() {
            if let Some(pb::model_chunk::Part::Header(h)) = c.part {
                n = h.parameters as usize;
            }
        }
        n
    };
    assert!(parameters > 0);

    let refused = |r: Result<pb::UpdateReceipt, tonic::Status>| {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    };
    refused(submit(&mut node, 1, &vec![0.0; parameters + 1]).await);
    let mut nan = vec![0.0; parameters];
    nan[1] = f32::NAN;
    refused(submit(&mut node, 1, &nan).await);
    refused(submit(&mut node, 1, &vec![100.0; parameters]).await);
    submit(&mut node, 1, &vec![0.01; parameters]).await.unwrap();
    refused(submit(&mut node, 1, &vec![0.02; parameters]).await);
    refused(submit(&mut node, 2, &vec![0.02; parameters]).await);
    let mut admin = client(tmp.path(), &ca, "ops", &url).await;
    admin.status(pb::StatusRequest {}).await.unwrap();

    let (_, after) = http_get(metrics, "/metrics").await;
    let refusals = |reason: &str| {
        sample(
            &after,
            &format!("amble_coordinator_updates_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refusals("shape"), Some(1.0), "{after}");
    assert_eq!(refusals("non_finite"), Some(1.0));
    assert_eq!(refusals("norm"), Some(1.0));
    assert_eq!(refusals("duplicate"), Some(1.0));
    assert_eq!(refusals("round"), Some(1.0));
    assert_eq!(refusals("replay"), Some(0.0));
    assert_eq!(refusals("other"), Some(0.0));
    assert_eq!(
        sample(&after, "amble_coordinator_updates_accepted_total"),
        Some(1.0)
    );
    assert_eq!(sample(&after, "amble_coordinator_members"), Some(2.0));
    assert_eq!(
        sample(&after, "amble_coordinator_rounds_published_total"),
        Some(0.0)
    );
    assert!(
        sample(&after, "amble_coordinator_audit_log_entries").unwrap()
            > sample(&before, "amble_coordinator_audit_log_entries").unwrap()
    );
    let requests = |method: &str, code: &str| {
        sample(
            &after,
            &format!(
                "amble_coordinator_grpc_requests_total{{method=\"/amble.v1.Federation/{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(requests("Join", "OK"), Some(2.0));
    assert_eq!(requests("FetchModel", "OK"), Some(1.0));
    assert_eq!(requests("SubmitUpdate", "OK"), Some(1.0));
    assert_eq!(requests("SubmitUpdate", "FailedPrecondition"), Some(5.0));
    assert_eq!(requests("Status", "OK"), Some(1.0));
    assert_eq!(
        sample(
            &after,
            "amble_coordinator_grpc_request_duration_seconds_count{method=\"/amble.v1.Federation/SubmitUpdate\"}"
        ),
        Some(6.0)
    );
    // Counts only: no node or caller id.
    for id in ["node-1", "node-2", "ops", "test.fed"] {
        assert!(!after.contains(id), "{id} in metrics:\n{after}");
    }

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
