//! Property-based fuzzing of what an auditor reads from outside: log entries, signed notes
//! and checkpoints. Arbitrary input never panics, and a genuine note with any one byte changed
//! never verifies.
//! `PROPTEST_CASES=100000 cargo test -p amble-audit --test fuzz_notes` for a long run.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_audit::{Checkpoint, Entry, NoteSigner, NoteVerifier, open_note};
use amble_crypto::{Secret32, SigningKey};
use proptest::prelude::*;

fn signer() -> NoteSigner {
    let key = SigningKey::from_seed(Secret32::from_bytes([7; 32])).unwrap();
    NoteSigner::from_key("fuzz.example/audit", &key).unwrap()
}

const BODY: &str = "fuzz.example/audit\n42\nq6ifdLMrRWJ4yldaA9vr4Z8ZMAwUSuvU+pPw/AuP3OA=\n";

proptest! {
    #[test]
    fn arbitrary_text_is_no_entry_note_key_or_checkpoint_and_no_panic(s in any::<String>()) {
        let _ = Entry::from_canonical_json(s.as_bytes());
        let _ = NoteVerifier::parse(&s);
        let _ = Checkpoint::parse(&s);
        let _ = open_note(&s, &[signer().verifier()]);
    }

    #[test]
    fn a_signed_note_with_one_byte_changed_does_not_verify(at in 0usize..400, bit in 0u8..8) {
        let s = signer();
        let note = s.sign(BODY).unwrap();
        let mut bytes = note.into_bytes();
        let at = at % bytes.len();
        bytes[at] ^= 1 << bit;
        if let Ok(text) = String::from_utf8(bytes) {
            if let Ok(opened) = open_note(&text, &[s.verifier()]) {
                // Only a change outside the signed text and our signature line may pass, and
                // then the text is exactly what was signed.
                prop_assert_eq!(opened.text, BODY);
                prop_assert!(!opened.verified_by.is_empty());
            }
        }
    }
}
