//! The closed vocabularies of a policy: legal bases, collections, automation lines (roles are
//! the PKI's [`Role`], the names certificates carry).

pub use amble_crypto::pki::Role;

use std::fmt;
use std::str::FromStr;

/// A name that is not one of a vocabulary's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`; expected one of: {expected}")]
pub struct UnknownName {
    /// The vocabulary (`role`, `collection`, …).
    pub what: &'static str,
    /// The name as given.
    pub given: String,
    /// Every valid name, comma-separated.
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
    /// A language the self-service page speaks, by its BCP 47 tag. A policy's purpose
    /// descriptions are written in one of them and may be translated into the others.
    Language, "language", {
        /// English.
        En => "en",
        /// Chinese in simplified script, as written in mainland China.
        ZhCn => "zh-CN",
        /// Chinese in traditional script, as written in Taiwan.
        ZhTw => "zh-TW",
    }
);

impl Language {
    /// The languages to try, in order, when a text is missing in this one: the other script
    /// of Chinese reads better to a Chinese reader than English does.
    pub fn fallbacks(self) -> &'static [Language] {
        match self {
            Language::En => &[],
            Language::ZhCn => &[Language::ZhTw],
            Language::ZhTw => &[Language::ZhCn],
        }
    }
}

vocabulary!(
    /// The GDPR Art. 6 ground a purpose relies on.
    LegalBasis, "legal basis", {
        /// Art. 6(1)(a): the person's consent, which they can withdraw.
        Consent => "consent",
        /// Art. 6(1)(b): a contract with the person.
        Contract => "contract",
        /// Art. 6(1)(c): a legal obligation of the organisation.
        LegalObligation => "legal_obligation",
        /// Art. 6(1)(f): the organisation's legitimate interest.
        LegitimateInterest => "legitimate_interest",
    }
);

vocabulary!(
    /// The parts of a life archive. `health` is a special category (GDPR Art. 9).
    Collection, "collection", {
        /// Who the person is: name, birth year, city.
        Profile => "profile",
        /// Where they are in life, and its tags (student, new parent, retiree).
        LifeStage => "life_stage",
        /// What they are working towards.
        Goals => "goals",
        /// What happened to them (moved home, a baby born).
        Events => "events",
        /// Their service conversations, on every channel.
        Interactions => "interactions",
        /// Health data: a special category, read only under explicit consent.
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
