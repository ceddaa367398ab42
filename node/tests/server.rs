//! The node service over mutual TLS: who gets in, what each role may call, a subject's whole
//! journey over the wire, and bad input answered with clear codes.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod server_support;

use amble_crypto::pki::{Ca, IssueRequest};
use amble_node::server::client::ClientIdentity;
use amble_proto::chunks;
use amble_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::archive_client::ArchiveClient;
use pb::audit_client::AuditClient;
use pb::subject_client::SubjectClient;
use server_support::{Fixture, MAX_MESSAGE, pki_dir};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const REF: &str = "phone:+15550001";

async fn health(ch: tonic::transport::Channel) -> Result<pb::HealthResponse, tonic::Status> {
    AdminClient::new(ch)
        .health(pb::HealthRequest {})
        .await
        .map(|r| r.into_inner())
}

fn record(r: &str, collection: &str, data: &str) -> pb::NewRecord {
    pb::NewRecord {
        r#ref: r.into(),
        collection: collection.into(),
        time: "2026-05-01T10:00:00Z".into(),
        data_json: data.into(),
    }
}

/// Every audit entry, fetched as the auditor.
async fn audit_entries(fx: &Fixture) -> Vec<serde_json::Value> {
    let mut audit = AuditClient::new(fx.channel("auditor-1"));
    let cp = audit
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    let mut start = 0;
    while start < cp.size {
        let end = (start + 1000).min(cp.size);
        let page = audit
            .entries(pb::EntriesRequest { start, end })
            .await
            .unwrap()
            .into_inner();
        out.extend(
            page.entries
                .iter()
                .map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap()),
        );
        start = end;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_certificate_gets_in_and_one_without_a_client_certificate_does_not() {
    let fx = Fixture::start().await;
    assert_eq!(health(fx.channel("crm")).await.unwrap().status, "serving");

    let ca_pem = std::fs::read_to_string(fx.ca.cert_path()).unwrap();
    let anonymous = Endpoint::from_shared(fx.url())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .unwrap()
        .connect_lazy();
    assert!(health(anonymous).await.is_err());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_on_the_first_rpc() {
    let fx = Fixture::start().await;
    let other_dir = fx.tmp.path().join("other-pki");
    let other = Ca::init_organisation(&other_dir, "test-fed", "org-x").unwrap();
    other.issue(&IssueRequest::new("crm", "app")).unwrap();
    let certs = other_dir.join("certs");
    let intruder = ClientIdentity::load(
        &certs.join("crm.pem"),
        &certs.join("crm.key"),
        &fx.ca.cert_path(),
    )
    .unwrap();
    let ch = intruder.endpoint(&fx.url()).unwrap().connect_lazy();
    assert!(health(ch).await.is_err());
    assert!(health(fx.channel("crm")).await.is_ok());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_cannot_lock_other_clients_out() {
    let fx = Fixture::start_with_limits(amble_node::server::Limits {
        max_connections: 3,
        idle_timeout_secs: 1,
        ..Fixture::limits()
    })
    .await;
    // Three clients finish the handshake and then say nothing.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(fx.identity("crm").connect(&fx.url()).await.unwrap());
    }
    // While they hold every slot, a fourth client is turned away...
    assert!(health(fx.channel("ops")).await.is_err());
    // ...until the idle limit closes them: then it gets in.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(health(fx.channel("ops")).await.is_ok());
    drop(idle);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_on_the_first_rpc() {
    let fx = Fixture::start().await;
    let mut req = IssueRequest::new("old-app", "app");
    req.not_before = Some(time::OffsetDateTime::now_utc() - time::Duration::days(10));
    req.days = 1;
    fx.ca.issue(&req).unwrap();
    assert!(health(fx.channel("old-app")).await.is_err());
    assert!(health(fx.channel("crm")).await.is_ok());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_connections_already_open() {
    let fx = Fixture::start().await;
    fx.ca.issue(&IssueRequest::new("soon-gone", "app")).unwrap();
    fx.ca.issue(&IssueRequest::new("stays", "app")).unwrap();
    // Both connect and keep their connection open across the reload.
    let gone = fx.identity("soon-gone").connect(&fx.url()).await.unwrap();
    let stays = fx.identity("stays").connect(&fx.url()).await.unwrap();
    assert!(health(gone.clone()).await.is_ok());
    assert!(health(stays.clone()).await.is_ok());
    fx.ca.revoke("soon-gone").unwrap();
    fx.reloader.reload().unwrap();
    // The revoked one's open connection is closed (and a new handshake is refused).
    let mut refused = false;
    for _ in 0..50 {
        if health(gone.clone()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(refused, "a revoked certificate kept its open connection");
    assert!(health(stays).await.is_ok());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_after_the_crl_is_reloaded() {
    let fx = Fixture::start().await;
    fx.ca.issue(&IssueRequest::new("gone", "app")).unwrap();
    assert!(health(fx.channel("gone")).await.is_ok());
    fx.ca.revoke("gone").unwrap();
    fx.reloader.reload().unwrap();
    assert!(health(fx.channel("gone")).await.is_err());
    assert!(health(fx.channel("crm")).await.is_ok());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_held_to_their_methods_and_every_refusal_is_logged_with_the_caller() {
    let fx = Fixture::start().await;
    let mut app = ArchiveClient::new(fx.channel("crm"));
    app.append(pb::AppendRequest {
        records: vec![record(REF, "profile", r#"{"display_name":"Ann"}"#)],
    })
    .await
    .unwrap();

    let err = SubjectClient::new(fx.channel("crm"))
        .erase(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("subject-portal"),
        "{}",
        err.message()
    );
    let err = AuditClient::new(fx.channel("crm"))
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = ArchiveClient::new(fx.channel("auditor-1"))
        .read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: "support".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = AdminClient::new(fx.channel("crm"))
        .rotate_key(pb::RotateKeyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let denied: Vec<(String, String, String)> = audit_entries(&fx)
        .await
        .into_iter()
        .filter(|e| e["action"] == "denied_call")
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_owned(),
                e["role"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(denied.len(), 4, "{denied:?}");
    assert!(
        denied
            .iter()
            .any(|(a, r, why)| a == "crm" && r == "app" && why.contains("Subject/Erase"))
    );
    assert!(
        denied
            .iter()
            .any(|(a, _, why)| a == "crm" && why.contains("Audit/Checkpoint"))
    );
    assert!(
        denied
            .iter()
            .any(|(a, r, why)| a == "auditor-1" && r == "auditor" && why.contains("Archive/Read"))
    );
    assert!(
        denied
            .iter()
            .any(|(a, _, why)| a == "crm" && why.contains("Admin/RotateKey"))
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_journey_over_the_wire_from_ingest_to_erasure() {
    let fx = Fixture::start().await;
    let mut app = ArchiveClient::new(fx.channel("crm"));
    let mut app_subject = SubjectClient::new(fx.channel("crm"));
    let mut portal = SubjectClient::new(fx.channel("portal"));

    let appended = app
        .append(pb::AppendRequest {
            records: vec![
                record(
                    REF,
                    "profile",
                    r#"{"display_name":"Ann","birth_year":1990,"city":"Lyon","language":"fr"}"#,
                ),
                record(
                    REF,
                    "goals",
                    r#"{"goal":"buy a flat","horizon":"5y","target_amount":200000}"#,
                ),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(appended.appended.len(), 2);

    // Personalisation rests on consent: none yet.
    let read = |app: &mut ArchiveClient<_>| {
        let mut app = app.clone();
        async move {
            app.read(pb::ReadRequest {
                r#ref: REF.into(),
                purpose: "personalisation".into(),
                ..Default::default()
            })
            .await
        }
    };
    assert_eq!(
        read(&mut app).await.unwrap_err().code(),
        Code::PermissionDenied
    );

    app_subject
        .set_consent(pb::SetConsentRequest {
            r#ref: REF.into(),
            purpose: "personalisation".into(),
            give: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let projection = read(&mut app).await.unwrap().into_inner();
    let projection: serde_json::Value =
        serde_json::from_str(&chunks::join(projection, 1 << 20).await.unwrap()).unwrap();
    let text = projection.to_string();
    assert!(text.contains("buy a flat"), "{text}");
    assert!(
        !text.contains("Ann"),
        "display_name is not granted to personalisation: {text}"
    );

    portal
        .set_consent(pb::SetConsentRequest {
            r#ref: REF.into(),
            purpose: "personalisation".into(),
            give: false,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = read(&mut app).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("consent_withdrawn"),
        "{}",
        err.message()
    );

    let export = portal
        .export(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner();
    let export: serde_json::Value =
        serde_json::from_str(&chunks::join(export, 1 << 20).await.unwrap()).unwrap();
    let doc = &export["document"];
    assert_eq!(doc["archive"]["record_count"], 2, "{doc}");
    assert!(doc["consent"].to_string().contains("personalisation"));
    let log = doc["access_log"].as_array().unwrap();
    let reads: Vec<&str> = log
        .iter()
        .filter(|e| e["action"] == "read")
        .map(|e| e["decision"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(reads, ["deny", "allow", "deny"], "{log:?}");
    assert!(export["signature"]["value"].is_string());

    let access = portal
        .access_log(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner();
    assert!(access.entries_json.iter().any(|e| e.contains("\"crm\"")));

    let erased = portal
        .erase(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.records_deleted, 2);
    let err = portal
        .export(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_bigger_than_one_message_is_still_read_and_exported_whole() {
    // Each record fits one message; the person's archive is five times the message limit.
    let fx = Fixture::start().await;
    let mut app = ArchiveClient::new(fx.channel("crm"));
    let records = 5 * MAX_MESSAGE / (MAX_MESSAGE / 4) + 1;
    for i in 0..records {
        let text = format!("{i:04} {}", "说".repeat(MAX_MESSAGE / 4 / 3 - 8));
        let data = serde_json::json!({"channel": "chat", "text": text}).to_string();
        app.append(pb::AppendRequest {
            records: vec![record(REF, "interactions", &data)],
        })
        .await
        .unwrap();
    }

    let stream = app
        .read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: "support".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let projection = chunks::join(stream, 64 << 20).await.unwrap();
    assert!(projection.len() > 5 * MAX_MESSAGE, "{}", projection.len());
    for i in 0..records {
        assert!(
            projection.contains(&format!("{i:04} 说")),
            "record {i} missing"
        );
    }

    let stream = SubjectClient::new(fx.channel("portal"))
        .export(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner();
    let export: serde_json::Value =
        serde_json::from_str(&chunks::join(stream, 64 << 20).await.unwrap()).unwrap();
    assert_eq!(export["document"]["archive"]["record_count"], records);

    // A client that will not hold that much is told so, and the node serves on.
    let stream = SubjectClient::new(fx.channel("portal"))
        .export(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap()
        .into_inner();
    let err = chunks::join(stream, MAX_MESSAGE).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(health(fx.channel("crm")).await.is_ok());
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_codes_and_the_server_keeps_serving() {
    let fx = Fixture::start().await;
    let mut app = ArchiveClient::new(fx.channel("crm"));
    let appender = app.clone();
    let append = |recs: Vec<pb::NewRecord>| {
        let mut app = appender.clone();
        async move { app.append(pb::AppendRequest { records: recs }).await }
    };

    let big = format!(r#"{{"text":"{}"}}"#, "x".repeat(MAX_MESSAGE * 2));
    let err = append(vec![record(REF, "interactions", &big)])
        .await
        .unwrap_err();
    // tonic answers an over-limit message with OUT_OF_RANGE and says so.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");

    let cases = [
        (record("no-colon", "profile", "{}"), "records[0].ref"),
        (record(REF, "diary", "{}"), "records[0].collection"),
        (record(REF, "profile", "[1,2]"), "JSON object"),
        (record(REF, "profile", "{not json"), "not JSON"),
        (
            pb::NewRecord {
                time: "yesterday".into(),
                ..record(REF, "profile", "{}")
            },
            "RFC 3339",
        ),
    ];
    for (rec, says) in cases {
        let err = append(vec![rec]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(says),
            "{:?} lacks {says:?}",
            err.message()
        );
    }
    assert_eq!(
        append(vec![]).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    let err = app
        .read(pb::ReadRequest {
            r#ref: "phone:+19999999".into(),
            purpose: "support".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    append(vec![record(REF, "profile", r#"{"display_name":"Bo"}"#)])
        .await
        .unwrap();
    let err = app
        .read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: "astrology".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("astrology"));
    let err = app
        .read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let err = SubjectClient::new(fx.channel("crm"))
        .set_consent(pb::SetConsentRequest {
            r#ref: REF.into(),
            purpose: "astrology".into(),
            give: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = AuditClient::new(fx.channel("auditor-1"))
        .entries(pb::EntriesRequest {
            start: 0,
            end: 1_000_000,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = AuditClient::new(fx.channel("auditor-1"))
        .inclusion_proof(pb::InclusionProofRequest {
            index: 10_000,
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Still serving, for the same client and a new one.
    assert!(
        app.read(pb::ReadRequest {
            r#ref: REF.into(),
            purpose: "support".into(),
            ..Default::default()
        })
        .await
        .is_ok()
    );
    assert_eq!(health(fx.channel("desk")).await.unwrap().status, "serving");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditor_gets_a_log_whose_checkpoint_and_proofs_verify() {
    let fx = Fixture::start().await;
    let mut app = ArchiveClient::new(fx.channel("crm"));
    for i in 0..3 {
        app.append(pb::AppendRequest {
            records: vec![record(&format!("phone:+1555000{i}"), "profile", "{}")],
        })
        .await
        .unwrap();
    }
    let entries = audit_entries(&fx).await;
    assert!(entries.len() >= 3);
    let mut audit = AuditClient::new(fx.channel("auditor-1"));
    let cp = audit
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(cp.checkpoint.starts_with("amble.node/"));
    assert_eq!(cp.size, entries.len() as u64);
    let verifier = amble_audit::NoteVerifier::parse(&cp.log_key).unwrap();
    assert!(amble_audit::verify_note(&cp.checkpoint, &verifier, &[]).is_ok());
    let proof = audit
        .consistency_proof(pb::ConsistencyProofRequest {
            old_size: 1,
            new_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(proof.proof_json.contains("hashes") || !proof.proof_json.is_empty());
    fx.stop().await;
}

#[test]
fn every_method_of_every_service_has_an_allow_list() {
    let methods = [
        "/amble.v1.Archive/Append",
        "/amble.v1.Archive/Read",
        "/amble.v1.Archive/Link",
        "/amble.v1.Archive/Unlink",
        "/amble.v1.Subject/GetConsent",
        "/amble.v1.Subject/SetConsent",
        "/amble.v1.Subject/Export",
        "/amble.v1.Subject/Erase",
        "/amble.v1.Subject/AccessLog",
        "/amble.v1.Subject/IssuePortalLink",
        "/amble.v1.Audit/Checkpoint",
        "/amble.v1.Audit/Entries",
        "/amble.v1.Audit/InclusionProof",
        "/amble.v1.Audit/ConsistencyProof",
        "/amble.v1.Admin/ReloadPolicy",
        "/amble.v1.Admin/RotateKey",
        "/amble.v1.Admin/Health",
    ];
    for m in methods {
        assert!(amble_node::server::method_access(m).is_some(), "{m}");
    }
    assert!(amble_node::server::method_access("/amble.v1.Archive/Drop").is_none());
    let _ = pki_dir;
}

/// The value of one sample line (`name{labels} value`) in a metrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer_and_counters_move_with_calls() {
    let fx = Fixture::start().await;
    assert_eq!(fx.http_get("/healthz").await.0, 200);
    assert_eq!(fx.http_get("/readyz").await.0, 200);
    assert_eq!(fx.http_get("/elsewhere").await.0, 404);
    let (code, before) = fx.http_get("/metrics").await;
    assert_eq!(code, 200, "{before}");
    assert_eq!(sample(&before, "amble_node_archive_subjects"), Some(0.0));
    assert_eq!(
        sample(&before, "amble_node_federation_rounds_trained_total"),
        Some(0.0)
    );
    assert!(sample(&before, "amble_node_policy_version").is_some());
    let log_before = sample(&before, "amble_node_audit_log_entries").unwrap();

    health(fx.channel("crm")).await.unwrap();
    health(fx.channel("ops")).await.unwrap();
    ArchiveClient::new(fx.channel("crm"))
        .append(pb::AppendRequest {
            records: vec![record(REF, "profile", r#"{"display_name":"Ann"}"#)],
        })
        .await
        .unwrap();
    let err = AdminClient::new(fx.channel("crm"))
        .rotate_key(pb::RotateKeyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let (_, after) = fx.http_get("/metrics").await;
    let requests = |method: &str, code: &str| {
        sample(
            &after,
            &format!(
                "amble_node_grpc_requests_total{{method=\"/amble.v1.{method}\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(requests("Admin/Health", "OK"), Some(2.0), "{after}");
    assert_eq!(requests("Archive/Append", "OK"), Some(1.0));
    assert_eq!(requests("Admin/RotateKey", "PermissionDenied"), Some(1.0));
    assert_eq!(
        sample(
            &after,
            "amble_node_grpc_request_duration_seconds_count{method=\"/amble.v1.Admin/Health\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &after,
            "amble_node_grpc_request_duration_seconds_bucket{method=\"/amble.v1.Admin/Health\",le=\"+Inf\"}"
        ),
        Some(2.0)
    );
    assert_eq!(sample(&after, "amble_node_archive_subjects"), Some(1.0));
    assert!(sample(&after, "amble_node_audit_log_entries").unwrap() > log_before);
    assert_eq!(
        sample(
            &after,
            "amble_node_federation_epsilon_spent{model=\"intent\"}"
        ),
        Some(0.0)
    );
    // Counts only: no reference, no caller, no record content.
    for secret in ["15550001", "crm", "ops", "Ann"] {
        assert!(!after.contains(secret), "{secret} in metrics:\n{after}");
    }
    fx.stop().await;
}
