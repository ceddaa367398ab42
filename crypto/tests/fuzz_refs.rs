//! Property-based fuzzing of the external-reference parser, the one parser every identifier
//! from outside goes through: arbitrary input never panics, and the canonical form is a fixed
//! point (parsing a canonical reference gives it back), so one person is one pseudonym.
//! `PROPTEST_CASES=100000 cargo test -p amble-crypto --test fuzz_refs` for a long run.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_crypto::ExternalRef;
use proptest::prelude::*;

fn ref_like() -> impl Strategy<Value = String> {
    let channel = prop_oneof![
        Just("phone".to_owned()),
        Just("Email".to_owned()),
        Just("openid".to_owned()),
        "[a-zA-Z0-9_ -]{0,8}"
    ];
    let id = prop_oneof![
        "[+0-9 ().\\-]{0,24}",
        "[a-zA-Z0-9@._+\u{200B}\u{FEFF}\u{3000}-\u{30FF}]{0,24}",
        any::<String>()
    ];
    (channel, id).prop_map(|(c, i)| format!("{c}:{i}"))
}

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_without_panicking(s in any::<String>()) {
        let _ = ExternalRef::parse(&s);
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point(s in ref_like()) {
        if let Ok(r) = ExternalRef::parse(&s) {
            let again = ExternalRef::parse(r.expose());
            prop_assert_eq!(again.ok(), Some(r));
        }
    }
}
