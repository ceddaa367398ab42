//! Checkpoints and signed notes as amble issues them.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{
    Action, AuditLog, Checkpoint, EntryDraft, NoteError, NoteSigner, NoteVerifier, open_note,
    verify_note,
};
use amble_crypto::{Secret32, SigningKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(Secret32::from_bytes([n; 32])).unwrap()
}

#[test]
fn log_checkpoint_is_a_c2sp_checkpoint_signed_by_the_node_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(&sled::open(dir.path()).unwrap()).unwrap();
    for i in 0..3 {
        log.append(EntryDraft::new("a", "app", Action::Append, format!("r{i}")))
            .unwrap();
    }
    let note = log.checkpoint(&key(1), "node-a.example/audit").unwrap();
    let root = B64.encode(log.root().unwrap());
    assert!(
        note.starts_with(&format!(
            "node-a.example/audit\n3\n{root}\n\n\u{2014} node-a.example/audit "
        )),
        "{note}"
    );
    assert!(note.ends_with('\n'));
    let v = NoteVerifier::new("node-a.example/audit", key(1).verifying_key()).unwrap();
    let opened = verify_note(&note, &v, &[]).unwrap();
    let cp = Checkpoint::parse(&opened.text).unwrap();
    assert_eq!((cp.size, cp.root), (3, log.root().unwrap()));
    assert!(log.checkpoint(&key(1), "bad origin").is_err());
}

#[test]
fn checkpoint_text_round_trips_and_malformed_bodies_are_refused() {
    let cp = Checkpoint::new("example.com/log", 42, [7u8; 32]).unwrap();
    assert_eq!(Checkpoint::parse(&cp.to_text()).unwrap(), cp);
    let with_ext = format!("{}ext line\n", cp.to_text());
    assert_eq!(
        Checkpoint::parse(&with_ext).unwrap().extensions,
        vec!["ext line".to_owned()]
    );
    for bad in [
        "example.com/log\n42\n",
        "example.com/log\n042\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "example.com/log\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "example.com/log\n42\nBwcH\n",
        "\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "example.com/log\n42\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
    ] {
        assert!(Checkpoint::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn cosigning_adds_one_line_per_key_and_keeps_the_others() {
    let log_key = NoteSigner::from_key("log.example", &key(1)).unwrap();
    let witness = NoteSigner::from_key("witness.example", &key(2)).unwrap();
    let note = log_key
        .sign("log.example\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
        .unwrap();
    let once = witness.add_signature(&note).unwrap();
    let twice = witness.add_signature(&once).unwrap();
    assert_eq!(once, twice, "re-cosigning replaces, not duplicates");
    assert_eq!(once.matches('\u{2014}').count(), 2);
    let opened = open_note(&twice, &[log_key.verifier(), witness.verifier()]).unwrap();
    assert_eq!(opened.verified_by.len(), 2);
    // Another key under the log's name is not the log's signature.
    let err = verify_note(
        &twice,
        &NoteSigner::from_key("log.example", &key(9))
            .unwrap()
            .verifier(),
        &[],
    )
    .unwrap_err();
    assert!(matches!(err, NoteError::MissingSignature(_)), "{err}");
}

#[test]
fn notes_without_any_trusted_signature_are_refused() {
    let signer = NoteSigner::from_key("a.example", &key(1)).unwrap();
    let note = signer.sign("hello\n").unwrap();
    let stranger = NoteSigner::from_key("b.example", &key(2))
        .unwrap()
        .verifier();
    assert!(matches!(
        open_note(&note, &[stranger]),
        Err(NoteError::NoKnownSignature)
    ));
    assert!(signer.sign("no newline").is_err());
    assert!(signer.sign("bell\u{7}\n").is_err());
}

#[test]
fn private_key_strings_round_trip_and_debug_hides_the_seed() {
    let s = NoteSigner::from_key("node-a", &key(5)).unwrap();
    let text = s.to_private_key_string().to_string();
    let back = NoteSigner::parse(&text).unwrap();
    assert_eq!(back.verifier(), s.verifier());
    let dbg = format!("{s:?}");
    assert!(!dbg.contains(&text[text.len() - 20..]), "{dbg}");
    assert!(dbg.contains("redacted"));
}
