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
use amble_net::{Gatekeeper, MethodAccess, Role};
use tonic::Status;

use Role::{Admin, Agent, App, Auditor, Coordinator, PrivacyOfficer, SubjectPortal};

const EVERY_LOCAL_ROLE: &[Role] = &[App, Agent, Auditor, Admin, SubjectPortal];

const fn local(path: &'static str, roles: &'static [Role]) -> MethodAccess {
    MethodAccess {
        path,
        local: roles,
        federation: &[],
    }
}

const fn witnessed(path: &'static str, roles: &'static [Role]) -> MethodAccess {
    MethodAccess {
        path,
        local: roles,
        federation: &[Coordinator],
    }
}

/// Which roles may call each method, by trust root; a method not listed is refused for
/// everyone.
pub const METHODS: &[MethodAccess] = &[
    local("/amble.v1.Archive/Append", &[App, Agent]),
    local("/amble.v1.Archive/Read", &[App, Agent]),
    local("/amble.v1.Archive/Link", &[App, Admin]),
    local("/amble.v1.Archive/Unlink", &[App, Admin]),
    local("/amble.v1.Subject/GetConsent", &[App, SubjectPortal, Admin]),
    local("/amble.v1.Subject/SetConsent", &[App, SubjectPortal, Admin]),
    local("/amble.v1.Subject/Export", &[SubjectPortal, Admin]),
    local("/amble.v1.Subject/Erase", &[SubjectPortal, Admin]),
    local("/amble.v1.Subject/AccessLog", &[App, SubjectPortal, Admin]),
    local(
        "/amble.v1.Subject/SetAssistance",
        &[App, SubjectPortal, Admin],
    ),
    local(
        "/amble.v1.Subject/SetRestriction",
        &[App, SubjectPortal, Admin],
    ),
    local(
        "/amble.v1.Subject/SetObjection",
        &[App, SubjectPortal, Admin],
    ),
    local("/amble.v1.Subject/Rectify", &[App, SubjectPortal, Admin]),
    local(
        "/amble.v1.Subject/RequestReview",
        &[App, SubjectPortal, Admin],
    ),
    local(
        "/amble.v1.Subject/IssuePortalLink",
        &[App, SubjectPortal, Admin],
    ),
    witnessed("/amble.v1.Audit/Checkpoint", &[Auditor, Admin]),
    local("/amble.v1.Audit/Entries", &[Auditor, Admin]),
    witnessed("/amble.v1.Audit/InclusionProof", &[Auditor, Admin]),
    witnessed("/amble.v1.Audit/ConsistencyProof", &[Auditor, Admin]),
    local("/amble.v1.Admin/ReloadPolicy", &[Admin]),
    local("/amble.v1.Admin/RotateKey", &[Admin]),
    witnessed("/amble.v1.Admin/Health", EVERY_LOCAL_ROLE),
    local("/amble.v1.Register/ListRequests", &[PrivacyOfficer, Admin]),
    local("/amble.v1.Register/AnswerRequest", &[PrivacyOfficer, Admin]),
    local("/amble.v1.Assist/Classify", &[App, Agent]),
    local("/amble.v1.Assist/PredictNeeds", &[App, Agent]),
];

/// The entry for `path` (`/package.Service/Method`), if it is a method of the node.
pub fn method_access(path: &str) -> Option<&'static MethodAccess> {
    amble_net::access_of(METHODS, path)
}

/// May a caller of `role` from the organisation's own CA call `path`? (The portal asks this
/// of a link's issuer: a link unlocks nothing its issuer may not do.)
pub fn local_role_may_call(role: Role, path: &str) -> bool {
    method_access(path).is_some_and(|m| m.local.contains(&role))
}

impl Gatekeeper for Shared {
    fn federation(&self) -> &str {
        &self.federation
    }

    fn log_refusal(&self, actor: &Actor, path: &str, reason: &str) -> Result<(), String> {
        let reason = if reason.contains(path) {
            reason.to_owned()
        } else {
            format!("{path}: {reason}")
        };
        self.with_node(|node| node.log_denied_call(actor, &reason))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_the_node_serves_has_a_role_list() {
        let served: Vec<String> = ["Archive", "Subject", "Audit", "Admin", "Register", "Assist"]
            .into_iter()
            .flat_map(amble_proto::method_paths)
            .collect();
        for path in &served {
            assert!(
                method_access(path).is_some(),
                "{path} is served but not in METHODS: every call to it would be refused"
            );
        }
        assert_eq!(
            served.len(),
            METHODS.len(),
            "METHODS lists a method no service declares"
        );
    }
}
