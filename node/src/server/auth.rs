//! Who may call each of the node's methods, and how the node answers the shared auth layer
//! of `amble-net` ([`amble_net::AuthLayer`]): the node's federation, its refusal log, and a
//! refusal of every call after a storage fault.
//!
//! Two trust roots reach a node (docs/THREAT_MODEL.md). Its **organisation's CA**
//! (`tls.client_ca`) signs the local principals: apps, agents, admins, auditors and the
//! portal front end. The **federation CA** (`tls.federation_ca`) signs every member's node and
//! the coordinator: from it only the coordinator is admitted, and only to the audit methods
//! a witness needs. Another organisation's node certificate reaches nothing here.

use super::Shared;
use crate::Actor;
use amble_consent::Method;
use amble_net::{Caller, Gatekeeper, MethodAccess, TrustRoot};
use amble_policy::Role;
use tonic::Status;

const EVERY_LOCAL_ROLE: &[&str] = &["app", "agent", "auditor", "admin", "subject-portal"];

const fn local(path: &'static str, roles: &'static [&'static str]) -> MethodAccess {
    MethodAccess {
        path,
        local: roles,
        federation: &[],
    }
}

const fn witnessed(path: &'static str, roles: &'static [&'static str]) -> MethodAccess {
    MethodAccess {
        path,
        local: roles,
        federation: &["coordinator"],
    }
}

/// Which roles may call each method, by trust root; a method not listed is refused for
/// everyone.
pub const METHODS: &[MethodAccess] = &[
    local("/amble.v1.Archive/Append", &["app", "agent"]),
    local("/amble.v1.Archive/Read", &["app", "agent"]),
    local("/amble.v1.Archive/Link", &["app", "admin"]),
    local("/amble.v1.Archive/Unlink", &["app", "admin"]),
    local(
        "/amble.v1.Subject/GetConsent",
        &["app", "subject-portal", "admin"],
    ),
    local(
        "/amble.v1.Subject/SetConsent",
        &["app", "subject-portal", "admin"],
    ),
    local("/amble.v1.Subject/Export", &["subject-portal", "admin"]),
    local("/amble.v1.Subject/Erase", &["subject-portal", "admin"]),
    local(
        "/amble.v1.Subject/AccessLog",
        &["app", "subject-portal", "admin"],
    ),
    local(
        "/amble.v1.Subject/IssuePortalLink",
        &["app", "subject-portal", "admin"],
    ),
    witnessed("/amble.v1.Audit/Checkpoint", &["auditor", "admin"]),
    local("/amble.v1.Audit/Entries", &["auditor", "admin"]),
    witnessed("/amble.v1.Audit/InclusionProof", &["auditor", "admin"]),
    witnessed("/amble.v1.Audit/ConsistencyProof", &["auditor", "admin"]),
    local("/amble.v1.Admin/ReloadPolicy", &["admin"]),
    local("/amble.v1.Admin/RotateKey", &["admin"]),
    witnessed("/amble.v1.Admin/Health", EVERY_LOCAL_ROLE),
    local("/amble.v1.Assist/Classify", &["app", "agent"]),
    local("/amble.v1.Assist/PredictNeeds", &["app", "agent"]),
];

/// The entry for `path` (`/package.Service/Method`), if it is a method of the node.
pub fn method_access(path: &str) -> Option<&'static MethodAccess> {
    amble_net::access_of(METHODS, path)
}

/// May a caller of `role` from the organisation's own CA call `path`? (The portal asks this
/// of a link's issuer: a link unlocks nothing its issuer may not do.)
pub fn local_role_may_call(role: Role, path: &str) -> bool {
    method_access(path).is_some_and(|m| m.local.contains(&role.as_str()))
}

fn method_for(role: Role) -> Method {
    match role {
        Role::App => Method::App,
        Role::SubjectPortal => Method::Web,
        Role::Agent => Method::Agent,
        _ => Method::Api,
    }
}

/// The node's actor for an admitted (or refused) caller. A role the policy crate does not know
/// cannot come from a certificate `identity_of` accepted; it is refused all the same.
pub(crate) fn actor_of(caller: &Caller) -> Result<Actor, Status> {
    let role: Role = caller.role.parse().map_err(|e| {
        Status::unauthenticated(format!("client certificate carries an unknown role: {e}"))
    })?;
    let mut actor = Actor::new(caller.id.clone(), role, method_for(role));
    actor.request_id.clone_from(&caller.request_id);
    Ok(actor)
}

impl Gatekeeper for Shared {
    fn federation(&self) -> &str {
        &self.federation
    }

    fn log_refusal(&self, caller: &Caller, path: &str) -> Result<(), String> {
        let actor = actor_of(caller).map_err(|s| s.message().to_owned())?;
        let from = match caller.root {
            TrustRoot::Local => String::new(),
            TrustRoot::Federation => " with a federation certificate".to_owned(),
        };
        let reason = if caller.federation != self.federation {
            format!(
                "certificate for federation {:?} may not call {path}",
                caller.federation
            )
        } else {
            format!("role {}{from} may not call {path}", caller.role)
        };
        self.with_node(|node| node.log_denied_call(&actor, &reason))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn log_unidentified(&self, certificate: &str, path: &str, why: &str) -> Result<(), String> {
        let reason = format!("{path}: {why}");
        self.with_node(|node| node.log_unidentified_call(certificate, &reason))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn refuse_all(&self) -> Option<Status> {
        crate::fault::tripped().map(|why| {
            Status::unavailable(format!(
                "the node stopped serving after a storage fault ({why}); it is restarting"
            ))
        })
    }
}
