//! amble-node: the node an organisation runs on premises.
//!
//! This crate holds the **life archive**: each person (a *subject*, known only
//! by a pseudonym) has records in collections (`profile`, `life_stage`, `goals`, `events`,
//! `interactions`, `health`), each sealed with that subject's own data key. Several external
//! references (`phone:…`, `email:…`) can point at one subject. Erasing a subject destroys
//! its key first, so every copy of its records, backups included, becomes unreadable.
//!
//! [`Node`] is the one access path: reads name a purpose and pass the subject's consent and the
//! policy (`amble-policy`), and every operation is appended to the audit log (`amble-audit`)
//! before the data it describes is touched.
//!
//! Storage is behind one trait (`store/`), with the embedded engine as its implementation; a
//! second engine goes beside it without touching the rest of the crate. On
//! the map in `docs/ARCHITECTURE.md` this crate sits above `crypto` (keys, sealing,
//! pseudonyms) and below the `amble` binary.
//!
//! ```
//! use amble_consent::Method;
//! use amble_crypto::ExternalRef;
//! use amble_node::{Actor, Collection, NewRecord, Node, ReadOutcome, TimeRange};
//! use amble_policy::Role;
//!
//! let dir = tempfile::tempdir()?;
//! let node = Node::init(dir.path(), None)?; // a new key file, the example policy
//! let crm = Actor::local("crm", Role::App,);
//! let ann = ExternalRef::parse("phone:+15550100")?;
//! let serde_json::Value::Object(data) = serde_json::json!({"display_name": "Ann"}) else { unreachable!() };
//! node.append(&crm, &ann, &NewRecord { collection: Collection::Profile, time: node.now(), data })?;
//! // Training reads only people who consented to it; Ann has not.
//! let trainer = Actor::local("trainer", Role::Node,);
//! let read = node.read(&trainer, &ann, "train.intent", TimeRange::ALL)?;
//! assert!(matches!(read, ReadOutcome::Denied(_)));
//! // Both the append and the refused read are in the audit log.
//! assert!(node.audit_log().size() >= 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod archive;
pub mod assist;
mod backup;
mod collection;
mod error;
pub mod fault;
pub mod ingest;
pub mod needs;
mod node;
pub mod register;
pub mod server;
mod store;
mod train;
mod training;

pub use archive::{
    Appended, EXPORT_SCHEMA, EraseReport, ExportedRecord, MergeReport, NewRecord, RotateReport,
    SubjectExport, TimeRange, default_key_file,
};
pub use backup::{
    BACKUP_FORMAT, BackupError, BackupReport, Progress, RestoreReport, TreeCount, restore,
    restore_with_progress,
};
pub use collection::Collection;
pub use error::{NodeError, Result};
pub use needs::{NeedsAnswer, NeedsError, NeedsRun, NeedsTrainConfig, TRAIN_NEEDS};
pub use node::{
    Actor, ConsentChange, EXAMPLE_POLICY, ExportSignature, Node, ReadOutcome, ReviewRequested,
    SignedExport, SweepReport,
};
pub use train::{ModelInfo, RoundRun, RoundTask, TRAIN_INTENT, TrainRun};
