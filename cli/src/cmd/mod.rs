//! One file per `amble <word>`: its arguments (clap) and the function that runs it.

pub(crate) mod assist;
pub(crate) mod audit;
pub(crate) mod consent;
pub(crate) mod coordinator;
pub(crate) mod demo;
pub(crate) mod node;
pub(crate) mod pki;
pub(crate) mod policy;
pub(crate) mod privacy;
pub(crate) mod register;
pub(crate) mod subject;
pub(crate) mod train;
