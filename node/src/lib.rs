//! amble-node: the node an organisation runs on premises.
//!
//! This crate holds the **life archive** ([`Archive`]): each person (a *subject*, known only
//! by a pseudonym) has records in collections (`profile`, `life_stage`, `goals`, `events`,
//! `interactions`, `health`), each sealed with that subject's own data key. Several external
//! references (`phone:…`, `email:…`) can point at one subject. Erasing a subject destroys
//! its key first, so every copy of its records, backups included, becomes unreadable.
//!
//! Storage is sled, kept behind the narrow seam in `store.rs` so it can be replaced. On
//! the map in `docs/ARCHITECTURE.md` this crate sits above `crypto` (keys, sealing,
//! pseudonyms) and below the `amble` binary.
#![forbid(unsafe_code)]

mod archive;
mod collection;
mod error;
pub mod ingest;
mod store;

pub use archive::{
    Appended, Archive, EXPORT_SCHEMA, EraseReport, ExportedRecord, MergeReport, NewRecord,
    Record, RotateReport, SubjectExport, TimeRange, default_key_file,
};
pub use collection::Collection;
pub use error::{NodeError, Result};
