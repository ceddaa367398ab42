use crate::NodeError;
use std::fmt;
use std::str::FromStr;

/// The collections of a life archive. The byte code is part of the storage key format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    Profile,
    LifeStage,
    Goals,
    Events,
    Interactions,
    /// A GDPR Art. 9 special category: readable only under explicit consent.
    Health,
}

impl Collection {
    pub const ALL: [Collection; 6] = [
        Collection::Profile,
        Collection::LifeStage,
        Collection::Goals,
        Collection::Events,
        Collection::Interactions,
        Collection::Health,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Profile => "profile",
            Collection::LifeStage => "life_stage",
            Collection::Goals => "goals",
            Collection::Events => "events",
            Collection::Interactions => "interactions",
            Collection::Health => "health",
        }
    }

    pub(crate) fn code(self) -> u8 {
        match self {
            Collection::Profile => 1,
            Collection::LifeStage => 2,
            Collection::Goals => 3,
            Collection::Events => 4,
            Collection::Interactions => 5,
            Collection::Health => 6,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Collection::ALL.into_iter().find(|x| x.code() == c)
    }
}

impl FromStr for Collection {
    type Err = NodeError;
    fn from_str(s: &str) -> Result<Self, NodeError> {
        Collection::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| NodeError::UnknownCollection(s.to_owned()))
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
