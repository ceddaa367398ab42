//! Log entries and their canonical JSON form — the bytes that are hashed into the tree.
//!
//! Canonical form: compact JSON (no whitespace), fields always present and in the order of
//! [`Entry`], absent optionals as `null`, `time` in RFC 3339 UTC (`Z`), `counts` with keys in
//! byte order. An entry line is accepted by the verifier only if re-serialising it gives the
//! same bytes, so there is exactly one byte string per entry.
//!
//! An entry names a subject only by its pseudonym ([`SubjectId`], hex); it has no field for an
//! external reference or for record contents, so neither can reach the log.

use crate::error::EntryError;
use amble_crypto::SubjectId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use time::{OffsetDateTime, UtcOffset};

/// What was done. Serialised snake_case. Unknown actions (from a newer node) parse as
/// [`Action::Other`], so an older verifier can still check a newer log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Records were appended for the subject (`counts.records`, `collections`).
    Append,
    /// The subject's records were read for a purpose (allowed or denied), or their consent
    /// history or access log was looked up.
    Read,
    /// The subject gave or withdrew consent for a purpose, changed their AI-assistance choice,
    /// restricted processing or objected to a purpose (`reason` says which).
    ConsentChange,
    /// The subject asked for a person to review a decision made by automated means (GDPR
    /// Art. 22(3), PIPL Art. 24): `reason` names the audit entry of the decision.
    ReviewRequest,
    /// Fields of one of the subject's records were corrected at their request (GDPR Art. 16,
    /// PIPL Art. 46); `fields` names the corrected fields, never their values.
    Rectify,
    /// Everything about the subject was exported for them (GDPR Art. 15/20).
    Export,
    /// The subject was erased: their data key destroyed and records removed (`counts.records`).
    Erase,
    /// The node master key was rotated and the data keys rewrapped under the new one.
    RotateKey,
    /// Records past their collection's retention were deleted; `counts` holds how many per
    /// collection.
    RetentionSweep,
    /// Another external reference was linked to the existing subject.
    Link,
    /// An external reference was unlinked from the subject.
    Unlink,
    /// Another subject was merged into this one (`reason` names the absorbed pseudonym).
    Merge,
    /// A training run read the subject's records, or (without a subject) the run's summary.
    Train,
    /// A newer policy was put in force (`counts.policy_version`).
    PolicyReload,
    /// A call was refused before it touched anything: the caller's role may not make it, or its
    /// certificate names no usable identity.
    DeniedCall,
    /// A one-time link to the self-service page was issued for the subject.
    PortalLink,
    /// A request about the subject was classified and routed (`Assist.Classify`), reading the
    /// subject's AI-assistance choice; the entry never carries the request's text.
    Assist,
    /// The register of people's requests was read (`counts.requests`: how many were shown).
    RegisterRead,
    /// A person's request in the register was answered (`reason`: `request SEQ: OUTCOME`).
    RequestAnswer,
    /// An action this version does not know: snake_case ASCII (`[a-z0-9_]+`).
    Other(String),
}

const KNOWN_ACTIONS: &[(&str, Action)] = &[
    ("append", Action::Append),
    ("read", Action::Read),
    ("consent_change", Action::ConsentChange),
    ("export", Action::Export),
    ("erase", Action::Erase),
    ("rotate_key", Action::RotateKey),
    ("retention_sweep", Action::RetentionSweep),
    ("link", Action::Link),
    ("unlink", Action::Unlink),
    ("merge", Action::Merge),
    ("train", Action::Train),
    ("policy_reload", Action::PolicyReload),
    ("denied_call", Action::DeniedCall),
    ("portal_link", Action::PortalLink),
    ("assist", Action::Assist),
    ("rectify", Action::Rectify),
    ("review_request", Action::ReviewRequest),
    ("register_read", Action::RegisterRead),
    ("request_answer", Action::RequestAnswer),
];

impl Action {
    /// The snake_case name written in entries (`consent_change`; an unknown action's own name).
    pub fn as_str(&self) -> &str {
        if let Action::Other(s) = self {
            return s;
        }
        KNOWN_ACTIONS
            .iter()
            .find(|(_, a)| a == self)
            .map(|(s, _)| *s)
            .unwrap_or("")
    }

    /// Parses a snake_case action name; known names map to their variant.
    pub fn parse(s: &str) -> Result<Self, EntryError> {
        if let Some((_, a)) = KNOWN_ACTIONS.iter().find(|(n, _)| *n == s) {
            return Ok(a.clone());
        }
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(EntryError::BadAction(s.to_owned()));
        }
        Ok(Action::Other(s.to_owned()))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Action::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The policy outcome an entry records; `None` for actions no policy decided (a key rotation).
/// Closed on purpose, like `amble_policy::Decision`: a new outcome must break every `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The policy allowed the access.
    Allow,
    /// The access or call was refused; the entry's `reason` says why.
    Deny,
    /// No policy decided this action (an append, a key rotation, a sweep).
    None,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::None => "none",
        })
    }
}

mod subject_hex {
    use super::*;
    use serde::de::Error;

    pub(super) fn serialize<S: Serializer>(v: &Option<SubjectId>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(id) => s.serialize_some(&id.to_hex()),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SubjectId>, D::Error> {
        let v = Option::<String>::deserialize(d)?;
        match v {
            None => Ok(None),
            Some(s) => SubjectId::from_hex(&s)
                .map(Some)
                .ok_or_else(|| D::Error::custom("subject must be a 64-character hex pseudonym")),
        }
    }
}

/// One audit log entry, exactly as hashed (field order here is the canonical order).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Position in the log, from 0; equals the leaf index.
    pub seq: u64,
    /// When the log accepted the entry (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Who acted: a participant id from a certificate, or `node` for the node itself.
    pub actor: String,
    /// The actor's role (`app`, `agent`, `auditor`, `admin`, `node`, `coordinator`, …).
    pub role: String,
    /// What was done.
    pub action: Action,
    /// The subject's pseudonym, never an external reference.
    #[serde(with = "subject_hex")]
    pub subject: Option<SubjectId>,
    /// The purpose the access was made for (`support`, `train.intent`, …); for a refused
    /// coordinator call, the method called. `None` when no purpose applies.
    pub purpose: Option<String>,
    /// Collections the action touched; for an allowed read, those the purpose was granted.
    pub collections: Vec<String>,
    /// Fields an allowed read exposed, each as `collection.field`.
    pub fields: Vec<String>,
    /// The policy outcome, `none` when no policy decided.
    pub decision: Decision,
    /// Why, in a few words: a denial's code and reason, `withdrawn`, `model=…`. Never carries
    /// record contents or external references.
    pub reason: Option<String>,
    /// Version of the policy in force when the action was decided, if one was consulted.
    pub policy_version: Option<u64>,
    /// Opaque id shared by every entry one request produced, to correlate them.
    pub request_id: String,
    /// Numbers that describe the action: records removed by a sweep, subjects in a round.
    pub counts: BTreeMap<String, u64>,
}

impl Entry {
    /// The canonical JSON bytes (no trailing newline): the leaf input.
    ///
    /// Fails only for a time RFC 3339 cannot express (a year outside 0000–9999).
    pub fn to_canonical_json(&self) -> Result<Vec<u8>, EntryError> {
        serde_json::to_vec(self).map_err(|e| EntryError::Unserialisable(e.to_string()))
    }

    /// Parses one entry and insists it is in canonical form.
    pub fn from_canonical_json(bytes: &[u8]) -> Result<Self, EntryError> {
        let e: Entry =
            serde_json::from_slice(bytes).map_err(|err| EntryError::Parse(err.to_string()))?;
        if e.time.offset() != UtcOffset::UTC {
            return Err(EntryError::NotUtc);
        }
        if e.to_canonical_json()? != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(e)
    }
}

/// What the caller fills in; the log adds `seq` and, unless given, `time`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryDraft {
    /// `None`: the log stamps the time of the append. Tests may pin it.
    pub time: Option<OffsetDateTime>,
    /// Who acts; see [`Entry::actor`].
    pub actor: String,
    /// The actor's role; see [`Entry::role`].
    pub role: String,
    /// What was done.
    pub action: Action,
    /// The subject's pseudonym, if the action concerns one person.
    pub subject: Option<SubjectId>,
    /// The purpose the access was made for; see [`Entry::purpose`].
    pub purpose: Option<String>,
    /// Collections touched; see [`Entry::collections`].
    pub collections: Vec<String>,
    /// Fields exposed, as `collection.field`.
    pub fields: Vec<String>,
    /// The policy outcome; `none` unless set.
    pub decision: Decision,
    /// Why, in a few words; never record contents or external references.
    pub reason: Option<String>,
    /// Version of the policy in force, if one was consulted.
    pub policy_version: Option<u64>,
    /// Opaque id shared by every entry of one request.
    pub request_id: String,
    /// Numbers that describe the action; see [`Entry::counts`].
    pub counts: BTreeMap<String, u64>,
}

impl EntryDraft {
    /// A draft with the required fields; the rest empty, `decision` = `none`.
    pub fn new(
        actor: impl Into<String>,
        role: impl Into<String>,
        action: Action,
        request_id: impl Into<String>,
    ) -> Self {
        EntryDraft {
            time: None,
            actor: actor.into(),
            role: role.into(),
            action,
            subject: None,
            purpose: None,
            collections: Vec::new(),
            fields: Vec::new(),
            decision: Decision::None,
            reason: None,
            policy_version: None,
            request_id: request_id.into(),
            counts: BTreeMap::new(),
        }
    }

    /// Names the subject the entry is about (stored as its pseudonym only).
    pub fn subject(mut self, s: SubjectId) -> Self {
        self.subject = Some(s);
        self
    }
    /// Sets the purpose the access was made for.
    pub fn purpose(mut self, p: impl Into<String>) -> Self {
        self.purpose = Some(p.into());
        self
    }
    /// Sets the policy outcome (the default is `none`).
    pub fn decision(mut self, d: Decision) -> Self {
        self.decision = d;
        self
    }
    /// Sets the reason; keep record contents and external references out of it.
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    /// Pins the entry's time instead of the time of the append; it is stored in UTC.
    pub fn at(mut self, t: OffsetDateTime) -> Self {
        self.time = Some(t);
        self
    }
    /// Sets count `k` to `v`, replacing any earlier value under the same key.
    pub fn count(mut self, k: impl Into<String>, v: u64) -> Self {
        self.counts.insert(k.into(), v);
        self
    }

    pub(crate) fn into_entry(self, seq: u64, now: OffsetDateTime) -> Entry {
        Entry {
            seq,
            time: self.time.unwrap_or(now).to_offset(UtcOffset::UTC),
            actor: self.actor,
            role: self.role,
            action: self.action,
            subject: self.subject,
            purpose: self.purpose,
            collections: self.collections,
            fields: self.fields,
            decision: self.decision,
            reason: self.reason,
            policy_version: self.policy_version,
            request_id: self.request_id,
            counts: self.counts,
        }
    }
}
