//! Property-based fuzzing of the policy parser: any text, and the example policy with a byte
//! removed or replaced, is either a policy or an error with a position — never a panic.
//! `PROPTEST_CASES=100000 cargo test -p amble-policy --test fuzz_policy` for a long run.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_policy::Policy;
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../deploy/policy.example.toml");

proptest! {
    #[test]
    fn any_text_is_a_policy_or_an_error(s in any::<String>()) {
        let _ = Policy::from_toml_str(&s, "fuzz.toml");
    }

    #[test]
    fn a_damaged_example_policy_is_a_policy_or_an_error(
        at in 0usize..EXAMPLE.len(),
        with in prop_oneof![Just(String::new()), "[\\x00-\\x7f]{1,3}", any::<char>().prop_map(String::from)],
    ) {
        let mut text = EXAMPLE.to_owned();
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
        text.replace_range(at..end, &with);
        let _ = Policy::from_toml_str(&text, "fuzz.toml");
    }
}
