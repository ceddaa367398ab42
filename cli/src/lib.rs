//! The library half of the `amble` binary: what the binary and its multi-process tests share.
//!
//! [`lab`] builds and drives a whole federation on one machine (CA, coordinator, nodes as
//! separate processes on 127.0.0.1 with mutual TLS); `amble demo` and the tests in
//! `cli/tests/federation.rs` both use it, so the demo shows exactly what the tests check.

pub mod fetch;
pub mod lab;
