//! The canonical form every signed document uses is RFC 8785 (JCS): the published test data of
//! its reference implementations and the RFC's own number table (Appendix B).
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_consent::canonical_json;
use std::path::Path;

#[test]
fn the_reference_test_data_canonicalises_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jcs");
    let mut checked = 0;
    for name in [
        "arrays",
        "french",
        "structures",
        "unicode",
        "values",
        "weird",
    ] {
        let input = std::fs::read(dir.join("input").join(format!("{name}.json"))).unwrap();
        let want = std::fs::read(dir.join("output").join(format!("{name}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&input).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            String::from_utf8(want).unwrap().trim_end_matches('\n'),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn numbers_are_written_as_rfc_8785_appendix_b_says() {
    let table = [
        ("0000000000000000", "0"),
        ("8000000000000000", "0"),
        ("0000000000000001", "5e-324"),
        ("8000000000000001", "-5e-324"),
        ("7fefffffffffffff", "1.7976931348623157e+308"),
        ("ffefffffffffffff", "-1.7976931348623157e+308"),
        ("4340000000000000", "9007199254740992"),
        ("c340000000000000", "-9007199254740992"),
        ("4430000000000000", "295147905179352830000"),
        ("44b52d02c7e14af5", "9.999999999999997e+22"),
        ("44b52d02c7e14af6", "1e+23"),
        ("44b52d02c7e14af7", "1.0000000000000001e+23"),
        ("444b1ae4d6e2ef4e", "999999999999999700000"),
        ("444b1ae4d6e2ef4f", "999999999999999900000"),
        ("444b1ae4d6e2ef50", "1e+21"),
        ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
        ("3eb0c6f7a0b5ed8d", "0.000001"),
        ("41b3de4355555553", "333333333.3333332"),
        ("41b3de4355555554", "333333333.33333325"),
        ("41b3de4355555555", "333333333.3333333"),
        ("41b3de4355555556", "333333333.3333334"),
        ("41b3de4355555557", "333333333.33333343"),
        ("becbf647612f3696", "-0.0000033333333333333333"),
        ("43143ff3c1cb0959", "1424953923781206.2"),
    ];
    for (bits, want) in table {
        let x = f64::from_bits(u64::from_str_radix(bits, 16).unwrap());
        let v = serde_json::json!([x]);
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            format!("[{want}]"),
            "{bits}"
        );
    }
}
