//! amble-consent: what each person agreed to, and proof that they did.
//!
//! In the map of `docs/ARCHITECTURE.md` this crate sits above `amble-crypto` and below
//! `amble-policy` and the node. It owns:
//!
//! - the **consent history** ([`ConsentHistory`]) of one subject: every `given`, `withdrawn`
//!   and `expired` event per purpose, with time, optional end date, policy version, method,
//!   who recorded it and whether the consent was explicit. Current states ([`ConsentState`])
//!   are *derived* from it on every call, never stored, so a withdrawal governs the very next
//!   read. The node seals the history's bytes under the subject's data key;
//! - the subject's **AI-assistance level** ([`AssistanceLevel`]), kept in the same history;
//! - **consent receipts** ([`SignedReceipt`], [`verify_receipt`]): every change returns one,
//!   with Kantara Consent Receipt 1.1 fields, signed by the node's Ed25519 key over canonical
//!   JSON so that any changed byte is detected;
//! - the **TS 27560 export** ([`to_ts27560`]) for subject-access and portability requests.
//!
//! Purposes are plain ids here; what a purpose may read is the policy crate's business, which
//! hands this crate a [`PurposeInfo`] to describe it in receipts.
//!
//! ```
//! // What a receipt signs: RFC 8785 canonical JSON (keys sorted, numbers in their shortest form).
//! let v = serde_json::json!({"purpose": "train.intent", "at": 1.50, "given": true});
//! assert_eq!(
//!     amble_consent::canonical_json(&v),
//!     br#"{"at":1.5,"given":true,"purpose":"train.intent"}"#
//! );
//! ```

mod error;
mod history;
mod receipt;
mod ts27560;

pub use error::{ConsentError, ReceiptError};
pub use history::{
    AssistanceEvent, AssistanceLevel, ConsentEvent, ConsentEventKind, ConsentHistory, ConsentState,
    HISTORY_FORMAT, Method, Recorded, Right, RightEvent, Terms, UnknownValue, date_of,
};
pub use receipt::{
    Controller, KANTARA_VERSION, RECEIPT_DOMAIN, Receipt, ReceiptEvent, ReceiptIssuer,
    ReceiptPurpose, ReceiptService, SignedReceipt, canonical_json, verify_receipt,
};
pub use ts27560::{to_ts27560, to_ts27560_at};

/// How a receipt describes a purpose. The policy crate builds it from the policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeInfo {
    /// The policy's purpose id (`support`, `train.intent`, …).
    pub id: String,
    /// Plain language, as shown to the person.
    pub description: String,
    /// The categories of data the purpose reads (collection names).
    pub pii_categories: Vec<String>,
    /// Special categories among them (`health`); non-empty makes the receipt `sensitive`.
    pub sensitive_categories: Vec<String>,
    /// Who receives data under this purpose, beyond the controller.
    pub recipients: Vec<String>,
    /// Whether this is the service's primary purpose (Kantara `primaryPurpose`).
    pub primary: bool,
}

/// RFC 3339 in UTC, the one way this crate writes a moment as text.
pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
