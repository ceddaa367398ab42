//! The closed vocabularies of a policy: roles, legal bases, collections, automation lines.

use std::fmt;
use std::str::FromStr;

/// A name that is not one of a vocabulary's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub given: String,
    pub expected: String,
}

macro_rules! vocabulary {
    ($(#[$m:meta])* $t:ident, $what:literal, { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $t { $($(#[$vm])* $v),+ }

        impl $t {
            /// Every value, in declaration order.
            pub const ALL: &'static [$t] = &[$($t::$v),+];

            /// The name used in policy files, certificates and logs.
            pub fn as_str(self) -> &'static str {
                match self { $($t::$v => $s),+ }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok($t::$v),)+
                    _ => Err(UnknownName {
                        what: $what,
                        given: s.to_owned(),
                        expected: [$($s),+].join(", "),
                    }),
                }
            }
        }
    };
}

vocabulary!(
    /// Who is asking, as the client certificate says. The node's own trainer acts as `node`.
    Role, "role", {
        Coordinator => "coordinator",
        Node => "node",
        App => "app",
        Agent => "agent",
        Auditor => "auditor",
        Admin => "admin",
        SubjectPortal => "subject-portal",
    }
);

vocabulary!(
    /// The GDPR Art. 6 ground a purpose relies on.
    LegalBasis, "legal basis", {
        Consent => "consent",
        Contract => "contract",
        LegalObligation => "legal_obligation",
        LegitimateInterest => "legitimate_interest",
    }
);

vocabulary!(
    /// The parts of a life archive. `health` is a special category (GDPR Art. 9).
    Collection, "collection", {
        Profile => "profile",
        LifeStage => "life_stage",
        Goals => "goals",
        Events => "events",
        Interactions => "interactions",
        Health => "health",
    }
);

vocabulary!(
    /// How far automation may go for an intent.
    Line, "automation line", {
        /// AI may answer.
        Green => "green",
        /// AI drafts, a person confirms.
        Yellow => "yellow",
        /// People only.
        Red => "red",
    }
);

impl Collection {
    /// Special categories of data: readable only under the subject's explicit consent for the
    /// purpose, whatever the purpose's legal basis.
    pub fn is_special(self) -> bool {
        matches!(self, Collection::Health)
    }
}

impl LegalBasis {
    /// The GDPR article this basis is.
    pub fn article(self) -> &'static str {
        match self {
            LegalBasis::Consent => "Art. 6(1)(a)",
            LegalBasis::Contract => "Art. 6(1)(b)",
            LegalBasis::LegalObligation => "Art. 6(1)(c)",
            LegalBasis::LegitimateInterest => "Art. 6(1)(f)",
        }
    }
}
