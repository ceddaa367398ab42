//! Writes the seed corpus: real inputs of every target, made by a throwaway node, so fuzzing
//! starts from what a node actually reads. Seeds are named `seed-*`; what `cargo fuzz` adds
//! keeps its hash names.
//!
//! Run: `cargo run -p amble-fuzz --example seed_corpus` (rewrites only the `seed-*` files).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_crypto::ExternalRef;
use amble_node::{Actor, ConsentChange, NewRecord, Node};
use amble_policy::{Collection, Role};
use amble_proto::v1 as pb;
use prost::Message;
use std::path::Path;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn write(corpus: &Path, target: &str, seeds: &[Vec<u8>]) -> Result<()> {
    let dir = corpus.join(target);
    std::fs::create_dir_all(&dir)?;
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s)?;
    }
    println!("{target}: {} seeds", seeds.len());
    Ok(())
}

fn with_kind(kind: u8, m: &impl Message) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend(m.encode_to_vec());
    v
}

fn main() -> Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let lines = [
        r#"{"ref":"phone:+15550001","collection":"profile","time":"2026-05-01T10:00:00Z","data":{"display_name":"Ann","birth_year":1990,"city":"Lyon"}}"#,
        r#"{"ref":"email:Ann@Example.com","collection":"interactions","time":"2026-05-02T09:30:00+08:00","data":{"channel":"chat","text":"我的卡丢了，怎么办？","intent":"lost_or_stolen_card"}}"#,
        r#"{"ref":"phone:+86 138 0013 8000","collection":"health","time":"2026-05-03T00:00:00Z","data":{"condition":"pregnancy"}}"#,
        r#"{"ref":"wechat:wxid_abc","collection":"events","time":"2026-05-04T12:00:00Z","data":{"event":"moved","region":"華東"}}"#,
        r#"{"ref":"phone:+15550001","collection":"goals","time":"2026-05-05T00:00:00Z","data":{"goal":"buy a flat","target_amount":200000}}"#,
    ];
    write(
        &corpus,
        "ingest_line",
        &lines
            .iter()
            .map(|l| l.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )?;
    write(
        &corpus,
        "policy_toml",
        &[include_bytes!("../../deploy/policy.example.toml").to_vec()],
    )?;
    let refs = [
        "phone:+1 (555) 000-1234",
        "email:Ann.Lee@Example.COM",
        "wechat:wxid_\u{200b}abc",
        "member:Ａ１２３",
        "phone:008613800138000",
    ];
    write(
        &corpus,
        "external_ref",
        &refs
            .iter()
            .map(|r| r.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )?;

    // A node that sees a person's whole life cycle, for the audit log, consent and backup.
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let node = Node::init(&data, None)?;
    let op = Actor::local("operator:seed", Role::Admin);
    let app = Actor::local("crm", Role::App);
    let person = ExternalRef::parse("phone:+15550001")?;
    let mut fields = serde_json::Map::new();
    fields.insert("text".into(), "card lost".into());
    node.append(
        &app,
        &person,
        &NewRecord {
            collection: Collection::Interactions,
            time: time::OffsetDateTime::now_utc(),
            data: fields,
        },
    )?;
    let _ = node.read(&app, &person, "support", amble_node::TimeRange::ALL)?;
    let receipt = node.change_consent(
        &app,
        &person,
        "personalisation",
        ConsentChange::Give {
            valid_until: None,
            explicit: false,
        },
    )?;
    let history = node.consent_history(&op, &person)?;
    write(&corpus, "consent_receipt", &[receipt.into_bytes()])?;
    write(&corpus, "consent_history", &[history.to_json_bytes()])?;

    let audit = tmp.path().join("audit");
    amble_audit::export_dir(
        node.audit_log(),
        &amble_fuzz::fuzz_signing_key(),
        amble_fuzz::FUZZ_ORIGIN,
        &audit,
    )?;
    let entries = std::fs::read_to_string(audit.join(amble_audit::ENTRIES_FILE))?;
    write(
        &corpus,
        "audit_entry",
        &entries
            .lines()
            .map(|l| l.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )?;
    let note = std::fs::read(audit.join(amble_audit::CHECKPOINT_FILE))?;
    let body = note
        .split(|b| *b == b'\n')
        .take(3)
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect::<Vec<u8>>();
    write(
        &corpus,
        "audit_note",
        &[
            note,
            body,
            std::fs::read(audit.join(amble_audit::LOG_KEY_FILE))?,
        ],
    )?;

    let backup = tmp.path().join("node.backup");
    node.backup(&op, &backup)?;
    drop(node);
    write(&corpus, "backup_file", &[std::fs::read(&backup)?])?;

    write(
        &corpus,
        "portal_form",
        &[
            b"csrf=0123abcd&purpose=personalisation&action=give".to_vec(),
            b"csrf=0123abcd&confirm=yes".to_vec(),
            "purpose=%E4%B8%AA%E6%80%A7%E5%8C%96&action=withdraw+now&x=%zz&y"
                .as_bytes()
                .to_vec(),
        ],
    )?;

    let record = pb::NewRecord {
        r#ref: "phone:+15550001".into(),
        collection: "interactions".into(),
        time: "2026-05-01T10:00:00Z".into(),
        data_json: r#"{"channel":"chat","text":"hello"}"#.into(),
    };
    write(
        &corpus,
        "grpc_request",
        &[
            with_kind(
                0,
                &pb::AppendRequest {
                    records: vec![record],
                },
            ),
            with_kind(
                1,
                &pb::ReadRequest {
                    r#ref: "email:ann@example.com".into(),
                    purpose: "support".into(),
                    from: "2026-01-01T00:00:00Z".into(),
                    to: String::new(),
                },
            ),
            with_kind(
                5,
                &pb::SetConsentRequest {
                    r#ref: "phone:+15550001".into(),
                    purpose: "personalisation".into(),
                    give: true,
                    valid_until: "2027-01-01T00:00:00Z".into(),
                    explicit: true,
                },
            ),
            with_kind(9, &pb::EntriesRequest { start: 0, end: 10 }),
            with_kind(
                17,
                &pb::UpdateChunk {
                    ..Default::default()
                },
            ),
        ],
    )?;
    Ok(())
}
