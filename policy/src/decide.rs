//! The one decision function and what it hands out: a [`Grant`], or a [`DenyReason`].

use crate::model::{Collection, LegalBasis, Role};
use crate::policy::{FieldRule, Policy, Purpose};
use crate::transform::Tables;
use amble_consent::{ConsentHistory, ConsentState, date_of};
use amble_crypto::SubjectId;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use time::OffsetDateTime;

/// The outcome of [`decide`]. Closed on purpose (not `#[non_exhaustive]`, unlike the error
/// and reason enums): a new kind of decision must break every `match` on it at compile time,
/// never fall silently into a wildcard arm.
#[derive(Debug, Clone)]
pub enum Decision {
    /// The read may happen, and sees what the grant allows.
    Allow(Grant),
    /// The read is refused, for this reason.
    Deny(DenyReason),
}

/// Why a read was refused. `Display` is a sentence the person concerned understands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// The policy in force declares no such purpose.
    UnknownPurpose {
        /// The purpose asked for.
        purpose: String,
        /// The version of the policy that does not declare it.
        policy_version: u64,
    },
    /// The caller's role is not among the purpose's roles.
    RoleNotAllowed {
        /// The caller's role.
        role: Role,
        /// The purpose asked for.
        purpose: String,
    },
    /// The purpose relies on consent and the person never gave it.
    NoConsent {
        /// The purpose asked for.
        purpose: String,
    },
    /// The person withdrew their consent.
    ConsentWithdrawn {
        /// The purpose asked for.
        purpose: String,
        /// When they withdrew it.
        at: OffsetDateTime,
    },
    /// The consent was given until a time that has passed.
    ConsentExpired {
        /// The purpose asked for.
        purpose: String,
        /// When it expired.
        at: OffsetDateTime,
    },
    /// The person restricted processing (GDPR Art. 18): only purposes that fulfil the
    /// organisation's legal obligations may read until it is lifted.
    Restricted {
        /// The purpose asked for.
        purpose: String,
        /// Since when.
        since: OffsetDateTime,
    },
    /// The person objects to this legitimate-interest purpose (GDPR Art. 21).
    Objected {
        /// The purpose asked for.
        purpose: String,
        /// Since when.
        since: OffsetDateTime,
    },
}

impl DenyReason {
    /// A stable short code for audit entries and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::UnknownPurpose { .. } => "unknown_purpose",
            DenyReason::RoleNotAllowed { .. } => "role_not_allowed",
            DenyReason::NoConsent { .. } => "no_consent",
            DenyReason::ConsentWithdrawn { .. } => "consent_withdrawn",
            DenyReason::ConsentExpired { .. } => "consent_expired",
            DenyReason::Restricted { .. } => "restricted",
            DenyReason::Objected { .. } => "objected",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::UnknownPurpose {
                purpose,
                policy_version,
            } => write!(
                f,
                "purpose {purpose} is not declared in policy version {policy_version}"
            ),
            DenyReason::RoleNotAllowed { role, purpose } => {
                write!(f, "role {role} may not use purpose {purpose}")
            }
            DenyReason::NoConsent { purpose } => {
                write!(f, "no consent for {purpose} has been given")
            }
            DenyReason::ConsentWithdrawn { purpose, at } => {
                write!(f, "consent for {purpose} withdrawn on {}", date_of(*at))
            }
            DenyReason::ConsentExpired { purpose, at } => {
                write!(f, "consent for {purpose} expired on {}", date_of(*at))
            }
            DenyReason::Restricted { purpose, since } => write!(
                f,
                "processing is restricted since {} at the person's request, so nothing may \
                 read for {purpose}",
                date_of(*since)
            ),
            DenyReason::Objected { purpose, since } => write!(
                f,
                "the person objects to {purpose} since {}",
                date_of(*since)
            ),
        }
    }
}

/// Decides whether `actor`, acting as `role`, may read a subject's archive for `purpose` at
/// `now`, given the subject's consent history.
///
/// Denied when the purpose is not declared, the role is not listed for it, the person has
/// restricted processing (GDPR Art. 18; only `legal_obligation` purposes still read), the
/// purpose relies on legitimate interest and the person objects to it (Art. 21), or the
/// purpose relies on consent and the consent is not in force. An allowed read gets a [`Grant`] of the
/// purpose's fields; special categories (`health`) are left out of it unless the subject gave
/// *explicit* consent for this purpose, whatever the purpose's legal basis.
pub fn decide(
    policy: &Policy,
    actor: &str,
    role: Role,
    purpose: &str,
    consent: &ConsentHistory,
    now: OffsetDateTime,
) -> Decision {
    let Some(p) = policy.purpose_arc(purpose) else {
        return Decision::Deny(DenyReason::UnknownPurpose {
            purpose: purpose.to_owned(),
            policy_version: policy.version,
        });
    };
    if !p.roles.contains(&role) {
        return Decision::Deny(DenyReason::RoleNotAllowed {
            role,
            purpose: purpose.to_owned(),
        });
    }
    if let Some(since) = consent.restricted(now) {
        if p.legal_basis != LegalBasis::LegalObligation {
            return Decision::Deny(DenyReason::Restricted {
                purpose: purpose.to_owned(),
                since,
            });
        }
    }
    if p.legal_basis == LegalBasis::LegitimateInterest {
        if let Some(since) = consent.objected(purpose, now) {
            return Decision::Deny(DenyReason::Objected {
                purpose: purpose.to_owned(),
                since,
            });
        }
    }
    let state = consent.state(purpose, now);
    if p.legal_basis == LegalBasis::Consent {
        let deny = match state {
            ConsentState::Given { .. } => None,
            ConsentState::Never => Some(DenyReason::NoConsent {
                purpose: purpose.to_owned(),
            }),
            ConsentState::Withdrawn { at } => Some(DenyReason::ConsentWithdrawn {
                purpose: purpose.to_owned(),
                at,
            }),
            ConsentState::Expired { at } => Some(DenyReason::ConsentExpired {
                purpose: purpose.to_owned(),
                at,
            }),
        };
        if let Some(reason) = deny {
            return Decision::Deny(reason);
        }
    }
    Decision::Allow(Grant {
        purpose: Arc::clone(p),
        tables: Arc::clone(&policy.tables),
        retention: policy
            .retention
            .iter()
            .map(|(c, r)| (*c, r.duration))
            .collect(),
        policy_version: policy.version,
        actor: actor.to_owned(),
        role,
        decided_at: now,
        special_allowed: state.is_explicitly_given(),
    })
}

/// Permission to read certain fields of certain collections of one subject for one purpose.
///
/// Only [`decide`] makes one: the fields are private and there is no constructor, so holding a
/// `Grant` proves the policy was consulted.
#[derive(Debug, Clone)]
pub struct Grant {
    purpose: Arc<Purpose>,
    tables: Arc<Tables>,
    retention: BTreeMap<Collection, time::Duration>,
    policy_version: u64,
    actor: String,
    role: Role,
    decided_at: OffsetDateTime,
    special_allowed: bool,
}

impl Grant {
    /// The purpose the read was allowed for.
    pub fn purpose(&self) -> &str {
        &self.purpose.id
    }

    /// The version of the policy that allowed it.
    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }

    /// Who was allowed (the certificate's id).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// In which role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The moment the decision was made; age bands and retention are measured from it.
    pub fn decided_at(&self) -> OffsetDateTime {
        self.decided_at
    }

    fn rules(&self, c: Collection) -> Option<&[FieldRule]> {
        if c.is_special() && !self.special_allowed {
            return None;
        }
        self.purpose.reads.get(&c).map(Vec::as_slice)
    }

    /// Whether any field of `c` is granted: the node decrypts only collections that are.
    pub fn allows_collection(&self, c: Collection) -> bool {
        self.rules(c).is_some()
    }

    /// The granted collections, in fixed order.
    pub fn collections(&self) -> Vec<Collection> {
        Collection::ALL
            .iter()
            .copied()
            .filter(|c| self.allows_collection(*c))
            .collect()
    }

    /// The granted fields of `c`, with transforms, or `None` if `c` is not granted.
    pub fn fields(&self, c: Collection) -> Option<&[FieldRule]> {
        self.rules(c)
    }

    /// Collections and field names (with transforms, `birth_year|age_band`) for audit entries.
    pub fn granted_fields(&self) -> Vec<(Collection, Vec<String>)> {
        self.collections()
            .into_iter()
            .map(|c| {
                let names = self
                    .rules(c)
                    .unwrap_or(&[])
                    .iter()
                    .map(|r| match &r.transform {
                        Some(t) => format!("{}|{t}", r.name),
                        None => r.name.clone(),
                    })
                    .collect();
                (c, names)
            })
            .collect()
    }

    /// Projects one decrypted record of `collection`, dated `time`, onto the granted fields.
    ///
    /// `None` when the collection is not granted (including `health` without explicit
    /// consent), when the record is older than the collection's retention period at the time
    /// of the decision (the sweeper may not have run yet), or when it is not a JSON object.
    pub fn project(
        &self,
        collection: Collection,
        time: OffsetDateTime,
        record: &Value,
    ) -> Option<ProjectedRecord> {
        let rules = self.rules(collection)?;
        if let Some(keep) = self.retention.get(&collection) {
            match time.checked_add(*keep) {
                Some(until) if until > self.decided_at => {}
                _ => return None,
            }
        }
        let obj = record.as_object()?;
        let year = self.decided_at.year();
        let fields = rules
            .iter()
            .filter_map(|r| {
                let v = obj.get(&r.name)?;
                let v = match &r.transform {
                    Some(t) => self.tables.apply(t, v, year),
                    None => v.clone(),
                };
                Some((r.name.clone(), v))
            })
            .collect();
        Some(ProjectedRecord {
            collection,
            time,
            fields,
        })
    }

    /// Projects a subject's records (collection, time, decrypted value) into a [`Projection`];
    /// records nothing is granted of are left out.
    pub fn projection<'v, I>(&self, subject: SubjectId, records: I) -> Projection
    where
        I: IntoIterator<Item = (Collection, OffsetDateTime, &'v Value)>,
    {
        Projection {
            subject,
            purpose: self.purpose.id.clone(),
            policy_version: self.policy_version,
            records: records
                .into_iter()
                .filter_map(|(c, t, v)| self.project(c, t, v))
                .collect(),
        }
    }
}

/// One record as a purpose may see it: only granted fields, transforms applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectedRecord {
    collection: Collection,
    time: OffsetDateTime,
    fields: Vec<(String, Value)>,
}

impl ProjectedRecord {
    /// The collection the record belongs to.
    pub fn collection(&self) -> Collection {
        self.collection
    }

    /// When what the record describes happened.
    pub fn time(&self) -> OffsetDateTime {
        self.time
    }

    /// The value of a granted field, or `None` if it was not granted or not in the record.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| k == field).map(|(_, v)| v)
    }

    /// The fields it holds, in policy order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many granted fields the record holds.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it holds no granted field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields as a JSON object.
    pub fn to_json(&self) -> Value {
        Value::Object(self.fields.iter().cloned().collect::<Map<_, _>>())
    }
}

/// What a caller gets to see of one subject for one purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    subject: SubjectId,
    purpose: String,
    policy_version: u64,
    records: Vec<ProjectedRecord>,
}

impl Projection {
    /// Whose records these are (a pseudonym).
    pub fn subject(&self) -> &SubjectId {
        &self.subject
    }

    /// The purpose they were read for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }

    /// The version of the policy that shaped them.
    pub fn policy_version(&self) -> u64 {
        self.policy_version
    }

    /// The records, each with only its granted fields, transformed.
    pub fn records(&self) -> &[ProjectedRecord] {
        &self.records
    }

    /// `{"subject", "purpose", "policy_version", "records": [{"collection", "time", "fields"}]}`,
    /// with `time` in RFC 3339.
    pub fn to_json(&self) -> Value {
        let records: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "collection": r.collection.as_str(),
                    "time": r
                        .time
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|_| r.time.unix_timestamp().to_string()),
                    "fields": r.to_json(),
                })
            })
            .collect();
        serde_json::json!({
            "subject": self.subject.to_hex(),
            "purpose": self.purpose,
            "policy_version": self.policy_version,
            "records": records,
        })
    }
}
