//! The consent history of one subject and the states derived from it.

use crate::receipt::{ReceiptIssuer, SignedReceipt};
use crate::{ConsentError, PurposeInfo};
use amble_crypto::SubjectId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// The format number written into every serialised history.
pub const HISTORY_FORMAT: u32 = 1;

/// How a change reached the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The organisation's own app.
    App,
    /// The self-service web page.
    Web,
    /// A support agent recorded it on the subject's behalf.
    Agent,
    /// Another system through the node's API.
    Api,
    /// An operator with `amble subject …`.
    Cli,
}

impl Method {
    /// Every method, in declaration order.
    pub const ALL: [Method; 5] = [
        Method::App,
        Method::Web,
        Method::Agent,
        Method::Api,
        Method::Cli,
    ];

    /// The method's name as written in histories and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::App => "app",
            Method::Web => "web",
            Method::Agent => "agent",
            Method::Api => "api",
            Method::Cli => "cli",
        }
    }
}

/// The subject's choice of how much AI may do when they ask for help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssistanceLevel {
    /// Only people answer. The default until the subject chooses otherwise.
    HumanOnly,
    /// AI may draft an answer, a person confirms it before it is sent.
    AiSuggests,
    /// AI may answer directly where the policy's automation line allows it.
    AiAnswers,
}

impl AssistanceLevel {
    /// Every level, from the least automation to the most.
    pub const ALL: [AssistanceLevel; 3] = [
        AssistanceLevel::HumanOnly,
        AssistanceLevel::AiSuggests,
        AssistanceLevel::AiAnswers,
    ];

    /// The level's name as written in histories and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            AssistanceLevel::HumanOnly => "human_only",
            AssistanceLevel::AiSuggests => "ai_suggests",
            AssistanceLevel::AiAnswers => "ai_answers",
        }
    }

    /// A plain-language sentence for receipts and the self-service page.
    pub fn description(self) -> &'static str {
        match self {
            AssistanceLevel::HumanOnly => "only people answer your requests",
            AssistanceLevel::AiSuggests => {
                "AI may draft answers to your requests; a person checks each one before it is sent"
            }
            AssistanceLevel::AiAnswers => {
                "AI may answer routine requests directly; sensitive ones still go to a person"
            }
        }
    }
}

/// A name that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not a valid {what}; use one of: {expected}")]
pub struct UnknownValue {
    /// What was being named (`method`, `level`, …).
    pub what: &'static str,
    /// The name as given.
    pub given: String,
    /// Every accepted name, comma-separated.
    pub expected: String,
}

macro_rules! str_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        what: $what,
                        given: s.to_owned(),
                        expected: <$t>::ALL.map(|v| v.as_str()).join(", "),
                    })
            }
        }
    };
}
str_enum!(Method, "consent collection method");
str_enum!(AssistanceLevel, "AI-assistance level");

/// What happened to a consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentEventKind {
    /// The person gave consent.
    Given,
    /// The person withdrew it.
    Withdrawn,
    /// It lapsed.
    Expired,
}

impl ConsentEventKind {
    /// The kind's name as written in histories and receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentEventKind::Given => "given",
            ConsentEventKind::Withdrawn => "withdrawn",
            ConsentEventKind::Expired => "expired",
        }
    }

    /// The W3C DPV consent status this event moves the consent to.
    pub fn dpv(self) -> &'static str {
        match self {
            ConsentEventKind::Given => "dpv:ConsentGiven",
            ConsentEventKind::Withdrawn => "dpv:ConsentWithdrawn",
            ConsentEventKind::Expired => "dpv:ConsentExpired",
        }
    }
}

/// Who recorded a change, when, how, and under which policy version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The moment of recording, from the node's own clock, never a client's: a change dated in
    /// the future would not govern reads until then, and one dated before the last change is
    /// refused.
    pub at: OffsetDateTime,
    /// Through which channel.
    pub method: Method,
    /// The id of the person or service that recorded it (an agent id, `subject-portal`, …).
    pub actor: String,
    /// The policy version in force.
    pub policy_version: u64,
}

/// One recorded change of one consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentEvent {
    /// The purpose id (`train.intent`, …).
    pub purpose: String,
    /// What happened.
    pub kind: ConsentEventKind,
    /// When, by the node's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// For `given`: when the consent lapses on its own, if it does.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_until: Option<OffsetDateTime>,
    /// Whether the consent was given explicitly (a separate, specific statement), as special
    /// categories of data such as health require. For withdrawals it repeats the consent's flag.
    pub explicit: bool,
    /// The policy version in force when it was recorded.
    pub policy_version: u64,
    /// Through which channel.
    pub method: Method,
    /// Who recorded it.
    pub actor: String,
    /// The `consentReceiptID` of the receipt issued for this change.
    pub receipt_id: String,
}

/// One recorded change of the AI-assistance level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistanceEvent {
    /// The level chosen.
    pub level: AssistanceLevel,
    /// When, by the node's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The policy version in force when it was recorded.
    pub policy_version: u64,
    /// Through which channel.
    pub method: Method,
    /// Who recorded it.
    pub actor: String,
    /// The `consentReceiptID` of the receipt issued for this change.
    pub receipt_id: String,
}

/// A right the person exercises that is not consent: it limits what the organisation may do
/// with the archive it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Right {
    /// GDPR Art. 18: the archive is kept but used for no purpose except storage and the
    /// organisation's legal obligations and claims, until lifted.
    Restriction,
    /// GDPR Art. 21: the person objects to one purpose that relies on the organisation's
    /// legitimate interest; no read for it while the objection stands.
    Objection,
}

impl Right {
    /// The name in receipts and audit entries.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Restriction => "restriction",
            Right::Objection => "objection",
        }
    }
}

/// One recorded change of a [`Right`]: exercised (`active`) or lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RightEvent {
    /// Which right.
    pub right: Right,
    /// The purpose objected to (objection only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// `true` when the right is exercised, `false` when it is lifted.
    pub active: bool,
    /// When, by the node's clock.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The policy version in force when it was recorded.
    pub policy_version: u64,
    /// Through which channel.
    pub method: Method,
    /// Who recorded it.
    pub actor: String,
    /// The `consentReceiptID` of the receipt issued for this change.
    pub receipt_id: String,
}

/// The state of one consent at one moment, derived from the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentState {
    /// No consent for this purpose was ever recorded.
    Never,
    /// Consent is in force.
    Given {
        /// Since when.
        since: OffsetDateTime,
        /// Until when, if it lapses on its own.
        valid_until: Option<OffsetDateTime>,
        /// Whether it was given explicitly.
        explicit: bool,
    },
    /// The person withdrew it.
    Withdrawn {
        /// When.
        at: OffsetDateTime,
    },
    /// Either an explicit `expired` event or a `given` whose `valid_until` has passed.
    Expired {
        /// When.
        at: OffsetDateTime,
    },
}

impl ConsentState {
    /// Whether consent is in force.
    pub fn is_given(&self) -> bool {
        matches!(self, ConsentState::Given { .. })
    }

    /// Given, and given explicitly (what special categories need).
    pub fn is_explicitly_given(&self) -> bool {
        matches!(self, ConsentState::Given { explicit: true, .. })
    }

    /// The W3C DPV consent status.
    pub fn dpv(&self) -> &'static str {
        match self {
            ConsentState::Never => "dpv:ConsentUnknown",
            ConsentState::Given { .. } => "dpv:ConsentGiven",
            ConsentState::Withdrawn { .. } => "dpv:ConsentWithdrawn",
            ConsentState::Expired { .. } => "dpv:ConsentExpired",
        }
    }
}

/// `YYYY-MM-DD` of a moment, in UTC: how dates appear in sentences shown to people.
pub fn date_of(t: OffsetDateTime) -> String {
    let d = t.to_offset(time::UtcOffset::UTC).date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl fmt::Display for ConsentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsentState::Never => f.write_str("never given"),
            ConsentState::Given {
                since, valid_until, ..
            } => {
                write!(f, "given on {}", date_of(*since))?;
                if let Some(u) = valid_until {
                    write!(f, ", valid until {}", date_of(*u))?;
                }
                Ok(())
            }
            ConsentState::Withdrawn { at } => write!(f, "withdrawn on {}", date_of(*at)),
            ConsentState::Expired { at } => write!(f, "expired on {}", date_of(*at)),
        }
    }
}

/// Everything a subject ever said about consent and AI assistance, in the order it was recorded.
///
/// The node keeps it sealed under the subject's data key; this crate only turns it into and from
/// bytes. Current states are derived on every call and never cached, so a withdrawal recorded
/// now governs the very next read. Histories only grow: changes are appended in time order and
/// nothing is ever rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentHistory {
    format: u32,
    consent: Vec<ConsentEvent>,
    #[serde(default)]
    assistance: Vec<AssistanceEvent>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    rights: Vec<RightEvent>,
}

impl Default for ConsentHistory {
    fn default() -> Self {
        Self::new()
    }
}

/// The terms of a consent being given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Terms {
    /// When the consent lapses on its own, if it does.
    pub valid_until: Option<OffsetDateTime>,
    /// Whether it is given explicitly (a separate, specific statement).
    pub explicit: bool,
}

pub(crate) fn valid_purpose_id(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        })
}

impl ConsentHistory {
    /// An empty history: no consent given, the default AI-assistance level.
    pub fn new() -> Self {
        ConsentHistory {
            format: HISTORY_FORMAT,
            consent: Vec::new(),
            assistance: Vec::new(),
            rights: Vec::new(),
        }
    }

    /// Reads a history from the JSON bytes [`ConsentHistory::to_json_bytes`] wrote.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self, ConsentError> {
        let h: ConsentHistory = serde_json::from_slice(bytes)?;
        if h.format != HISTORY_FORMAT {
            return Err(ConsentError::UnsupportedFormat(h.format));
        }
        Ok(h)
    }

    /// The history as JSON bytes (what the archive seals).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings, integers and timestamps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Every consent change, in the order recorded.
    pub fn consent_events(&self) -> &[ConsentEvent] {
        &self.consent
    }

    /// Every AI-assistance change, in the order recorded.
    pub fn assistance_events(&self) -> &[AssistanceEvent] {
        &self.assistance
    }

    /// Every restriction and objection change, in the order recorded.
    pub fn right_events(&self) -> &[RightEvent] {
        &self.rights
    }

    /// The latest change of `right` (for `purpose`, for an objection) at or before `now`,
    /// if it is in force: since when.
    fn right_in_force(
        &self,
        right: Right,
        purpose: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let mut latest: Option<&RightEvent> = None;
        for e in &self.rights {
            if e.right == right
                && e.purpose.as_deref() == purpose
                && e.at <= now
                && latest.is_none_or(|l| e.at >= l.at)
            {
                latest = Some(e);
            }
        }
        latest.filter(|e| e.active).map(|e| e.at)
    }

    /// Since when processing is restricted (GDPR Art. 18), if it is at `now`.
    pub fn restricted(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.right_in_force(Right::Restriction, None, now)
    }

    /// Since when the person objects to `purpose` (GDPR Art. 21), if they do at `now`.
    pub fn objected(&self, purpose: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.right_in_force(Right::Objection, Some(purpose), now)
    }

    /// Every purpose that appears in the history, sorted.
    pub fn purposes(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.consent.iter().map(|e| e.purpose.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The state of the consent for `purpose` at `now`: the latest event at or before `now`
    /// decides; a `given` whose `valid_until` is at or before `now` reads as expired. Events
    /// dated after `now` are not yet in force, so past decisions can be re-derived exactly.
    pub fn state(&self, purpose: &str, now: OffsetDateTime) -> ConsentState {
        let mut latest: Option<&ConsentEvent> = None;
        for e in &self.consent {
            if e.purpose == purpose && e.at <= now && latest.is_none_or(|l| e.at >= l.at) {
                latest = Some(e);
            }
        }
        match latest {
            None => ConsentState::Never,
            Some(e) => match e.kind {
                ConsentEventKind::Given => match e.valid_until {
                    Some(u) if u <= now => ConsentState::Expired { at: u },
                    valid_until => ConsentState::Given {
                        since: e.at,
                        valid_until,
                        explicit: e.explicit,
                    },
                },
                ConsentEventKind::Withdrawn => ConsentState::Withdrawn { at: e.at },
                ConsentEventKind::Expired => ConsentState::Expired { at: e.at },
            },
        }
    }

    /// The AI-assistance level at `now`; [`AssistanceLevel::HumanOnly`] until the subject chose.
    pub fn ai_assistance(&self, now: OffsetDateTime) -> AssistanceLevel {
        let mut latest: Option<&AssistanceEvent> = None;
        for e in &self.assistance {
            if e.at <= now && latest.is_none_or(|l| e.at >= l.at) {
                latest = Some(e);
            }
        }
        latest.map_or(AssistanceLevel::HumanOnly, |e| e.level)
    }

    fn last_change(&self) -> Option<OffsetDateTime> {
        let c = self.consent.iter().map(|e| e.at).max();
        let a = self.assistance.iter().map(|e| e.at).max();
        let r = self.rights.iter().map(|e| e.at).max();
        c.max(a).max(r)
    }

    /// Checks what every change needs: a well-formed purpose id (for consent changes), an
    /// actor, and a time not before the last recorded change.
    fn check_change(
        &self,
        purpose: Option<&PurposeInfo>,
        rec: &Recorded,
    ) -> Result<(), ConsentError> {
        if let Some(p) = purpose {
            if !valid_purpose_id(&p.id) {
                return Err(ConsentError::BadPurpose(p.id.clone()));
            }
        }
        if rec.actor.trim().is_empty() {
            return Err(ConsentError::MissingActor);
        }
        if let Some(last) = self.last_change() {
            if rec.at < last {
                return Err(ConsentError::OutOfOrder {
                    at: crate::rfc3339(rec.at),
                    last: crate::rfc3339(last),
                });
            }
        }
        Ok(())
    }

    /// Records that the subject gave consent for `purpose`, and returns the signed receipt.
    pub fn give(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        terms: Terms,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.check_change(Some(purpose), &rec)?;
        if let Some(u) = terms.valid_until {
            if u <= rec.at {
                return Err(ConsentError::ValidUntilNotAfterGiven {
                    at: crate::rfc3339(rec.at),
                    valid_until: crate::rfc3339(u),
                });
            }
        }
        self.push_consent(
            issuer,
            subject,
            purpose,
            ConsentEventKind::Given,
            terms,
            rec,
        )
    }

    /// Records that the subject withdrew consent for `purpose`. It takes effect for every read
    /// decided at or after `rec.at`.
    pub fn withdraw(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.end(issuer, subject, purpose, rec, ConsentEventKind::Withdrawn)
    }

    /// Records that a consent lapsed (for example because the policy changed and it must be
    /// asked for again).
    pub fn expire(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.end(issuer, subject, purpose, rec, ConsentEventKind::Expired)
    }

    fn end(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        rec: Recorded,
        kind: ConsentEventKind,
    ) -> Result<SignedReceipt, ConsentError> {
        self.check_change(Some(purpose), &rec)?;
        let state = self.state(&purpose.id, rec.at);
        let ConsentState::Given { explicit, .. } = state else {
            return Err(ConsentError::not_given(
                &purpose.id,
                &state,
                kind_verb(kind),
            ));
        };
        self.push_consent(
            issuer,
            subject,
            purpose,
            kind,
            Terms {
                valid_until: None,
                explicit,
            },
            rec,
        )
    }

    fn push_consent(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        kind: ConsentEventKind,
        terms: Terms,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        let event = ConsentEvent {
            purpose: purpose.id.clone(),
            kind,
            at: rec.at,
            valid_until: terms.valid_until,
            explicit: terms.explicit,
            policy_version: rec.policy_version,
            method: rec.method,
            actor: rec.actor,
            receipt_id: crate::receipt::new_receipt_id()?,
        };
        let receipt = issuer.issue_consent(subject, purpose, &event);
        self.consent.push(event);
        Ok(receipt)
    }

    /// Records the subject's choice of AI-assistance level, and returns the signed receipt.
    pub fn set_ai_assistance(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        level: AssistanceLevel,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.check_change(None, &rec)?;
        let event = AssistanceEvent {
            level,
            at: rec.at,
            policy_version: rec.policy_version,
            method: rec.method,
            actor: rec.actor,
            receipt_id: crate::receipt::new_receipt_id()?,
        };
        let receipt = issuer.issue_assistance(subject, &event);
        self.assistance.push(event);
        Ok(receipt)
    }

    /// Records that the person restricts processing (`active`) or lifts the restriction, and
    /// returns the signed receipt. Refused when it would change nothing.
    pub fn set_restriction(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        active: bool,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.check_change(None, &rec)?;
        if self.restricted(rec.at).is_some() == active {
            return Err(ConsentError::Unchanged(if active {
                "processing is already restricted".into()
            } else {
                "processing is not restricted".into()
            }));
        }
        self.push_right(issuer, subject, Right::Restriction, None, active, rec)
    }

    /// Records that the person objects to `purpose` (`active`) or withdraws the objection, and
    /// returns the signed receipt. Whether the purpose relies on legitimate interest (the
    /// only basis an objection applies to) is the caller's check: it knows the policy.
    pub fn set_objection(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        purpose: &PurposeInfo,
        active: bool,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        self.check_change(Some(purpose), &rec)?;
        if self.objected(&purpose.id, rec.at).is_some() == active {
            return Err(ConsentError::Unchanged(format!(
                "an objection to {} is {}",
                purpose.id,
                if active {
                    "already recorded"
                } else {
                    "not recorded"
                }
            )));
        }
        self.push_right(
            issuer,
            subject,
            Right::Objection,
            Some(purpose),
            active,
            rec,
        )
    }

    fn push_right(
        &mut self,
        issuer: &ReceiptIssuer<'_>,
        subject: &SubjectId,
        right: Right,
        purpose: Option<&PurposeInfo>,
        active: bool,
        rec: Recorded,
    ) -> Result<SignedReceipt, ConsentError> {
        let event = RightEvent {
            right,
            purpose: purpose.map(|p| p.id.clone()),
            active,
            at: rec.at,
            policy_version: rec.policy_version,
            method: rec.method,
            actor: rec.actor,
            receipt_id: crate::receipt::new_receipt_id()?,
        };
        let receipt = issuer.issue_right(subject, purpose, &event);
        self.rights.push(event);
        Ok(receipt)
    }
}

fn kind_verb(kind: ConsentEventKind) -> &'static str {
    match kind {
        ConsentEventKind::Given => "give",
        ConsentEventKind::Withdrawn => "withdraw",
        ConsentEventKind::Expired => "expire",
    }
}
