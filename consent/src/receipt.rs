//! Signed consent receipts (Kantara Consent Receipt 1.1 fields, Ed25519 signature).
//!
//! A receipt file is the canonical JSON (see [`canonical_json`]) of
//! `{"receipt": {…}, "signature": {"alg": "EdDSA", "keyId": …, "sig": …}}`. The signature covers
//! [`RECEIPT_DOMAIN`] followed by the canonical JSON of the `receipt` object. A verifier parses
//! the file, re-serialises it canonically and requires the result to equal the file byte for
//! byte before it checks the signature; together with strict base64 for the signature this makes
//! every single-byte change to a receipt file detectable.

use crate::history::{AssistanceEvent, ConsentEvent, Right, RightEvent};
use crate::{PurposeInfo, ReceiptError, rfc3339};
use amble_crypto::{SigningKey, SubjectId, VerifyingKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Kantara Consent Receipt specification version the receipts follow.
pub const KANTARA_VERSION: &str = "KI-CR-v1.1.0";
/// Domain separation: the node key also signs audit checkpoints, never with this prefix.
pub const RECEIPT_DOMAIN: &[u8] = b"amble/consent-receipt/v1\n";
const ALG: &str = "EdDSA";

/// A data controller as Kantara's `piiControllers` entries name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Controller {
    /// The organisation's name.
    pub pii_controller: String,
    /// A person or office to contact about privacy.
    pub contact: String,
    /// Its postal address.
    pub address: String,
    /// Its privacy e-mail address.
    pub email: String,
    /// Its privacy telephone number.
    pub phone: String,
    /// Its web page, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_controller_url: Option<String>,
}

/// A purpose inside a receipt's service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptPurpose {
    /// Plain-language description, as shown to the person.
    pub purpose: String,
    /// The purpose id from the policy (`train.intent`, …).
    pub purpose_category: Vec<String>,
    /// `EXPLICIT` or `IMPLICIT`.
    pub consent_type: String,
    /// The categories of personal data the purpose reads (its collections).
    pub pii_category: Vec<String>,
    /// Whether this is the service's primary purpose.
    pub primary_purpose: bool,
    /// When and how the consent ends (withdrawal at any time, its expiry).
    pub termination: String,
    /// Whether data is disclosed to third parties under it.
    pub third_party_disclosure: bool,
    /// Who those third parties are (the purpose's recipients).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub third_party_name: Vec<String>,
}

/// A service of the controller, with the purposes the receipt covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptService {
    /// The service's name.
    pub service: String,
    /// The purposes of this receipt.
    pub purposes: Vec<ReceiptPurpose>,
}

/// What changed, in amble's terms (an extension; Kantara receipts allow extra fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiptEvent {
    /// `given`, `withdrawn`, `expired`, `ai_assistance`, `restriction`,
    /// `restriction_lifted`, `objection` or `objection_withdrawn`.
    pub event: String,
    /// The purpose id the change is about (none for an AI-assistance change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose_id: Option<String>,
    /// The W3C DPV state the consent is in after this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpv_state: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// For `given`: when the consent lapses on its own (RFC 3339), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// Whether the consent was given explicitly (what special categories need).
    pub explicit: bool,
    /// The policy version in force when the change was recorded.
    pub policy_version: u64,
    /// Who recorded the change (an agent id, `subject-portal`, …).
    pub actor: String,
    /// For `ai_assistance`: the level chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai_assistance: Option<String>,
}

/// A consent receipt's content (verified, when it comes from [`verify_receipt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receipt {
    /// The Kantara Consent Receipt specification version.
    pub version: String,
    /// The jurisdiction whose law applies.
    pub jurisdiction: String,
    /// Seconds since the Unix epoch, as Kantara specifies.
    pub consent_timestamp: i64,
    /// How the consent was collected (app, web, agent, API, CLI).
    pub collection_method: String,
    /// A unique id for this receipt (a UUID v4).
    #[serde(rename = "consentReceiptID")]
    pub consent_receipt_id: String,
    /// Standard base64 of the node's Ed25519 verifying key.
    pub public_key: String,
    /// The language of the receipt's texts.
    pub language: String,
    /// The subject's pseudonym in hex; never an external reference.
    pub pii_principal_id: String,
    /// The data controllers.
    pub pii_controllers: Vec<Controller>,
    /// Where the controller's privacy notice is.
    pub policy_url: String,
    /// The services and purposes the receipt covers.
    pub services: Vec<ReceiptService>,
    /// Whether special categories of data are involved.
    pub sensitive: bool,
    /// Which special categories (e.g. `health`).
    pub spi_cat: Vec<String>,
    /// What changed (amble's extension).
    pub amble_event: ReceiptEvent,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptFile {
    receipt: Value,
    signature: SignatureBlock,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignatureBlock {
    alg: String,
    key_id: String,
    sig: String,
}

/// A receipt together with the exact bytes of its signed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    receipt: Receipt,
    bytes: Vec<u8>,
}

impl SignedReceipt {
    /// The receipt's content.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }
    /// The receipt file: hand these bytes to the subject unchanged.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The receipt file's bytes, exactly as signed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Signs receipts for one node: its key and the facts every receipt repeats.
#[derive(Debug)]
pub struct ReceiptIssuer<'k> {
    key: &'k SigningKey,
    controller: Controller,
    jurisdiction: String,
    policy_url: String,
    service: String,
    language: String,
}

impl<'k> ReceiptIssuer<'k> {
    /// `jurisdiction` is where the controller is established (e.g. `DE`, `CN`), `policy_url`
    /// the privacy notice the subject was shown, `service` the service's name in receipts.
    pub fn new(
        key: &'k SigningKey,
        controller: Controller,
        jurisdiction: impl Into<String>,
        policy_url: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        ReceiptIssuer {
            key,
            controller,
            jurisdiction: jurisdiction.into(),
            policy_url: policy_url.into(),
            service: service.into(),
            language: "en".to_owned(),
        }
    }

    /// The language of the receipt's texts (BCP 47), `en` unless set.
    pub fn with_language(mut self, language: impl Into<String>) -> Self {
        self.language = language.into();
        self
    }

    fn base(
        &self,
        subject: &SubjectId,
        (at, method, receipt_id): (time::OffsetDateTime, crate::Method, &str),
        services: Vec<ReceiptService>,
        sensitive: Vec<String>,
        event: ReceiptEvent,
    ) -> Receipt {
        Receipt {
            version: KANTARA_VERSION.to_owned(),
            jurisdiction: self.jurisdiction.clone(),
            consent_timestamp: at.unix_timestamp(),
            collection_method: method.as_str().to_owned(),
            consent_receipt_id: receipt_id.to_owned(),
            public_key: self.key.verifying_key().to_base64(),
            language: self.language.clone(),
            pii_principal_id: subject.to_hex(),
            pii_controllers: vec![self.controller.clone()],
            policy_url: self.policy_url.clone(),
            services,
            sensitive: !sensitive.is_empty(),
            spi_cat: sensitive,
            amble_event: event,
        }
    }

    pub(crate) fn issue_consent(
        &self,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        e: &ConsentEvent,
    ) -> SignedReceipt {
        let termination = match e.valid_until {
            Some(u) => format!(
                "until {} or until you withdraw it, whichever comes first",
                crate::date_of(u)
            ),
            None => "until you withdraw it".to_owned(),
        };
        let services = vec![ReceiptService {
            service: self.service.clone(),
            purposes: vec![ReceiptPurpose {
                purpose: purpose.description.clone(),
                purpose_category: vec![purpose.id.clone()],
                consent_type: if e.explicit { "EXPLICIT" } else { "IMPLICIT" }.to_owned(),
                pii_category: purpose.pii_categories.clone(),
                primary_purpose: purpose.primary,
                termination,
                third_party_disclosure: !purpose.recipients.is_empty(),
                third_party_name: purpose.recipients.clone(),
            }],
        }];
        let event = ReceiptEvent {
            event: e.kind.as_str().to_owned(),
            purpose_id: Some(e.purpose.clone()),
            dpv_state: Some(e.kind.dpv().to_owned()),
            at: rfc3339(e.at),
            valid_until: e.valid_until.map(rfc3339),
            explicit: e.explicit,
            policy_version: e.policy_version,
            actor: e.actor.clone(),
            ai_assistance: None,
        };
        let r = self.base(
            subject,
            (e.at, e.method, &e.receipt_id),
            services,
            purpose.sensitive_categories.clone(),
            event,
        );
        self.sign(r)
    }

    pub(crate) fn issue_assistance(
        &self,
        subject: &SubjectId,
        e: &AssistanceEvent,
    ) -> SignedReceipt {
        let services = vec![ReceiptService {
            service: self.service.clone(),
            purposes: vec![ReceiptPurpose {
                purpose: format!("AI assistance: {}", e.level.description()),
                purpose_category: vec!["ai_assistance".to_owned()],
                consent_type: "EXPLICIT".to_owned(),
                pii_category: vec!["interactions".to_owned()],
                primary_purpose: false,
                termination: "until you choose another level".to_owned(),
                third_party_disclosure: false,
                third_party_name: Vec::new(),
            }],
        }];
        let event = ReceiptEvent {
            event: "ai_assistance".to_owned(),
            purpose_id: None,
            dpv_state: None,
            at: rfc3339(e.at),
            valid_until: None,
            explicit: true,
            policy_version: e.policy_version,
            actor: e.actor.clone(),
            ai_assistance: Some(e.level.as_str().to_owned()),
        };
        let r = self.base(
            subject,
            (e.at, e.method, &e.receipt_id),
            services,
            Vec::new(),
            event,
        );
        self.sign(r)
    }

    pub(crate) fn issue_right(
        &self,
        subject: &SubjectId,
        purpose: Option<&PurposeInfo>,
        e: &RightEvent,
    ) -> SignedReceipt {
        let (event, what, termination) = match (e.right, e.active) {
            (Right::Restriction, true) => (
                "restriction",
                "Restriction of processing (GDPR Art. 18): your data is kept but used for \
                 nothing except storage and legal obligations"
                    .to_owned(),
                "until you lift it",
            ),
            (Right::Restriction, false) => (
                "restriction_lifted",
                "Restriction of processing lifted".to_owned(),
                "in force from now",
            ),
            (Right::Objection, true) => (
                "objection",
                format!(
                    "Objection (GDPR Art. 21) to: {}",
                    purpose.map_or("", |p| p.description.as_str())
                ),
                "until you withdraw it",
            ),
            (Right::Objection, false) => (
                "objection_withdrawn",
                format!(
                    "Objection withdrawn for: {}",
                    purpose.map_or("", |p| p.description.as_str())
                ),
                "in force from now",
            ),
        };
        let services = vec![ReceiptService {
            service: self.service.clone(),
            purposes: vec![ReceiptPurpose {
                purpose: what,
                purpose_category: vec![
                    e.purpose
                        .clone()
                        .unwrap_or_else(|| e.right.as_str().to_owned()),
                ],
                consent_type: "EXPLICIT".to_owned(),
                pii_category: purpose.map_or_else(Vec::new, |p| p.pii_categories.clone()),
                primary_purpose: false,
                termination: termination.to_owned(),
                third_party_disclosure: false,
                third_party_name: Vec::new(),
            }],
        }];
        let receipt_event = ReceiptEvent {
            event: event.to_owned(),
            purpose_id: e.purpose.clone(),
            dpv_state: None,
            at: rfc3339(e.at),
            valid_until: None,
            explicit: true,
            policy_version: e.policy_version,
            actor: e.actor.clone(),
            ai_assistance: None,
        };
        let r = self.base(
            subject,
            (e.at, e.method, &e.receipt_id),
            services,
            Vec::new(),
            receipt_event,
        );
        self.sign(r)
    }

    fn sign(&self, receipt: Receipt) -> SignedReceipt {
        // A struct of strings, integers and booleans always serialises.
        let body = serde_json::to_value(&receipt).unwrap_or(Value::Null);
        let sig = self.key.sign(&signed_message(&body));
        let file = ReceiptFile {
            receipt: body,
            signature: SignatureBlock {
                alg: ALG.to_owned(),
                key_id: self.key.verifying_key().to_base64(),
                sig: STANDARD.encode(sig),
            },
        };
        let bytes = canonical_json(&serde_json::to_value(&file).unwrap_or(Value::Null));
        SignedReceipt { receipt, bytes }
    }
}

fn signed_message(body: &Value) -> Vec<u8> {
    let mut m = RECEIPT_DOMAIN.to_vec();
    m.extend_from_slice(&canonical_json(body));
    m
}

/// Checks a receipt file against the node's verifying key and returns its content.
///
/// Rejects the file unless it is exactly the canonical form, signed by `key`, with the
/// receipt layout; any one changed byte fails one of these checks.
pub fn verify_receipt(file: &[u8], key: &VerifyingKey) -> Result<Receipt, ReceiptError> {
    let value: Value = serde_json::from_slice(file).map_err(ReceiptError::NotJson)?;
    if canonical_json(&value) != file {
        return Err(ReceiptError::NotCanonical);
    }
    let parsed: ReceiptFile =
        serde_json::from_value(value).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    let expected = key.to_base64();
    if parsed.signature.alg != ALG {
        return Err(ReceiptError::Malformed(format!(
            "signature algorithm `{}` is not {ALG}",
            parsed.signature.alg
        )));
    }
    if parsed.signature.key_id != expected {
        return Err(ReceiptError::WrongKey {
            expected,
            found: parsed.signature.key_id,
        });
    }
    // The standard engine rejects non-zero trailing bits, so each signature has one encoding.
    let sig = STANDARD
        .decode(parsed.signature.sig.as_bytes())
        .map_err(|_| ReceiptError::BadSignature)?;
    key.verify(&signed_message(&parsed.receipt), &sig)
        .map_err(|_| ReceiptError::BadSignature)?;
    let receipt: Receipt = serde_json::from_value(parsed.receipt)
        .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if receipt.public_key != expected {
        return Err(ReceiptError::WrongKey {
            expected,
            found: receipt.public_key,
        });
    }
    Ok(receipt)
}

/// Canonical JSON after RFC 8785 (JCS), the bytes every signed document of amble covers
/// (consent receipts and exports): no whitespace, object members sorted by the UTF-16 code
/// units of their names, strings with only the escapes JSON requires, and every number written
/// the way ECMAScript writes an IEEE 754 double (`1e+30`, `0.002`, `333333333.3333333`), so any
/// JCS implementation reproduces the bytes. Records keep their numbers exact as doubles
/// (`amble_node` refuses integers beyond ±2^53 at append), so no two documents share a form.
///
/// Done by `serde_json_canonicalizer`, tested against the RFC's published vectors
/// (`consent/tests/jcs.rs`). It fails only on a number that is not finite or a failed write,
/// neither of which a `serde_json::Value` written to memory can have; the empty result then
/// matches no file and verifies no signature.
pub fn canonical_json(v: &Value) -> Vec<u8> {
    serde_json_canonicalizer::to_vec(v).unwrap_or_default()
}

/// A fresh receipt id: a random UUID (version 4) as Kantara examples use.
pub(crate) fn new_receipt_id() -> Result<String, amble_crypto::CryptoError> {
    let mut b = [0u8; 16];
    amble_crypto::random_bytes(&mut b)?;
    Ok(uuid::Builder::from_random_bytes(b)
        .into_uuid()
        .hyphenated()
        .to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_receipt_id_is_a_fresh_version_4_uuid() {
        let a = super::new_receipt_id().unwrap();
        let b = super::new_receipt_id().unwrap();
        assert_ne!(a, b);
        let u = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(u.get_version_num(), 4);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a, u.hyphenated().to_string(), "lower-case, hyphenated");
    }
}
