//! The storage codes of collections. The vocabulary itself is the policy's
//! ([`amble_policy::Collection`]); these byte codes are part of the on-disk key format and
//! must never change.

pub use amble_policy::Collection;

pub(crate) fn code(c: Collection) -> u8 {
    match c {
        Collection::Profile => 1,
        Collection::LifeStage => 2,
        Collection::Goals => 3,
        Collection::Events => 4,
        Collection::Interactions => 5,
        Collection::Health => 6,
    }
}

pub(crate) fn from_code(b: u8) -> Option<Collection> {
    Collection::ALL.iter().copied().find(|c| code(*c) == b)
}
