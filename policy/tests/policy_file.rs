//! Loading policy files: the example parses; invalid files are refused whole, at the right spot.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use amble_policy::{Collection, Policy, PolicyError, TrainingGuarantee};
use common::{EXAMPLE, example};

/// Asserts that `text` is refused with the first problem at `line`:`column`, mentioning `what`.
fn refused_at(text: &str, line: usize, column: usize, what: &str) {
    let err = Policy::from_toml_str(text, "bad.toml").expect_err("policy accepted");
    let msg = err.to_string();
    assert_eq!(err.position(), Some((line, column)), "{msg}");
    assert!(
        msg.starts_with(&format!("bad.toml:{line}:{column}: ")),
        "{msg}"
    );
    assert!(msg.contains(what), "{msg} does not mention {what}");
}

const HEAD: &str =
    "version = 1\n\n[[purpose]]\nid = \"support\"\ndescription = \"To answer your questions.\"\n";

#[test]
fn unknown_collection_is_refused_at_its_key() {
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n[purpose.read]\nprofile = [\"language\"]\n  profiles = [\"city\"]\n"
    );
    refused_at(&text, 10, 3, "unknown collection `profiles`");
}

#[test]
fn unknown_role_is_refused_at_the_role() {
    let text = format!("{HEAD}legal_basis = \"contract\"\nroles = [\"agent\", \"support-desk\"]\n");
    refused_at(&text, 7, 19, "unknown role `support-desk`");
}

#[test]
fn duplicate_purpose_is_refused_at_the_second_id() {
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n\n[[purpose]]\nid = \"support\"\ndescription = \"Again.\"\nlegal_basis = \"consent\"\nroles = [\"app\"]\n"
    );
    refused_at(
        &text,
        10,
        6,
        "purpose `support` is declared twice (first on line 4)",
    );
}

#[test]
fn bad_retention_duration_is_refused_at_its_value() {
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n\n[retention]\nprofile = \"P6Y\"\ninteractions = \"2 years\"\n"
    );
    refused_at(
        &text,
        11,
        16,
        "retention for interactions: duration `2 years` does not start with `P`",
    );
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n\n[retention]\nhealth = \"P1Y2D3M\"\n"
    );
    refused_at(&text, 10, 10, "`M` where it is not allowed");
}

#[test]
fn missing_legal_basis_is_refused_at_the_purpose() {
    let text = format!("{HEAD}roles = [\"agent\"]\n");
    refused_at(&text, 3, 1, "purpose `support` has no legal_basis");
}

#[test]
fn unknown_transform_is_refused_at_the_transform() {
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n[purpose.read]\nprofile = [\"language\", \"birth_year|age_bracket\"]\n"
    );
    refused_at(
        &text,
        9,
        36,
        "unknown transform `age_bracket` on field `birth_year`",
    );
}

#[test]
fn undeclared_bucket_set_is_refused() {
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n[purpose.read]\nevents = [\"amount|bucket:money\"]\n"
    );
    refused_at(
        &text,
        9,
        19,
        "bucket set `money` used by field `amount` is not declared",
    );
}

#[test]
fn empty_field_list_is_refused() {
    let text = format!(
        "{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\n[purpose.read]\ngoals = []\n"
    );
    refused_at(&text, 9, 1, "purpose `support` lists no fields of goals");
}

#[test]
fn toml_syntax_errors_carry_line_and_column() {
    let err = Policy::from_toml_str("version = 1\n[[purpose]\n", "bad.toml").unwrap_err();
    assert_eq!(err.position().map(|p| p.0), Some(2), "{err}");
}

#[test]
fn unknown_keys_are_refused_so_typos_do_not_pass_silently() {
    let text =
        format!("{HEAD}legal_basis = \"contract\"\nroles = [\"agent\"]\nrecipient = [\"x\"]\n");
    refused_at(&text, 8, 1, "unknown field `recipient`");
}

#[test]
fn the_first_problem_in_the_file_is_reported_and_the_rest_counted() {
    let text = "version = 0\n[retention]\nprofile = \"P\"\n";
    let err = Policy::from_toml_str(text, "bad.toml").unwrap_err();
    assert_eq!(err.position(), Some((1, 11)));
    assert!(err.to_string().contains("and 1 more problem"), "{err}");
}

#[test]
fn intent_on_two_lines_is_refused() {
    let text = "version = 1\n[automation]\ndefault = \"red\"\ngreen = [\"card_arrival\"]\nred = [\"card_arrival\"]\n";
    refused_at(
        text,
        5,
        8,
        "intent `card_arrival` is on two automation lines",
    );
}

#[test]
fn example_policy_parses_with_its_retention_periods() {
    let p = example();
    assert_eq!(p.version(), 1);
    let ids: Vec<&str> = p.purposes().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "support",
            "personalisation",
            "train.intent",
            "train.needs",
            "analytics"
        ]
    );
    assert_eq!(
        p.retention(Collection::Interactions),
        Some(time::Duration::days(730))
    );
    assert_eq!(
        p.retention(Collection::Health),
        Some(time::Duration::days(365))
    );
    assert_eq!(p.retention_text(Collection::Profile), Some("P6Y"));
}

#[test]
fn example_ropa_mentions_every_purpose_basis_and_retention() {
    let p = example();
    let ropa = p.ropa_markdown();
    assert!(ropa.starts_with("# Record of processing activities (GDPR Art. 30)"));
    for purpose in p.purposes() {
        assert!(
            ropa.contains(&format!("`{}`", purpose.id)),
            "{} missing",
            purpose.id
        );
        assert!(
            ropa.contains(&purpose.description),
            "{} description missing",
            purpose.id
        );
    }
    for needle in [
        "legitimate_interest (Art. 6(1)(f))",
        "contract (Art. 6(1)(b))",
        "P2Y (730 days)",
        "Art. 9",
        "health",
    ] {
        assert!(ropa.contains(needle), "{needle} missing");
    }
}

#[test]
fn the_impact_assessment_fills_in_what_the_policy_and_ledger_say_and_asks_the_rest() {
    let p = example();
    let without = p.dpia_markdown(None);
    assert!(without.starts_with("# Impact assessment (GDPR Art. 35; PIPL Art. 55–56)"));
    for purpose in p.purposes() {
        assert!(
            without.contains(&format!("`{}`", purpose.id)),
            "{} missing",
            purpose.id
        );
    }
    for needle in [
        "legitimate_interest (Art. 6(1)(f))",
        "balancing test of each `legitimate_interest` purpose (`analytics`)",
        "health P1Y",
        "No ledger was given",
        "**To assess**",
        "PIPL Art. 56(3)",
    ] {
        assert!(without.contains(needle), "{needle} missing:\n{without}");
    }
    assert!(
        p.dpia_markdown(Some(&[]))
            .contains("no private training yet")
    );
    let spent = [TrainingGuarantee {
        purpose: "train.intent".into(),
        model: "intent".into(),
        runs: 2,
        epsilon: 4.25,
        delta: 1e-5,
        budget_epsilon: 8.0,
        subject_budget_epsilon: 10.0,
    }];
    let with = p.dpia_markdown(Some(&spent));
    assert!(
        with.contains("| `train.intent` | intent | 2 | 4.250 | 1e-5 | 8 | 10 |"),
        "{with}"
    );
    assert!(!with.contains("No ledger was given"));
}

#[test]
fn summary_table_lists_each_purpose_with_its_fields_and_transforms() {
    let t = example().summary_table();
    for needle in [
        "train.intent",
        "text (mask), intent",
        "birth_year (age_band)",
        "health [explicit consent]",
        "amount (bucket:amount)",
    ] {
        assert!(t.contains(needle), "{needle} missing in\n{t}");
    }
    // Aligned: every table row puts the COLLECTION column at the same place.
    let header = t.lines().find(|l| l.starts_with("PURPOSE")).unwrap();
    let col = header.find("COLLECTION").unwrap();
    let row = t.lines().find(|l| l.starts_with("train.intent")).unwrap();
    assert_eq!(&row[col..col + "interactions".len()], "interactions");
}

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("policy.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    assert_eq!(
        Policy::load(&good).unwrap().source(),
        good.display().to_string()
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\n[retention]\nhealth = \"P1Q\"\n").unwrap();
    let msg = Policy::load(&bad).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("{}:3:10: ", bad.display())),
        "{msg}"
    );
    let missing = Policy::load(dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, PolicyError::Read { .. }));
    assert!(missing.to_string().contains("check the path"));
}

#[test]
fn descriptions_are_read_in_each_language_and_fall_back_by_script_then_to_the_policy_s_own() {
    use amble_policy::Language::{En, ZhCn, ZhTw};
    let p = example();
    let support = p.purpose("support").unwrap();
    assert_eq!(support.description_in(En).language, En);
    assert!(support.description_in(ZhCn).text.contains("解答您的问题"));
    assert!(support.description_in(ZhTw).text.contains("聯絡我們"));
    assert!(p.untranslated().is_empty(), "{:?}", p.untranslated());

    let text = "version = 1\nlanguage = \"zh-CN\"\n[[purpose]]\nid = \"a\"\n\
                description = \"回答您的问题\"\nlegal_basis = \"contract\"\nroles = [\"agent\"]\n";
    let p = Policy::from_toml_str(text, "t").unwrap();
    let a = p.purpose("a").unwrap();
    // A traditional-script reader sees the simplified text before any English.
    assert_eq!(a.description_in(ZhTw).language, ZhCn);
    // An English reader sees the only text there is, and is told which language it is in.
    assert_eq!(a.description_in(En).language, ZhCn);
    let mut missing = p.untranslated();
    missing.sort();
    assert_eq!(missing, vec![("a", En), ("a", ZhTw)]);
}

#[test]
fn a_translation_into_an_unknown_or_the_policy_s_own_language_is_refused() {
    let base = "version = 1\n[[purpose]]\nid = \"a\"\ndescription = \"answer\"\n\
                legal_basis = \"contract\"\nroles = [\"agent\"]\n[purpose.descriptions]\n";
    refused_at(
        &format!("{base}fr = \"répondre\"\n"),
        8,
        1,
        "unknown language `fr`",
    );
    refused_at(
        &format!("{base}en = \"answer\"\n"),
        8,
        1,
        "the policy's own language",
    );
    refused_at(
        &format!("{base}\"zh-CN\" = \" \"\n"),
        8,
        11,
        "empty zh-CN description",
    );
    refused_at(
        "version = 1\nlanguage = \"de\"\n",
        2,
        12,
        "unknown language `de`",
    );
}
