//! Property-based fuzzing of what reaches a node from files: ingest lines and backup files.
//! Arbitrary input is refused with an error, never a panic, and a refused restore leaves no
//! half-restored data directory behind that opens.
//! `PROPTEST_CASES=100000 cargo test -p amble-node --test fuzz_inputs` for a long run.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_node::{Actor, Node, ingest};
use amble_policy::Role;
use proptest::prelude::*;

fn line_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (
            "[a-z]{0,6}:[+0-9a-z@.]{0,12}",
            prop_oneof![Just("interactions"), Just("health"), Just("x")],
            "20[0-9]{2}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:00:00Z|[0-9a-z:-]{0,20}",
            "\\{(\"[a-z]{1,5}\":(\"[a-z]{0,5}\"|[0-9]{1,3}|null|\\[\\])){0,1}\\}|[\\[\\]{}\"0-9a-z,:]{0,16}",
        )
            .prop_map(|(r, c, t, d)| format!(
                "{{\"ref\":\"{r}\",\"collection\":\"{c}\",\"time\":\"{t}\",\"data\":{d}}}"
            )),
    ]
}

proptest! {
    #[test]
    fn any_ingest_line_is_a_record_or_an_error(s in line_like()) {
        let _ = ingest::parse_line(&s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn a_backup_file_of_arbitrary_bytes_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.backup");
        std::fs::write(&file, &bytes).unwrap();
        let key = dir.path().join("node.key");
        std::fs::write(&key, b"not a key").unwrap();
        let actor = Actor::local("operator:fuzz", Role::Admin,);
        let target = dir.path().join("restored");
        prop_assert!(amble_node::restore(&file, &target, Some(&key), &actor).is_err());
        prop_assert!(Node::open(&target, Some(&key), None).is_err());
    }
}
