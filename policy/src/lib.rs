//! amble-policy: which purpose may see which fields, and the one function that decides.
//!
//! In the map of `docs/ARCHITECTURE.md` this crate sits above `amble-consent` and
//! `amble-crypto`; the node calls it before every read, the CLI to check a policy file and print
//! its record of processing. It owns:
//!
//! - the **policy file** ([`Policy`]): a versioned TOML file declaring purposes (plain-language
//!   description, legal basis, roles allowed, recipients, and per collection the fields read,
//!   each optionally generalised or masked by a [`Transform`]), retention per collection, and
//!   automation lines per intent. A file with any problem is refused as a whole, with the line
//!   and column of the problem;
//! - **the decision** ([`decide`]): role, purpose and the subject's consent in, and either a
//!   [`Grant`] or a [`DenyReason`] that reads as a sentence out. A `Grant` can only come from
//!   `decide`; it projects decrypted records into [`ProjectedRecord`]s that hold the granted
//!   fields and nothing else, so code past the policy cannot name a field it was not granted.
//!   Special categories (`health`) need explicit consent for the purpose, whatever its basis;
//! - the **reports**: [`Policy::summary_table`] and [`Policy::ropa_markdown`] (GDPR Art. 30).
//!
//! Consent state is derived from the history on every call, never cached, so a withdrawal
//! recorded before a decision governs it.
//!
//! ```
//! use amble_consent::ConsentHistory;
//! use amble_policy::{Decision, Policy, Role, decide};
//!
//! let policy = Policy::from_toml_str(
//!     r#"
//! version = 1
//! [[purpose]]
//! id = "support"
//! description = "answer the person's requests"
//! legal_basis = "legitimate_interest"
//! roles = ["agent"]
//! [purpose.read]
//! profile = ["display_name"]
//! "#,
//!     "example",
//! )?;
//! let none = ConsentHistory::default();
//! let now = time::OffsetDateTime::now_utc();
//! // Legitimate interest needs no consent, but only the roles the purpose names may read.
//! assert!(matches!(decide(&policy, "desk-1", Role::Agent, "support", &none, now), Decision::Allow(_)));
//! assert!(matches!(decide(&policy, "crm", Role::App, "support", &none, now), Decision::Deny(_)));
//! assert!(matches!(decide(&policy, "desk-1", Role::Agent, "marketing", &none, now), Decision::Deny(_)));
//! # Ok::<(), amble_policy::PolicyError>(())
//! ```

mod decide;
mod duration;
mod model;
mod policy;
mod report;
pub use report::TrainingGuarantee;
mod transform;

pub use decide::{Decision, DenyReason, Grant, ProjectedRecord, Projection, decide};
pub use duration::parse_iso8601;
pub use model::{Collection, Language, LegalBasis, Line, Role, UnknownName};
pub use policy::{Automation, Described, FieldRule, Policy, PolicyError, Purpose, Retention};
pub use transform::{Buckets, OTHER_REGION, Transform, UNKNOWN, age_band, mask};
