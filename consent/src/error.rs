use crate::ConsentState;

/// Why a change to a consent history was refused. Nothing was recorded when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentError {
    #[error(
        "purpose id `{0}` is not valid; use 1 to 64 characters from a-z, 0-9, `.`, `_` and `-`, as declared in the policy"
    )]
    BadPurpose(String),
    #[error(
        "the actor who recorded the change is empty; pass the id of the person or service recording it"
    )]
    MissingActor,
    #[error(
        "the change is dated {at}, before the last recorded change ({last}); changes must be recorded in time order, so check the clock of whoever sent it"
    )]
    OutOfOrder { at: String, last: String },
    #[error(
        "valid_until ({valid_until}) is not after the time consent is given ({at}); pass a later date or none"
    )]
    ValidUntilNotAfterGiven { at: String, valid_until: String },
    #[error(
        "consent for {purpose} is not currently given ({state}), so there is nothing to {action}"
    )]
    NotGiven {
        purpose: String,
        state: String,
        action: &'static str,
    },
    #[error(
        "could not create a receipt id: {0}; the operating system's random generator failed, try again"
    )]
    Random(#[from] amble_crypto::CryptoError),
    #[error(
        "consent history has format {0}, which this version of amble does not read; upgrade amble on this node"
    )]
    UnsupportedFormat(u32),
    #[error("consent history is not valid JSON for this version of amble: {0}")]
    Decode(#[from] serde_json::Error),
}

impl ConsentError {
    pub(crate) fn not_given(purpose: &str, state: &ConsentState, action: &'static str) -> Self {
        ConsentError::NotGiven {
            purpose: purpose.to_owned(),
            state: state.to_string(),
            action,
        }
    }
}

/// Why a consent receipt file did not verify. A receipt that fails for any reason must not be
/// trusted for anything, including its displayed content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    #[error("receipt file is not valid JSON ({0}); it was damaged or is not a consent receipt")]
    NotJson(serde_json::Error),
    #[error(
        "receipt file is not in canonical form (it was re-formatted or edited after signing); use the file exactly as the node issued it"
    )]
    NotCanonical,
    #[error("receipt file does not have the consent receipt layout: {0}")]
    Malformed(String),
    #[error(
        "receipt was signed by key {found}, not the expected node key {expected}; check which node issued it"
    )]
    WrongKey { expected: String, found: String },
    #[error("receipt signature does not verify: the receipt was altered after it was signed")]
    BadSignature,
}
