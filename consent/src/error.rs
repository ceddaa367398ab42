use crate::ConsentState;

/// Why a change to a consent history was refused. Nothing was recorded when one is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsentError {
    /// A purpose id outside the allowed characters or length.
    #[error(
        "purpose id `{0}` is not valid; use 1 to 64 characters from a-z, 0-9, `.`, `_` and `-`, as declared in the policy"
    )]
    BadPurpose(String),
    /// No actor was named for the change.
    #[error(
        "the actor who recorded the change is empty; pass the id of the person or service recording it"
    )]
    MissingActor,
    /// A change dated before the last recorded one.
    #[error(
        "the change is dated {at}, before the last recorded change ({last}); changes must be recorded in time order, so check the clock of whoever sent it"
    )]
    OutOfOrder {
        /// The change's time (RFC 3339).
        at: String,
        /// The last recorded change's time.
        last: String,
    },
    /// A consent that would lapse before it is given.
    #[error(
        "valid_until ({valid_until}) is not after the time consent is given ({at}); pass a later date or none"
    )]
    ValidUntilNotAfterGiven {
        /// When consent is given (RFC 3339).
        at: String,
        /// When it would lapse.
        valid_until: String,
    },
    /// A restriction or objection change that would change nothing (the message says what is
    /// already the case).
    #[error("nothing to change: {0}")]
    Unchanged(String),
    /// A withdrawal or expiry of a consent that is not in force.
    #[error(
        "consent for {purpose} is not currently given ({state}), so there is nothing to {action}"
    )]
    NotGiven {
        /// The purpose.
        purpose: String,
        /// The state it is in.
        state: String,
        /// What was asked (`withdraw`, `expire`).
        action: &'static str,
    },
    /// The random generator failed while making a receipt id.
    #[error(
        "could not create a receipt id: {0}; the operating system's random generator failed, try again"
    )]
    Random(#[from] amble_crypto::CryptoError),
    /// A history written by a newer amble.
    #[error(
        "consent history has format {0}, which this version of amble does not read; upgrade amble on this node"
    )]
    UnsupportedFormat(u32),
    /// A history that does not parse.
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
    /// The file is not JSON.
    #[error("receipt file is not valid JSON ({0}); it was damaged or is not a consent receipt")]
    NotJson(serde_json::Error),
    /// The file's bytes are not the canonical JSON that was signed.
    #[error(
        "receipt file is not in canonical form (it was re-formatted or edited after signing); use the file exactly as the node issued it"
    )]
    NotCanonical,
    /// The JSON is not a consent receipt.
    #[error("receipt file does not have the consent receipt layout: {0}")]
    Malformed(String),
    /// Signed by another key than the one expected.
    #[error(
        "receipt was signed by key {found}, not the expected node key {expected}; check which node issued it"
    )]
    WrongKey {
        /// The key the caller expected (base64).
        expected: String,
        /// The key that signed it.
        found: String,
    },
    /// The signature does not verify: the receipt was altered.
    #[error("receipt signature does not verify: the receipt was altered after it was signed")]
    BadSignature,
}
