//! Consent histories, derived states, receipts and the TS 27560 export.
// Test code: a failed unwrap is a failed test, and its helpers are `pub` for the test modules.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use amble_consent::{
    AssistanceLevel, ConsentError, ConsentEventKind, ConsentHistory, ConsentState, Controller,
    Method, PurposeInfo, ReceiptError, ReceiptIssuer, Recorded, SignedReceipt, Terms,
    canonical_json, to_ts27560_at, verify_receipt,
};
use amble_crypto::{SigningKey, SubjectId};
use proptest::prelude::*;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

fn controller() -> Controller {
    Controller {
        pii_controller: "Example Bank".into(),
        contact: "Data Protection Office".into(),
        address: "1 Example Road, Shanghai".into(),
        email: "privacy@example.org".into(),
        phone: "+86 21 0000 0000".into(),
        pii_controller_url: Some("https://example.org".into()),
    }
}

fn purpose(id: &str, health: bool) -> PurposeInfo {
    PurposeInfo {
        id: id.into(),
        description: format!("To do {id} — with “quotes” and ünïcode."),
        pii_categories: vec!["interactions".into()],
        sensitive_categories: if health {
            vec!["health".into()]
        } else {
            vec![]
        },
        recipients: vec![],
        primary: false,
    }
}

fn rec(at: OffsetDateTime) -> Recorded {
    Recorded {
        at,
        method: Method::Web,
        actor: "subject-portal".into(),
        policy_version: 4,
    }
}

fn subject() -> SubjectId {
    SubjectId::from_bytes([0xab; 32])
}

const EXPLICIT: Terms = Terms {
    valid_until: None,
    explicit: true,
};

fn until(valid_until: OffsetDateTime, explicit: bool) -> Terms {
    Terms {
        valid_until: Some(valid_until),
        explicit,
    }
}

/// A node key and one subject's history.
struct Fx {
    key: SigningKey,
    h: ConsentHistory,
}

impl Fx {
    fn new() -> Self {
        Fx {
            key: SigningKey::generate().unwrap(),
            h: ConsentHistory::new(),
        }
    }

    fn issuer(key: &SigningKey) -> ReceiptIssuer<'_> {
        ReceiptIssuer::new(
            key,
            controller(),
            "CN",
            "https://example.org/privacy",
            "amble",
        )
    }

    fn give(
        &mut self,
        p: &PurposeInfo,
        terms: Terms,
        r: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.h
            .give(&Self::issuer(&self.key), &subject(), p, terms, r)
    }

    fn withdraw(&mut self, p: &PurposeInfo, r: Recorded) -> Result<SignedReceipt, ConsentError> {
        self.h.withdraw(&Self::issuer(&self.key), &subject(), p, r)
    }

    fn expire(&mut self, p: &PurposeInfo, r: Recorded) -> Result<SignedReceipt, ConsentError> {
        self.h.expire(&Self::issuer(&self.key), &subject(), p, r)
    }

    fn assist(
        &mut self,
        level: AssistanceLevel,
        r: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.h
            .set_ai_assistance(&Self::issuer(&self.key), &subject(), level, r)
    }
}

#[test]
fn state_is_derived_from_the_latest_event_at_the_time_asked() {
    let mut fx = Fx::new();
    let p = purpose("train.intent", false);
    assert_eq!(
        fx.h.state("train.intent", datetime!(2026-01-01 0:00 UTC)),
        ConsentState::Never
    );
    fx.give(
        &p,
        until(datetime!(2026-12-31 0:00 UTC), true),
        rec(datetime!(2026-02-01 0:00 UTC)),
    )
    .unwrap();
    fx.withdraw(&p, rec(datetime!(2026-03-01 0:00 UTC)))
        .unwrap();
    fx.give(&p, Terms::default(), rec(datetime!(2026-04-01 0:00 UTC)))
        .unwrap();
    let h = &fx.h;
    assert_eq!(
        h.state("train.intent", datetime!(2026-01-31 0:00 UTC)),
        ConsentState::Never
    );
    assert_eq!(
        h.state("train.intent", datetime!(2026-02-15 0:00 UTC)),
        ConsentState::Given {
            since: datetime!(2026-02-01 0:00 UTC),
            valid_until: Some(datetime!(2026-12-31 0:00 UTC)),
            explicit: true
        }
    );
    assert_eq!(
        h.state("train.intent", datetime!(2026-03-01 0:00 UTC)),
        ConsentState::Withdrawn {
            at: datetime!(2026-03-01 0:00 UTC)
        }
    );
    assert!(
        h.state("train.intent", datetime!(2026-04-01 0:00 UTC))
            .is_given()
    );
    assert!(
        !h.state("train.intent", datetime!(2026-04-01 0:00 UTC))
            .is_explicitly_given()
    );
    assert_eq!(
        h.state("analytics", datetime!(2026-05-01 0:00 UTC)),
        ConsentState::Never
    );
    assert_eq!(
        h.state("train.intent", datetime!(2026-03-05 0:00 UTC))
            .to_string(),
        "withdrawn on 2026-03-01"
    );
}

#[test]
fn given_consent_past_valid_until_reads_as_expired() {
    let mut fx = Fx::new();
    let p = purpose("analytics", false);
    fx.give(
        &p,
        until(datetime!(2026-06-30 0:00 UTC), false),
        rec(datetime!(2026-01-01 0:00 UTC)),
    )
    .unwrap();
    assert!(
        fx.h.state("analytics", datetime!(2026-06-29 23:59 UTC))
            .is_given()
    );
    let s = fx.h.state("analytics", datetime!(2026-06-30 0:00 UTC));
    assert_eq!(
        s,
        ConsentState::Expired {
            at: datetime!(2026-06-30 0:00 UTC)
        }
    );
    assert_eq!(s.dpv(), "dpv:ConsentExpired");
    // An expired consent cannot be withdrawn: there is nothing in force.
    let err = fx
        .withdraw(&p, rec(datetime!(2026-07-01 0:00 UTC)))
        .unwrap_err();
    assert!(matches!(err, ConsentError::NotGiven { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "consent for analytics is not currently given (expired on 2026-06-30), so there is nothing to withdraw"
    );
}

#[test]
fn explicit_expiry_event_ends_a_consent() {
    let mut fx = Fx::new();
    let p = purpose("support", false);
    fx.give(&p, Terms::default(), rec(datetime!(2026-01-01 0:00 UTC)))
        .unwrap();
    let r = fx.expire(&p, rec(datetime!(2026-02-01 0:00 UTC))).unwrap();
    assert_eq!(
        r.receipt().amble_event.dpv_state.as_deref(),
        Some("dpv:ConsentExpired")
    );
    assert_eq!(
        fx.h.state("support", datetime!(2026-02-02 0:00 UTC)),
        ConsentState::Expired {
            at: datetime!(2026-02-01 0:00 UTC)
        }
    );
    assert_eq!(
        fx.h.consent_events().last().unwrap().kind,
        ConsentEventKind::Expired
    );
}

#[test]
fn changes_out_of_time_order_or_without_actor_are_refused_and_not_recorded() {
    let mut fx = Fx::new();
    let p = purpose("support", false);
    let march = datetime!(2026-03-01 0:00 UTC);
    fx.give(&p, Terms::default(), rec(datetime!(2026-02-01 0:00 UTC)))
        .unwrap();
    let err = fx
        .withdraw(&p, rec(datetime!(2026-01-01 0:00 UTC)))
        .unwrap_err();
    assert!(matches!(err, ConsentError::OutOfOrder { .. }), "{err}");
    let mut no_actor = rec(march);
    no_actor.actor = " ".into();
    assert!(matches!(
        fx.withdraw(&p, no_actor),
        Err(ConsentError::MissingActor)
    ));
    let bad = purpose("Bad Purpose", false);
    assert!(matches!(
        fx.give(&bad, Terms::default(), rec(march)),
        Err(ConsentError::BadPurpose(_))
    ));
    let err = fx
        .give(&p, until(datetime!(2026-01-01 0:00 UTC), false), rec(march))
        .unwrap_err();
    assert!(matches!(err, ConsentError::ValidUntilNotAfterGiven { .. }));
    assert_eq!(fx.h.consent_events().len(), 1);
}

#[test]
fn history_round_trips_through_json_bytes() {
    let mut fx = Fx::new();
    fx.give(
        &purpose("support", true),
        until(datetime!(2027-01-01 0:00 UTC), true),
        rec(datetime!(2026-01-01 0:00 UTC)),
    )
    .unwrap();
    fx.assist(
        AssistanceLevel::AiSuggests,
        rec(datetime!(2026-01-02 0:00 UTC)),
    )
    .unwrap();
    let back = ConsentHistory::from_json_bytes(&fx.h.to_json_bytes()).unwrap();
    assert_eq!(back, fx.h);
    assert!(matches!(
        ConsentHistory::from_json_bytes(b"{\"format\":1}"),
        Err(ConsentError::Decode(_))
    ));
    assert!(matches!(
        ConsentHistory::from_json_bytes(b"{\"format\":2,\"consent\":[]}"),
        Err(ConsentError::UnsupportedFormat(2))
    ));
}

#[test]
fn ai_assistance_level_is_derived_and_defaults_to_human_only() {
    let mut fx = Fx::new();
    assert_eq!(
        fx.h.ai_assistance(datetime!(2026-01-01 0:00 UTC)),
        AssistanceLevel::HumanOnly
    );
    let r = fx
        .assist(
            AssistanceLevel::AiAnswers,
            rec(datetime!(2026-01-02 0:00 UTC)),
        )
        .unwrap();
    assert_eq!(
        r.receipt().amble_event.ai_assistance.as_deref(),
        Some("ai_answers")
    );
    fx.assist(
        AssistanceLevel::AiSuggests,
        rec(datetime!(2026-01-03 0:00 UTC)),
    )
    .unwrap();
    assert_eq!(
        fx.h.ai_assistance(datetime!(2026-01-02 12:00 UTC)),
        AssistanceLevel::AiAnswers
    );
    assert_eq!(
        fx.h.ai_assistance(datetime!(2026-01-03 0:00 UTC)),
        AssistanceLevel::AiSuggests
    );
    assert_eq!(
        "ai_suggests".parse::<AssistanceLevel>().unwrap(),
        AssistanceLevel::AiSuggests
    );
    let err = "robots".parse::<AssistanceLevel>().unwrap_err();
    assert!(
        err.to_string()
            .contains("human_only, ai_suggests, ai_answers"),
        "{err}"
    );
    assert_eq!("cli".parse::<Method>().unwrap(), Method::Cli);
}

fn a_receipt() -> (SigningKey, Vec<u8>) {
    let mut fx = Fx::new();
    let r = fx
        .give(
            &purpose("support", true),
            until(datetime!(2027-01-01 0:00 UTC), true),
            rec(datetime!(2026-01-01 0:00 UTC)),
        )
        .unwrap();
    (fx.key, r.into_bytes())
}

#[test]
fn receipt_verifies_and_carries_kantara_fields() {
    let (key, bytes) = a_receipt();
    let r = verify_receipt(&bytes, &key.verifying_key()).unwrap();
    assert_eq!(r.version, "KI-CR-v1.1.0");
    assert_eq!(r.pii_principal_id, subject().to_hex());
    assert_eq!(r.collection_method, "web");
    assert_eq!(
        r.consent_timestamp,
        datetime!(2026-01-01 0:00 UTC).unix_timestamp()
    );
    assert!(r.sensitive);
    assert_eq!(r.spi_cat, ["health"]);
    assert_eq!(r.services[0].purposes[0].consent_type, "EXPLICIT");
    assert_eq!(r.services[0].purposes[0].purpose_category, ["support"]);
    assert_eq!(r.amble_event.event, "given");
    assert_eq!(r.amble_event.policy_version, 4);
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    for field in [
        "version",
        "jurisdiction",
        "consentTimestamp",
        "collectionMethod",
        "consentReceiptID",
        "piiPrincipalId",
        "piiControllers",
        "policyUrl",
        "services",
        "sensitive",
        "spiCat",
    ] {
        assert!(v["receipt"].get(field).is_some(), "{field} missing");
    }
}

#[test]
fn receipt_from_another_key_or_reformatted_is_refused() {
    let (key, bytes) = a_receipt();
    let other = SigningKey::generate().unwrap();
    assert!(matches!(
        verify_receipt(&bytes, &other.verifying_key()),
        Err(ReceiptError::WrongKey { .. })
    ));
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let pretty = serde_json::to_vec_pretty(&value).unwrap();
    assert!(matches!(
        verify_receipt(&pretty, &key.verifying_key()),
        Err(ReceiptError::NotCanonical)
    ));
    let mut nl = bytes.clone();
    nl.push(b'\n');
    assert!(verify_receipt(&nl, &key.verifying_key()).is_err());
}

#[test]
fn canonical_json_sorts_members_and_escapes_like_jcs() {
    let v = json!({"b": 1, "a": [true, null, "x\u{1}\"\\\n"], "é": {"z": -3, "y": "ü"}});
    assert_eq!(
        String::from_utf8(canonical_json(&v)).unwrap(),
        "{\"a\":[true,null,\"x\\u0001\\\"\\\\\\n\"],\"b\":1,\"é\":{\"y\":\"ü\",\"z\":-3}}"
    );
}

#[test]
fn ts27560_export_lists_events_states_and_parties() {
    let mut fx = Fx::new();
    let p = purpose("train.intent", false);
    fx.give(&p, Terms::default(), rec(datetime!(2026-01-01 0:00 UTC)))
        .unwrap();
    fx.withdraw(&p, rec(datetime!(2026-11-02 0:00 UTC)))
        .unwrap();
    fx.give(
        &purpose("support", false),
        EXPLICIT,
        rec(datetime!(2026-11-03 0:00 UTC)),
    )
    .unwrap();
    let v = to_ts27560_at(
        &fx.h,
        &subject(),
        &controller(),
        datetime!(2026-11-04 0:00 UTC),
    );
    assert_eq!(v["header"]["schema"], "ISO/IEC TS 27560:2023");
    assert_eq!(v["header"]["subject"], subject().to_hex());
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[1]["eventType"], "dpv:ConsentWithdrawn");
    let processing = v["processing"].as_array().unwrap();
    let ti = processing
        .iter()
        .find(|p| p["purpose"] == "train.intent")
        .unwrap();
    assert_eq!(ti["consentStatus"], "dpv:ConsentWithdrawn");
    let su = processing
        .iter()
        .find(|p| p["purpose"] == "support")
        .unwrap();
    assert_eq!(su["consentType"], "dpv:ExplicitlyExpressedConsent");
    assert_eq!(v["parties"][0]["role"], "dpv:DataController");
    assert_eq!(v["parties"][1]["id"], subject().to_hex());
    assert_eq!(v["aiAssistance"], "human_only");
}

#[test]
fn ts27560_export_carries_restrictions_and_objections_in_the_order_they_happened() {
    let mut fx = Fx::new();
    let analytics = purpose("analytics", false);
    let issuer = Fx::issuer(&fx.key);
    // A whole second, then a fraction of the same second: as text "…:01Z" sorts after
    // "…:01.5Z", as instants it comes first.
    fx.h.set_restriction(
        &issuer,
        &subject(),
        true,
        rec(datetime!(2026-11-01 0:00:01 UTC)),
    )
    .unwrap();
    fx.h.set_objection(
        &issuer,
        &subject(),
        &analytics,
        true,
        rec(datetime!(2026-11-01 0:00:01.5 UTC)),
    )
    .unwrap();
    let v = to_ts27560_at(
        &fx.h,
        &subject(),
        &controller(),
        datetime!(2026-11-04 0:00 UTC),
    );
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["amble:RestrictionRequested", "amble:ObjectionRaised"]
    );
    assert_eq!(v["events"][1]["purpose"], "analytics");
    assert_eq!(v["restrictedSince"], "2026-11-01T00:00:01Z");
    assert_eq!(v["objections"], json!(["analytics"]));
}

thread_local! {
    static RECEIPT: (std::rc::Rc<SigningKey>, Vec<u8>) = {
        let (k, b) = a_receipt();
        (std::rc::Rc::new(k), b)
    };
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn receipt_with_any_one_byte_changed_does_not_verify(pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (key, bytes) = RECEIPT.with(|r| r.clone());
        let mut bad = bytes.clone();
        let i = pos.index(bad.len());
        bad[i] ^= flip;
        prop_assert!(verify_receipt(&bad, &key.verifying_key()).is_err(), "byte {} ^ {:#04x} still verifies", i, flip);
    }
}

#[test]
fn every_single_byte_change_of_a_receipt_is_detected() {
    // Exhaustive companion to the property test: every position, three different changes.
    let (key, bytes) = a_receipt();
    let vk = key.verifying_key();
    assert!(verify_receipt(&bytes, &vk).is_ok());
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x20, 0x80] {
            let mut bad = bytes.clone();
            bad[i] ^= flip;
            assert!(
                verify_receipt(&bad, &vk).is_err(),
                "byte {i} ^ {flip:#04x} still verifies"
            );
        }
    }
}

#[test]
fn restriction_and_objection_are_recorded_with_receipts_and_refused_when_they_change_nothing() {
    let mut fx = Fx::new();
    let issuer = Fx::issuer(&fx.key);
    let li = purpose("analytics", false);
    let r =
        fx.h.set_restriction(
            &issuer,
            &subject(),
            true,
            rec(datetime!(2026-11-01 09:00 UTC)),
        )
        .unwrap();
    let receipt = verify_receipt(r.bytes(), &fx.key.verifying_key()).unwrap();
    assert_eq!(receipt.amble_event.event, "restriction");
    assert!(matches!(
        fx.h.set_restriction(
            &issuer,
            &subject(),
            true,
            rec(datetime!(2026-11-01 10:00 UTC))
        ),
        Err(ConsentError::Unchanged(_))
    ));
    assert_eq!(
        fx.h.restricted(datetime!(2026-11-01 09:30 UTC)),
        Some(datetime!(2026-11-01 09:00 UTC))
    );
    assert_eq!(fx.h.restricted(datetime!(2026-11-01 08:00 UTC)), None);
    let o =
        fx.h.set_objection(
            &issuer,
            &subject(),
            &li,
            true,
            rec(datetime!(2026-11-02 09:00 UTC)),
        )
        .unwrap();
    let receipt = verify_receipt(o.bytes(), &fx.key.verifying_key()).unwrap();
    assert_eq!(receipt.amble_event.event, "objection");
    assert_eq!(receipt.amble_event.purpose_id.as_deref(), Some("analytics"));
    assert!(
        fx.h.objected("analytics", datetime!(2026-11-03 00:00 UTC))
            .is_some()
    );
    assert!(
        fx.h.objected("support", datetime!(2026-11-03 00:00 UTC))
            .is_none()
    );
    fx.h.set_restriction(
        &issuer,
        &subject(),
        false,
        rec(datetime!(2026-11-04 09:00 UTC)),
    )
    .unwrap();
    assert_eq!(fx.h.restricted(datetime!(2026-11-05 00:00 UTC)), None);
    // The history keeps every change and reads back the same.
    let back = ConsentHistory::from_json_bytes(&fx.h.to_json_bytes()).unwrap();
    assert_eq!(back, fx.h);
    assert_eq!(back.right_events().len(), 3);
}
