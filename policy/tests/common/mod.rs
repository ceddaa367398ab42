#![allow(dead_code)]

use amble_consent::{ConsentHistory, Controller, Method, ReceiptIssuer, Recorded, Terms};
use amble_crypto::{SigningKey, SubjectId};
use amble_policy::{Decision, Policy, Role, decide};
use time::OffsetDateTime;

pub const EXAMPLE: &str = include_str!("../../../deploy/policy.example.toml");

pub fn example() -> Policy {
    Policy::from_toml_str(EXAMPLE, "deploy/policy.example.toml").unwrap()
}

pub fn subject() -> SubjectId {
    SubjectId::from_bytes([7; 32])
}

pub fn controller() -> Controller {
    Controller {
        pii_controller: "Example Bank".into(),
        contact: "Data Protection Office".into(),
        address: "1 Example Road, Shanghai".into(),
        email: "privacy@example.org".into(),
        phone: "+86 21 0000 0000".into(),
        pii_controller_url: None,
    }
}

/// A consent history plus what it takes to record changes in it.
pub struct Subject {
    pub key: SigningKey,
    pub history: ConsentHistory,
    pub policy: Policy,
}

impl Subject {
    pub fn new() -> Self {
        Subject {
            key: SigningKey::generate().unwrap(),
            history: ConsentHistory::new(),
            policy: example(),
        }
    }

    /// Decides for this subject, with the role's name as the actor.
    pub fn decide(&self, role: Role, purpose: &str, now: OffsetDateTime) -> Decision {
        decide(
            &self.policy,
            role.as_str(),
            role,
            purpose,
            &self.history,
            now,
        )
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

    fn rec(&self, at: OffsetDateTime) -> Recorded {
        Recorded {
            at,
            method: Method::App,
            actor: "app-1".into(),
            policy_version: self.policy.version(),
        }
    }

    pub fn give(&mut self, purpose: &str, at: OffsetDateTime, terms: Terms) {
        let issuer = Self::issuer(&self.key);
        let info = self.policy.purpose_info(purpose).unwrap();
        let rec = self.rec(at);
        self.history
            .give(&issuer, &subject(), &info, terms, rec)
            .unwrap();
    }

    pub fn withdraw(&mut self, purpose: &str, at: OffsetDateTime) {
        let issuer = Self::issuer(&self.key);
        let info = self.policy.purpose_info(purpose).unwrap();
        let rec = self.rec(at);
        self.history
            .withdraw(&issuer, &subject(), &info, rec)
            .unwrap();
    }

    /// Restricts processing (`true`) or lifts the restriction.
    pub fn restrict(&mut self, active: bool, at: OffsetDateTime) {
        let issuer = Self::issuer(&self.key);
        let rec = self.rec(at);
        self.history
            .set_restriction(&issuer, &subject(), active, rec)
            .unwrap();
    }

    /// Objects to `purpose` (`true`) or withdraws the objection.
    pub fn object(&mut self, purpose: &str, active: bool, at: OffsetDateTime) {
        let issuer = Self::issuer(&self.key);
        let info = self.policy.purpose_info(purpose).unwrap();
        let rec = self.rec(at);
        self.history
            .set_objection(&issuer, &subject(), &info, active, rec)
            .unwrap();
    }
}

/// The example policy plus a purpose that fulfils a legal obligation (bank record keeping).
pub fn with_legal_obligation() -> Policy {
    let text = format!(
        "{EXAMPLE}\n[[purpose]]\nid = \"records.legal\"\ndescription = \"To keep the records \
         the law requires us to keep.\"\nlegal_basis = \"legal_obligation\"\nroles = [\"admin\"]\n\
         [purpose.read]\nevents = [\"kind\"]\n"
    );
    Policy::from_toml_str(&text, "example+legal").unwrap()
}
