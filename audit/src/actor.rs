//! Who acts: the one type every service, job and command uses to say who is reading, writing
//! or refused — and therefore who each audit entry names.
//!
//! A call over the network is admitted by `amble-net`'s auth layer, which builds the actor
//! from the verified client certificate ([`Origin::Certificate`]). Everything else acts
//! locally: an operator at the command line, the node's own trainer, a reload on SIGHUP
//! ([`Origin::Local`]).

use crate::{Action, EntryDraft};
use amble_crypto::pki::{Role, TrustRoot};

/// Who is acting: an id and a role, the request id that ties one request's audit entries
/// together, and how the actor was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The certificate's id (`ID` of `spiffe://FEDERATION/ROLE/ID`), or a local name such as
    /// `operator` or `node:trainer`.
    pub id: String,
    /// What the actor does; policy decisions and method tables are by role.
    pub role: Role,
    /// A fresh id (16 hex digits) that correlates the audit entries of one request.
    pub request_id: String,
    /// How the actor was authenticated.
    pub origin: Origin,
}

/// How an [`Actor`] was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// In this process: the operator at the command line, or one of the service's own jobs.
    Local,
    /// By a client certificate the TLS handshake verified.
    Certificate {
        /// The federation the certificate names.
        federation: String,
        /// The root its chain verified against.
        root: TrustRoot,
    },
}

impl Actor {
    /// A local actor (an operator, a job of the service itself) with a fresh request id.
    pub fn local(id: impl Into<String>, role: Role) -> Self {
        Actor {
            id: id.into(),
            role,
            request_id: request_id(),
            origin: Origin::Local,
        }
    }

    /// An actor authenticated by a verified certificate, with a fresh request id.
    pub fn certified(
        id: impl Into<String>,
        role: Role,
        federation: impl Into<String>,
        root: TrustRoot,
    ) -> Self {
        Actor {
            id: id.into(),
            role,
            request_id: request_id(),
            origin: Origin::Certificate {
                federation: federation.into(),
                root,
            },
        }
    }

    /// The federation its certificate names; `None` for a local actor.
    pub fn federation(&self) -> Option<&str> {
        match &self.origin {
            Origin::Local => None,
            Origin::Certificate { federation, .. } => Some(federation),
        }
    }

    /// An audit entry of `action` by this actor, to be completed and appended.
    pub fn draft(&self, action: Action) -> EntryDraft {
        EntryDraft::new(&self.id, self.role.as_str(), action, &self.request_id)
    }
}

/// 16 hex digits from the system RNG. A request id only correlates entries: a failed RNG
/// leaves zeros, not an error.
fn request_id() -> String {
    let mut rid = [0u8; 8];
    let _ = amble_crypto::random_bytes(&mut rid);
    hex::encode(rid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_actor_gets_its_own_request_id_and_drafts_name_it() {
        let a = Actor::local("operator", Role::Admin);
        let b = Actor::certified("crm", Role::App, "f", TrustRoot::Local);
        assert_eq!(a.request_id.len(), 16);
        assert_ne!(a.request_id, b.request_id);
        assert_eq!(a.federation(), None);
        assert_eq!(b.federation(), Some("f"));
        let d = b.draft(Action::Read);
        assert_eq!((d.actor.as_str(), d.role.as_str()), ("crm", "app"));
        assert_eq!(d.request_id, b.request_id);
    }
}
