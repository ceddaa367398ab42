//! amble-fuzz: every parser that takes input from outside a node, as one function per target
//! that must never panic on any bytes, and checks a property where the parser promises one.
//!
//! Two drivers call the same functions:
//! - `cargo +nightly fuzz run --features libfuzzer TARGET` — coverage-guided fuzzing with
//!   libFuzzer (the targets are in `fuzz_targets/`; see `fuzz/README.md`);
//! - `tests/corpus.rs` on stable, in `cargo test`: every file of `corpus/TARGET/` and a fixed
//!   budget of mutations of them.
//!
//! The corpus starts from real inputs written by `examples/seed_corpus.rs` and keeps what the
//! fuzzer found that reaches new code. Nothing here is used by the product.

use amble_audit::{Checkpoint, Entry, NoteSigner, NoteVerifier, open_note};
use amble_consent::{ConsentHistory, verify_receipt};
use amble_crypto::{ExternalRef, Secret32, SigningKey, VerifyingKey};
use prost::Message;
use std::sync::OnceLock;

/// A target: its name (its folder under `corpus/`) and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 10] = [
    ("ingest_line", ingest_line),
    ("policy_toml", policy_toml),
    ("external_ref", external_ref),
    ("audit_entry", audit_entry),
    ("audit_note", audit_note),
    ("consent_receipt", consent_receipt),
    ("consent_history", consent_history),
    ("backup_file", backup_file),
    ("portal_form", portal_form),
    ("grpc_request", grpc_request),
];

/// The key the seed corpus's notes and receipts are signed with (a test key, nothing else).
pub fn fuzz_signing_key() -> SigningKey {
    // A fixed seed is always a valid Ed25519 key.
    #[allow(clippy::expect_used)]
    SigningKey::from_seed(Secret32::from_bytes([7; 32])).expect("a fixed seed is a key")
}

/// The origin of the seed corpus's audit log.
pub const FUZZ_ORIGIN: &str = "fuzz.example/audit";

fn keys() -> &'static (NoteVerifier, VerifyingKey) {
    static KEYS: OnceLock<(NoteVerifier, VerifyingKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = fuzz_signing_key();
        #[allow(clippy::expect_used)]
        let note = NoteSigner::from_key(FUZZ_ORIGIN, &key).expect("a valid origin");
        (note.verifier(), key.verifying_key())
    })
}

/// One line of an `amble node ingest` file. A reference that parses is in canonical form: it
/// parses again to itself.
pub fn ingest_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((r, _record)) = amble_node::ingest::parse_line(text) {
        assert!(
            matches!(ExternalRef::parse(r.expose()), Ok(again) if again == r),
            "the canonical reference does not parse to itself"
        );
    }
}

/// A policy file.
pub fn policy_toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = amble_policy::Policy::from_toml_str(text, "fuzz.toml");
    }
}

/// An external reference (`channel:id`) as apps send it. Its canonical form is a fixed point.
pub fn external_ref(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = ExternalRef::parse(text) {
        assert!(
            matches!(ExternalRef::parse(r.expose()), Ok(again) if again == r),
            "the canonical reference does not parse to itself"
        );
    }
}

/// One line of an audit export's `entries.jsonl`: accepted only in canonical form.
pub fn audit_entry(data: &[u8]) {
    if let Ok(e) = Entry::from_canonical_json(data) {
        assert!(
            e.to_canonical_json().ok().as_deref() == Some(data),
            "an accepted entry is not its own canonical form"
        );
    }
}

/// A signed note (checkpoint, witnessed checkpoint), a note key, and a checkpoint body. A
/// checkpoint that parses prints back to the same text.
pub fn audit_note(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = NoteVerifier::parse(text);
    let _ = NoteSigner::parse(text);
    if let Ok(c) = Checkpoint::parse(text) {
        assert_eq!(c.to_text(), text, "a parsed checkpoint prints differently");
    }
    if let Ok(opened) = open_note(text, std::slice::from_ref(&keys().0)) {
        let _ = Checkpoint::parse(&opened.text);
    }
}

/// A consent receipt a person hands back, checked against the node's key.
pub fn consent_receipt(data: &[u8]) {
    let _ = verify_receipt(data, &keys().1);
}

/// A consent history as exported.
pub fn consent_history(data: &[u8]) {
    let _ = ConsentHistory::from_json_bytes(data);
}

/// A backup file handed to `amble node restore`. The key file given is not the node's, so a
/// restore must fail, and must leave no data directory that opens.
pub fn backup_file(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let (file, key, target) = (
        dir.path().join("node.backup"),
        dir.path().join("node.key"),
        dir.path().join("restored"),
    );
    if std::fs::write(&file, data).is_err() || std::fs::write(&key, b"not a key file").is_err() {
        return;
    }
    let actor = amble_node::Actor::local("operator:fuzz", amble_policy::Role::Admin);
    assert!(
        amble_node::restore(&file, &target, Some(&key), &actor).is_err(),
        "a backup restored with a key file that is not the node's"
    );
    assert!(
        amble_node::Node::open(&target, Some(&key), None).is_err(),
        "a refused restore left a data directory that opens"
    );
}

/// A form body posted to the self-service page.
pub fn portal_form(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = amble_node::server::decode_form(text);
    }
}

/// Any message a node or the coordinator decodes from the wire (the first byte picks the
/// type). Fields that carry references are parsed as the services parse them.
pub fn grpc_request(data: &[u8]) {
    use amble_proto::v1 as pb;
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let refs: Vec<String> = match kind % 22 {
        0 => pb::AppendRequest::decode(bytes)
            .map(|m| m.records.into_iter().map(|r| r.r#ref).collect())
            .unwrap_or_default(),
        1 => pb::ReadRequest::decode(bytes)
            .map(|m| vec![m.r#ref])
            .unwrap_or_default(),
        2 => pb::LinkRequest::decode(bytes)
            .map(|m| vec![m.existing_ref, m.new_ref])
            .unwrap_or_default(),
        3 => pb::UnlinkRequest::decode(bytes)
            .map(|m| vec![m.r#ref])
            .unwrap_or_default(),
        4 => pb::SubjectRef::decode(bytes)
            .map(|m| vec![m.r#ref])
            .unwrap_or_default(),
        5 => pb::SetConsentRequest::decode(bytes)
            .map(|m| vec![m.r#ref])
            .unwrap_or_default(),
        6 => pb::ClassifyRequest::decode(bytes)
            .map(|m| vec![m.subject_ref])
            .unwrap_or_default(),
        7 => pb::PredictNeedsRequest::decode(bytes)
            .map(|m| vec![m.subject_ref])
            .unwrap_or_default(),
        8 => decoded::<pb::CheckpointRequest>(bytes),
        9 => decoded::<pb::EntriesRequest>(bytes),
        10 => decoded::<pb::InclusionProofRequest>(bytes),
        11 => decoded::<pb::ConsistencyProofRequest>(bytes),
        12 => decoded::<pb::ReloadPolicyRequest>(bytes),
        13 => decoded::<pb::RotateKeyRequest>(bytes),
        14 => decoded::<pb::JoinRequest>(bytes),
        15 => decoded::<pb::NextTaskRequest>(bytes),
        16 => decoded::<pb::FetchModelRequest>(bytes),
        17 => decoded::<pb::UpdateChunk>(bytes),
        18 => decoded::<pb::DeclineRequest>(bytes),
        19 => decoded::<pb::CosignRequest>(bytes),
        20 => decoded::<pb::Task>(bytes),
        _ => decoded::<pb::ModelChunk>(bytes),
    };
    for r in refs {
        external_ref(r.as_bytes());
    }
}

fn decoded<M: Message + Default>(bytes: &[u8]) -> Vec<String> {
    let _ = M::decode(bytes);
    Vec::new()
}
