//! Trust roots: another organisation's node, the federation's own certificates and a
//! certificate for another federation reach none of this node's archive, subject, admin or
//! assist services; only the coordinator reaches the audit methods a witness needs; and a node
//! refuses a configuration that would let the federation CA in as its local root.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod server_support;

use amble_crypto::pki::{Ca, IssueRequest};
use amble_node::server::client::ClientIdentity;
use amble_node::server::{ServeConfig, Server, ServerError, TlsFiles};
use amble_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::archive_client::ArchiveClient;
use pb::audit_client::AuditClient;
use pb::subject_client::SubjectClient;
use server_support::{Fixture, pki_dir};
use tonic::Code;

const REF: &str = "phone:+15550001";

fn profile(r: &str) -> pb::AppendRequest {
    pb::AppendRequest {
        records: vec![pb::NewRecord {
            r#ref: r.into(),
            collection: "profile".into(),
            time: "2026-05-01T10:00:00Z".into(),
            data_json: r#"{"display_name":"Ann"}"#.into(),
        }],
    }
}

fn read(r: &str, purpose: &str) -> pb::ReadRequest {
    pb::ReadRequest {
        r#ref: r.into(),
        purpose: purpose.into(),
        ..Default::default()
    }
}

async fn denied_calls(fx: &Fixture) -> Vec<(String, String)> {
    let mut audit = AuditClient::new(fx.channel("auditor-1"));
    let cp = audit
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    audit
        .entries(pb::EntriesRequest {
            start: 0,
            end: cp.size,
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .iter()
        .map(|e| serde_json::from_slice::<serde_json::Value>(e).unwrap())
        .filter(|e| e["action"] == "denied_call")
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_owned(),
                e["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_organisations_node_can_neither_read_nor_write_nor_probe_the_archive() {
    let fx = Fixture::start().await;
    ArchiveClient::new(fx.channel("crm"))
        .append(profile(REF))
        .await
        .unwrap();
    let mut other = ArchiveClient::new(fx.fed_channel("node-b"));
    for purpose in ["personalisation", "train.intent", "analytics"] {
        let err = other.read(read(REF, purpose)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{purpose}: {err:?}");
    }
    // Known and unknown people look the same to it: no membership oracle.
    let unknown = other.read(read("phone:+15559999", "train.intent")).await;
    assert_eq!(unknown.unwrap_err().code(), Code::PermissionDenied);
    let err = other.append(profile(REF)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = SubjectClient::new(fx.fed_channel("node-b"))
        .get_consent(pb::SubjectRef { r#ref: REF.into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let denied = denied_calls(&fx).await;
    assert_eq!(
        denied.iter().filter(|(a, _)| a == "node-b").count(),
        6,
        "{denied:?}"
    );
    assert!(
        denied
            .iter()
            .all(|(_, why)| why.contains("with a federation certificate")),
        "{denied:?}"
    );
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federations_admin_is_not_this_organisations_admin() {
    let fx = Fixture::start().await;
    let err = AdminClient::new(fx.fed_channel("fed-ops"))
        .rotate_key(pb::RotateKeyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = AuditClient::new(fx.fed_channel("fed-ops"))
        .entries(pb::EntriesRequest { start: 0, end: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The organisation's own admin still can.
    AdminClient::new(fx.channel("ops"))
        .rotate_key(pb::RotateKeyRequest {})
        .await
        .unwrap();
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_reaches_only_what_a_witness_needs() {
    let fx = Fixture::start().await;
    let cp = AuditClient::new(fx.fed_channel("coordinator"))
        .checkpoint(pb::CheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!cp.checkpoint.is_empty() && !cp.log_key.is_empty());
    let err = ArchiveClient::new(fx.fed_channel("coordinator"))
        .read(read(REF, "analytics"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = AuditClient::new(fx.fed_channel("coordinator"))
        .entries(pb::EntriesRequest { start: 0, end: 1 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_federation_is_refused_even_from_the_organisations_ca() {
    let fx = Fixture::start().await;
    // The same CA, once used for another federation: its certificate names that federation.
    let dir = pki_dir(&fx.tmp);
    std::fs::write(dir.join("federation"), "other-fed\n").unwrap();
    Ca::open(&dir)
        .unwrap()
        .issue(&IssueRequest::new("stranger", "admin"))
        .unwrap();
    std::fs::write(dir.join("federation"), "test-fed\n").unwrap();
    let stranger = fx.identity("stranger");
    let err = AdminClient::new(stranger.endpoint(&fx.url()).unwrap().connect_lazy())
        .rotate_key(pb::RotateKeyRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("other-fed"), "{}", err.message());
    let denied = denied_calls(&fx).await;
    assert!(
        denied
            .iter()
            .any(|(a, why)| a == "stranger" && why.contains("other-fed")),
        "{denied:?}"
    );
    fx.stop().await;
}

fn config_with(fx: &Fixture, client_ca: &Ca, federation_ca: Option<&Ca>) -> ServeConfig {
    let certs = pki_dir(&fx.tmp).join("certs");
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: fx.tmp.path().join("second"),
        key_file: None,
        policy: None,
        tls: TlsFiles {
            cert: certs.join("node-1.pem"),
            key: certs.join("node-1.key"),
            client_ca: client_ca.cert_path(),
            crl: client_ca.crl_path(),
            federation_ca: federation_ca.map(Ca::cert_path),
            federation_crl: federation_ca.map(Ca::crl_path),
        },
        limits: Default::default(),
        portal: None,
        federation: None,
        metrics: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_will_not_start_with_the_federation_ca_as_its_local_root() {
    let fx = Fixture::start().await;
    let err = Server::bind(config_with(&fx, &fx.fed_ca, None))
        .await
        .err()
        .expect("a node started with the federation CA as its local root");
    assert!(
        matches!(&err, ServerError::Config(m) if m.contains("federation CA") && m.contains("--organisation")),
        "{err}"
    );
    let err = Server::bind(config_with(&fx, &fx.ca, Some(&fx.ca)))
        .await
        .err()
        .expect("a node started with one CA as both roots");
    assert!(err.to_string().contains("same CA"), "{err}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisations_app_cannot_reach_another_organisations_node() {
    let fx = Fixture::start().await;
    // Organisation 2, same federation: its own CA and app.
    let org2 = fx.tmp.path().join("org-2");
    let ca2 = Ca::init_organisation(&org2, "test-fed", "org-2").unwrap();
    ca2.issue(&IssueRequest::new("crm-2", "app")).unwrap();
    let app2 = ClientIdentity::load(
        &org2.join("certs/crm-2.pem"),
        &org2.join("certs/crm-2.key"),
        &fx.ca.cert_path(),
    )
    .unwrap();
    let err = ArchiveClient::new(app2.endpoint(&fx.url()).unwrap().connect_lazy())
        .read(read(REF, "personalisation"))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert_ne!(err.code(), Code::NotFound, "{err:?}");
    fx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_a_usable_identity_is_refused_and_logged() {
    let fx = Fixture::start().await;
    // Signed by the organisation's CA, but its identity names a role amble does not know.
    let dir = pki_dir(&fx.tmp);
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(fx.ca.cert_pem(), &ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://test-fed/root/x".try_into().unwrap(),
    ));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (fx.tmp.path().join("odd.pem"), fx.tmp.path().join("odd.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    amble_crypto::write_private(&key_path, key.serialize_pem().as_bytes()).unwrap();
    let odd = ClientIdentity::load(&cert_path, &key_path, &fx.ca.cert_path()).unwrap();
    let err = AdminClient::new(odd.endpoint(&fx.url()).unwrap().connect_lazy())
        .health(pb::HealthRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let denied = denied_calls(&fx).await;
    assert!(
        denied
            .iter()
            .any(|(a, why)| a.starts_with("cert:") && why.contains("Admin/Health")),
        "{denied:?}"
    );
    fx.stop().await;
}
