//! Transforms hold their promises for any input.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use amble_consent::ConsentHistory;
use amble_policy::{Collection, Decision, Policy, Role, age_band, decide, mask};
use proptest::prelude::*;
use serde_json::json;
use time::macros::datetime;

fn longest_digit_run(s: &str) -> usize {
    let (mut best, mut cur) = (0, 0);
    for c in s.chars() {
        if c.is_numeric() {
            cur += 1;
            best = best.max(cur);
        } else {
            cur = 0;
        }
    }
    best
}

/// An `x@y` with non-space, non-`@` characters on both sides.
fn has_email(s: &str) -> bool {
    s.split_whitespace().any(|tok| {
        tok.char_indices().any(|(i, c)| {
            c == '@'
                && tok[..i].chars().last().is_some_and(|p| p.is_alphanumeric())
                && tok[i + 1..]
                    .chars()
                    .next()
                    .is_some_and(|n| n.is_alphanumeric())
        })
    })
}

const BUCKETS: &str = r#"
version = 1
[[purpose]]
id = "analytics"
description = "Counting."
legal_basis = "legitimate_interest"
roles = ["node"]
[purpose.read]
events = ["amount|bucket:amount", "score|bucket:score"]
[buckets.amount]
bounds = [10, 100, 1000.5]
[buckets.score]
bounds = [0]
labels = ["negative", "non-negative"]
"#;

proptest! {
    #[test]
    fn any_birth_year_gives_an_age_band_and_never_the_year(year in any::<i64>(), now in 1900i32..2200) {
        let band = age_band(&json!(year), now);
        prop_assert_ne!(&band, &year.to_string());
        if year.unsigned_abs() >= 100 {
            prop_assert!(!band.contains(&year.to_string()), "{} in {}", year, band);
        }
        let ok = band == "unknown" || {
            let (lo, hi) = band.split_once('-').unwrap();
            let (lo, hi): (i64, i64) = (lo.parse().unwrap(), hi.parse().unwrap());
            lo % 10 == 0 && hi == lo + 9 && (lo..=hi).contains(&(i64::from(now) - year))
        };
        prop_assert!(ok, "{}", band);
    }

    #[test]
    fn birth_year_as_string_is_banded_too(year in 1900i64..2026) {
        prop_assert_eq!(age_band(&json!(year.to_string()), 2026), age_band(&json!(year), 2026));
    }

    #[test]
    fn masked_text_has_no_digit_runs_and_no_emails(
        words in proptest::collection::vec(
            prop_oneof![
                "[a-zA-Z]{1,8}",
                "[0-9]{1,20}",
                "\\+?[0-9]{2,4}[ -]?[0-9]{3,4}[ -]?[0-9]{3,4}",
                "[a-z0-9._]{1,10}@[a-z0-9]{1,8}\\.[a-z]{2,3}",
                "\\(?[a-z]{1,6}@[a-z]{1,6}\\.org\\)?[,.;]?",
                "[\\PC]{1,6}",
            ],
            0..12,
        )
    ) {
        let text = words.join(" ");
        let masked = mask(&text);
        prop_assert!(longest_digit_run(&masked) < 3, "{:?} -> {:?}", text, masked);
        prop_assert!(!has_email(&masked), "{:?} -> {:?}", text, masked);
    }

    #[test]
    fn bucketed_values_are_declared_labels(amount in -1e7f64..1e7, score in any::<i64>()) {
        let p = Policy::from_toml_str(BUCKETS, "b.toml").unwrap();
        let Decision::Allow(g) = decide(&p, "n", Role::Node, "analytics", &ConsentHistory::new(), datetime!(2026-01-01 00:00 UTC)) else {
            panic!("denied");
        };
        let r = g.project(Collection::Events, datetime!(2026-01-01 00:00 UTC), &json!({"amount": amount, "score": score})).unwrap();
        let labels = p.buckets("amount").unwrap().labels();
        prop_assert_eq!(labels.len(), 4);
        prop_assert!(labels.iter().any(|l| Some(l.as_str()) == r.get("amount").and_then(|v| v.as_str())));
        let expect = if score < 0 { "negative" } else { "non-negative" };
        prop_assert_eq!(r.get("score"), Some(&json!(expect)));
    }
}

#[test]
fn mask_keeps_the_sentence_shape() {
    assert_eq!(
        mask("call me on +86 138 0013 8000 or mail (ann.li@example.cn), card 4111 ends 42"),
        "call me on [phone] or mail ([email]), card #### ends ##"
    );
}

#[test]
fn bucket_labels_default_to_readable_ranges() {
    let p = Policy::from_toml_str(BUCKETS, "b.toml").unwrap();
    let b = p.buckets("amount").unwrap();
    assert_eq!(
        b.labels(),
        [
            "under 10",
            "10 to under 100",
            "100 to under 1000.5",
            "1000.5 and over"
        ]
    );
    assert_eq!(b.label(10.0), "10 to under 100");
    assert_eq!(b.label(9.99), "under 10");
}

#[test]
fn mainland_ids_cards_mobiles_and_addresses_are_masked_in_both_scripts() {
    let cases = [
        // Simplified script.
        (
            "我的身份证号是11010519491231002X，请帮我查一下",
            "我的身份证号是[id]，请帮我查一下",
        ),
        ("身份证 440300199001011238 丢了", "身份证 [id] 丢了"),
        (
            "卡号6222 0202 0000 0000 006被锁了，手机13812345678",
            "卡号[card]被锁了，手机[phone]",
        ),
        ("请打 +86 138-1234-5678 找我", "请打 [phone] 找我"),
        // Traditional script, full-width digits.
        (
            "我的卡號 6217001234567893 被盜刷了",
            "我的卡號 [card] 被盜刷了",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(mask(text), want, "{text}");
    }
    // Addresses: without a gazetteer the start of an address is a guess, so a few words
    // before it may go too; the address itself never stays, and the rest of the sentence does.
    for (text, gone, kept) in [
        (
            "我住在上海市浦东新区张江路88号3栋502室，快递一直没到",
            &["上海", "浦东", "张江路", "88", "502"][..],
            "[address]，快递一直没到",
        ),
        (
            "地址是臺北市大安區忠孝東路四段１００號５樓，卡片還沒寄到",
            &["臺北", "大安", "忠孝東路", "１００"][..],
            "[address]，卡片還沒寄到",
        ),
    ] {
        let m = mask(text);
        assert!(m.ends_with(kept), "{text} -> {m}");
        for part in gone {
            assert!(!m.contains(part), "{part} left in {m}");
        }
    }
    // A wrong check character or checksum is not an ID or a card, but its digits still go.
    assert_eq!(mask("11010519491231002Y"), "[phone]Y");
    assert_eq!(mask("卡号 6222020200000000001"), "卡号 [phone]");
    // A city alone names many people; amounts keep their shape.
    assert_eq!(
        mask("我在北京市朝阳区，转了500元"),
        "我在北京市朝阳区，转了###元"
    );
}
