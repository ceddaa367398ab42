//! amble-audit: the tamper-evident record of every access to a life archive.
//!
//! Every read, write, consent change, export, erasure, key rotation, retention sweep and
//! training run at a node becomes one [`Entry`] in an append-only Merkle log. The log's
//! checkpoints are signed by the node and can be cosigned by the coordinator as a witness, so
//! the node cannot quietly rewrite its history; an auditor checks everything offline with
//! public keys only. In the map of `docs/ARCHITECTURE.md` this crate sits just above
//! `amble-crypto` (SHA-256, Ed25519, pseudonyms); `node` appends to it, `coordinator`
//! cosigns its checkpoints, and `cli` (`amble audit …`) calls [`export_dir`] and [`verify_dir`].
//!
//! The data model is small and standard, so an independent implementation can check it:
//!
//! - **Hashing** — RFC 9162 §2.1.1: leaf = SHA-256(0x00 ‖ canonical entry JSON),
//!   node = SHA-256(0x01 ‖ left ‖ right) ([`hash`]).
//! - **Proofs** — RFC 9162 inclusion and consistency proofs, built from stored subtree hashes
//!   in O(log n) lookups ([`AuditLog::inclusion_proof`], [`AuditLog::consistency_proof`]) and
//!   checked by pure functions ([`verify_inclusion`], [`verify_consistency`]) that pass the
//!   transparency-dev/merkle test vectors (and so do [`verify_subtree_inclusion`] and
//!   [`verify_subtree_consistency`], for the newer subtree proofs amble does not issue).
//! - **Checkpoints** — C2SP `tlog-checkpoint` bodies in C2SP signed notes with Ed25519 keys
//!   ([`note`]); unknown cosigners are ignored, as the spec asks.
//! - **Entries** — canonical JSON with a fixed field order ([`Entry`]); a subject appears
//!   only as its pseudonym, never as an external reference, and never with record contents.
//!
//! Storage is behind one trait ([`store::LogStore`]); sled, in the service's own database, is the
//! embedded engine ([`AuditLog::open`]). See [`log`] for the crash
//! and concurrency argument (entries are written before the data they describe). Retention
//! ([`AuditLog::prune_before`]) removes old entry bodies but keeps their hashes, so the tree,
//! its proofs and exports stay verifiable.
//!
//! ```
//! use amble_audit::{Action, AuditLog, EntryDraft};
//!
//! let db = sled::Config::new().temporary(true).open()?;
//! let log = AuditLog::open(&db)?;
//! log.append_durable(EntryDraft::new("desk-1", "agent", Action::Read, "support"))?;
//! log.append_durable(EntryDraft::new("crm", "app", Action::Append, "ingest"))?;
//! assert_eq!(log.size(), 2);
//! // Each entry is a leaf of the log's Merkle tree; the root commits to every one.
//! let first = log.entries(0..1)?;
//! assert_eq!(first[0].actor, "desk-1");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod actor;
pub mod clock;
mod entry;
mod error;
mod export;
pub mod hash;
pub mod log;
pub mod note;
mod proof;
pub mod store;
mod tree;

pub use actor::{Actor, Origin};
pub use clock::{Clock, ManualClock, SystemClock};
pub use entry::{Action, Decision, Entry, EntryDraft};
pub use error::{
    AuditError, EntryError, NoteError, ProofError, StorageError, StorageErrorKind, VerifyError,
};
pub use export::{
    CHECKPOINT_FILE, ENTRIES_FILE, ExportSummary, LOG_KEY_FILE, PREFIX_FILE, PrunedPrefix,
    VerifyReport, WITNESSED_FILE, Witnessed, export_dir, verify_dir,
};
pub use hash::{Hash, empty_root, leaf_hash, node_hash};
pub use log::AuditLog;
pub use note::{Checkpoint, NoteSigner, NoteVerifier, OpenedNote, key_id, open_note, verify_note};
pub use proof::{
    ConsistencyProof, InclusionProof, root_from_inclusion_proof, verify_consistency,
    verify_inclusion, verify_subtree_consistency, verify_subtree_inclusion,
};
pub use tree::{Frontier, MemoryTree, reference_root};
