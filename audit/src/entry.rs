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
    Append,
    Read,
    ConsentChange,
    Export,
    Erase,
    RotateKey,
    RetentionSweep,
    Link,
    Unlink,
    Merge,
    Train,
    PolicyReload,
    DeniedCall,
    /// A one-time link to the self-service page was issued for the subject.
    PortalLink,
    /// A request about the subject was classified and routed (`Assist.Classify`), reading the
    /// subject's AI-assistance choice; the entry never carries the request's text.
    Assist,
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
];

impl Action {
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
    Allow,
    Deny,
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
    pub action: Action,
    /// The subject's pseudonym, never an external reference.
    #[serde(with = "subject_hex")]
    pub subject: Option<SubjectId>,
    pub purpose: Option<String>,
    pub collections: Vec<String>,
    pub fields: Vec<String>,
    pub decision: Decision,
    pub reason: Option<String>,
    pub policy_version: Option<u64>,
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
    pub actor: String,
    pub role: String,
    pub action: Action,
    pub subject: Option<SubjectId>,
    pub purpose: Option<String>,
    pub collections: Vec<String>,
    pub fields: Vec<String>,
    pub decision: Decision,
    pub reason: Option<String>,
    pub policy_version: Option<u64>,
    pub request_id: String,
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

    pub fn subject(mut self, s: SubjectId) -> Self {
        self.subject = Some(s);
        self
    }
    pub fn purpose(mut self, p: impl Into<String>) -> Self {
        self.purpose = Some(p.into());
        self
    }
    pub fn decision(mut self, d: Decision) -> Self {
        self.decision = d;
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn at(mut self, t: OffsetDateTime) -> Self {
        self.time = Some(t);
        self
    }
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
