//! Export of a consent history as an ISO/IEC TS 27560 consent record, with W3C DPV terms.
//!
//! TS 27560 organises a record into a header, the processing it concerns, the parties and the
//! events; DPV names the states (`dpv:ConsentGiven`, `dpv:ConsentWithdrawn`, …). amble writes
//! one record per subject, covering every purpose in the history.

use crate::{ConsentHistory, Controller, rfc3339};
use amble_crypto::SubjectId;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The subject's consent record as TS 27560-shaped JSON, with states derived at the current time.
pub fn to_ts27560(history: &ConsentHistory, subject: &SubjectId, controller: &Controller) -> Value {
    to_ts27560_at(history, subject, controller, OffsetDateTime::now_utc())
}

/// As [`to_ts27560`], with states derived at `now` (for reproducible exports and tests).
pub fn to_ts27560_at(
    history: &ConsentHistory,
    subject: &SubjectId,
    controller: &Controller,
    now: OffsetDateTime,
) -> Value {
    let processing: Vec<Value> = history
        .purposes()
        .into_iter()
        .map(|p| {
            let state = history.state(p, now);
            let mut v = json!({
                "purpose": p,
                "legalBasis": "dpv:Consent",
                "consentStatus": state.dpv(),
                "statusText": state.to_string(),
            });
            if let crate::ConsentState::Given {
                explicit,
                valid_until,
                ..
            } = state
            {
                v["consentType"] = json!(if explicit {
                    "dpv:ExplicitlyExpressedConsent"
                } else {
                    "dpv:InformedConsent"
                });
                if let Some(u) = valid_until {
                    v["expiry"] = json!(rfc3339(u));
                }
            }
            v
        })
        .collect();
    let consent_events = history.consent_events().iter().map(|e| {
        let mut v = json!({
            "eventType": e.kind.dpv(),
            "purpose": e.purpose,
            "time": rfc3339(e.at),
            "method": e.method.as_str(),
            "recordedBy": e.actor,
            "explicit": e.explicit,
            "policyVersion": e.policy_version,
            "receiptId": e.receipt_id,
        });
        if let Some(u) = e.valid_until {
            v["validUntil"] = json!(rfc3339(u));
        }
        (e.at, v)
    });
    let assistance_events = history.assistance_events().iter().map(|e| {
        let v = json!({
            "eventType": "amble:AIAssistanceLevelSet",
            "aiAssistance": e.level.as_str(),
            "time": rfc3339(e.at),
            "method": e.method.as_str(),
            "recordedBy": e.actor,
            "policyVersion": e.policy_version,
            "receiptId": e.receipt_id,
        });
        (e.at, v)
    });
    let right_events = history.right_events().iter().map(|e| {
        let event = match (e.right, e.active) {
            (crate::Right::Restriction, true) => "amble:RestrictionRequested",
            (crate::Right::Restriction, false) => "amble:RestrictionLifted",
            (crate::Right::Objection, true) => "amble:ObjectionRaised",
            (crate::Right::Objection, false) => "amble:ObjectionWithdrawn",
        };
        let mut v = json!({
            "eventType": event,
            "time": rfc3339(e.at),
            "method": e.method.as_str(),
            "recordedBy": e.actor,
            "policyVersion": e.policy_version,
            "receiptId": e.receipt_id,
        });
        if let Some(p) = &e.purpose {
            v["purpose"] = json!(p);
        }
        (e.at, v)
    });
    // In time order by the instants themselves: RFC 3339 text with a varying number of
    // fractional digits does not sort as text ("…48Z" after "…48.5Z").
    let mut events: Vec<(OffsetDateTime, Value)> = consent_events
        .chain(assistance_events)
        .chain(right_events)
        .collect();
    events.sort_by_key(|(at, _)| *at);
    let events: Vec<Value> = events.into_iter().map(|(_, v)| v).collect();
    json!({
        "header": {
            "schema": "ISO/IEC TS 27560:2023",
            "vocabulary": "https://w3id.org/dpv",
            "recordType": "consent record",
            "subject": subject.to_hex(),
            "generatedAt": rfc3339(now),
        },
        "processing": processing,
        "parties": [
            {
                "role": "dpv:DataController",
                "name": controller.pii_controller,
                "contact": controller.contact,
                "address": controller.address,
                "email": controller.email,
                "phone": controller.phone,
                "url": controller.pii_controller_url,
            },
            { "role": "dpv:DataSubject", "id": subject.to_hex() },
        ],
        "events": events,
        "aiAssistance": history.ai_assistance(now).as_str(),
        "restrictedSince": history.restricted(now).map(rfc3339),
        "objections": history
            .right_events()
            .iter()
            .filter_map(|e| e.purpose.as_deref())
            .filter(|p| history.objected(p, now).is_some())
            .collect::<std::collections::BTreeSet<_>>(),
    })
}
