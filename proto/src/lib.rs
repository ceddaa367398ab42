//! amble-proto: the wire contract between amble's participants.
//!
//! `amble/v1/*.proto` define the node's services — `Archive` (apps and agents), `Subject`
//! (data subjects, through the organisation's app or portal), `Audit` (auditors) and `Admin`
//! (operators) — and reserve `Federation` for the coordinator link. The Rust code is generated
//! at build time by protox + tonic-prost-build, so no system `protoc` is needed.
//!
//! Rich documents (a projection, an export, a consent history, audit entries) travel as the
//! same canonical JSON the offline tools read, so an export fetched over gRPC verifies exactly
//! like one written by `amble node export`. Who is calling is never a request field: the
//! server takes the caller's id and role from its client certificate.
//!
//! On the map in `docs/ARCHITECTURE.md` this crate sits beside `crypto`, below `node`.
#![forbid(unsafe_code)]

/// Version 1 of the amble protocol.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("amble.v1");
}
