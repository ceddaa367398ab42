//! The one place a connection's certificate becomes an [`Actor`]: a tower layer shared by
//! every amble gRPC service (node and coordinator). For each request it reads the verified
//! chain the accept loop attached ([`PeerInfo`]), takes id, role and federation from the
//! leaf's `spiffe://FEDERATION/ROLE/ID`, and admits the call only if
//!
//! 1. the method is in the service's table ([`MethodAccess`]) — otherwise UNIMPLEMENTED;
//! 2. the certificate names this service's federation — a certificate for another
//!    federation is refused even when the same CA signed it;
//! 3. the role is listed for the root the chain verified against: a node's own organisation
//!    CA (`local`) or the federation CA (`federation`). A federation certificate, whatever
//!    role it carries, reaches only the methods listed under `federation`.
//!
//! A refusal answers PERMISSION_DENIED and is recorded through [`Gatekeeper::log_refusal`]
//! (the service's audit log) before the answer leaves. Handlers never look at certificates.

use crate::incoming::PeerInfo;
use amble_audit::{Actor, Origin};
use amble_crypto::pki::{Role, TrustRoot};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;

/// Who may call one method, by the root their certificate chains to.
#[derive(Debug, Clone, Copy)]
pub struct MethodAccess {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// Roles admitted from the listener's own root (`tls.client_ca`).
    pub local: &'static [Role],
    /// Roles admitted from the federation root (`tls.federation_ca` of a node).
    pub federation: &'static [Role],
}

impl MethodAccess {
    /// The roles admitted from `root`.
    pub fn roles(&self, root: TrustRoot) -> &'static [Role] {
        match root {
            TrustRoot::Local => self.local,
            TrustRoot::Federation => self.federation,
        }
    }
}

/// The entry for `path` in `table`, if it is a known method.
pub fn access_of<'a>(table: &'a [MethodAccess], path: &str) -> Option<&'a MethodAccess> {
    table.iter().find(|m| m.path == path)
}

/// What a service tells the layer about itself.
pub trait Gatekeeper: Send + Sync + 'static {
    /// The federation this service belongs to; callers must name the same one.
    fn federation(&self) -> &str;
    /// Records a call to `path` refused for `reason` (blocking: it runs on the blocking pool).
    /// An error means the refusal could not be recorded; the call is refused all the same.
    fn log_refusal(&self, actor: &Actor, path: &str, reason: &str) -> Result<(), String>;
    /// Records a call refused because its verified certificate names no usable identity (no
    /// or a malformed `spiffe://` URI, an unknown role). `certificate` is `cert:` and the first
    /// 16 hex digits of the leaf's SHA-256, so the refusal can be traced to a certificate.
    fn log_unidentified(&self, certificate: &str, path: &str, why: &str) -> Result<(), String>;
    /// A status that refuses every call before it is looked at (e.g. after a storage fault,
    /// while the process is ending); `None` in normal operation.
    fn refuse_all(&self) -> Option<Status> {
        None
    }
}

/// The actor named by the connection's verified certificate, or why it names none.
pub fn actor_of(peer: &PeerInfo) -> Result<Actor, Status> {
    let leaf = peer
        .certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let identity = amble_crypto::pki::identity_of(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    Ok(Actor::certified(
        identity.id,
        identity.role,
        identity.federation,
        peer.root,
    ))
}

/// Why `actor` may not call `access`, or `None` if it may (the three rules of the module doc
/// after the table lookup). A local actor carries no certificate and is refused: the layer
/// admits network calls only.
pub fn refusal(actor: &Actor, access: &MethodAccess, federation: &str) -> Option<String> {
    let Origin::Certificate {
        federation: theirs,
        root,
    } = &actor.origin
    else {
        return Some("a client certificate is required".to_owned());
    };
    if theirs != federation {
        return Some(format!(
            "the certificate is for federation {theirs:?}; this service belongs to {federation:?}"
        ));
    }
    let roles = access.roles(*root);
    if roles.contains(&actor.role) {
        return None;
    }
    let from = match root {
        TrustRoot::Local => "",
        TrustRoot::Federation => " with a federation certificate",
    };
    Some(if roles.is_empty() {
        format!(
            "role {}{from} may not call {}; it is open to no one{from}",
            actor.role, access.path
        )
    } else {
        format!(
            "role {}{from} may not call {}; it is open to: {}",
            actor.role,
            access.path,
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// The layer; see the module doc.
pub struct AuthLayer<G> {
    table: &'static [MethodAccess],
    gate: Arc<G>,
}

impl<G> Clone for AuthLayer<G> {
    fn clone(&self) -> Self {
        AuthLayer {
            table: self.table,
            gate: Arc::clone(&self.gate),
        }
    }
}

impl<G: Gatekeeper> AuthLayer<G> {
    /// A layer that admits calls by `table` and records refusals through `gate`.
    pub fn new(table: &'static [MethodAccess], gate: Arc<G>) -> Self {
        AuthLayer { table, gate }
    }
}

impl<S, G> tower::Layer<S> for AuthLayer<G> {
    type Service = Auth<S, G>;
    fn layer(&self, inner: S) -> Auth<S, G> {
        Auth {
            inner,
            table: self.table,
            gate: Arc::clone(&self.gate),
        }
    }
}

/// The service the layer wraps around each gRPC service.
pub struct Auth<S, G> {
    inner: S,
    table: &'static [MethodAccess],
    gate: Arc<G>,
}

impl<S: Clone, G> Clone for Auth<S, G> {
    fn clone(&self) -> Self {
        Auth {
            inner: self.inner.clone(),
            table: self.table,
            gate: Arc::clone(&self.gate),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, G, B> tower::Service<http::Request<B>> for Auth<S, G>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    G: Gatekeeper,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let answer =
            |status: Status| -> Self::Future { Box::pin(async move { Ok(status.into_http()) }) };
        if let Some(status) = self.gate.refuse_all() {
            return answer(status);
        }
        let path = req.uri().path().to_owned();
        let (actor, in_flight) = match req.extensions().get::<PeerInfo>() {
            Some(peer) => match actor_of(peer) {
                Ok(c) => (c, peer.activity.begin()),
                Err(status) => {
                    let certificate = peer.certs.first().map_or_else(
                        || "cert:none".to_owned(),
                        |leaf| format!("cert:{}", &hex::encode(amble_crypto::sha256(leaf))[..16]),
                    );
                    tracing::warn!(certificate = %certificate, method = %path, "refused a certificate without a usable identity");
                    let gate = Arc::clone(&self.gate);
                    return Box::pin(async move {
                        let why = status.message().to_owned();
                        let logged = tokio::task::spawn_blocking(move || {
                            gate.log_unidentified(&certificate, &path, &why)
                        })
                        .await;
                        Ok(match logged {
                            Ok(Ok(())) => status.into_http(),
                            _ => Status::internal(
                                "call refused, and the refusal could not be logged; see the service's log",
                            )
                            .into_http(),
                        })
                    });
                }
            },
            None => {
                return answer(Status::unauthenticated("a client certificate is required"));
            }
        };
        let Some(access) = access_of(self.table, &path) else {
            return answer(Status::unimplemented(format!(
                "{path} is not a method of this service; see proto/amble/v1"
            )));
        };
        let Some(msg) = refusal(&actor, access, self.gate.federation()) else {
            req.extensions_mut().insert(actor);
            let call = inner.call(req);
            return Box::pin(async move {
                let response = call.await;
                drop(in_flight);
                response
            });
        };
        drop(in_flight);
        tracing::warn!(caller = %actor.id, role = %actor.role, method = %path, "refused call");
        let gate = Arc::clone(&self.gate);
        Box::pin(async move {
            let reason = msg.clone();
            let logged =
                tokio::task::spawn_blocking(move || gate.log_refusal(&actor, &path, &reason)).await;
            match logged {
                Ok(Ok(())) => Ok(Status::permission_denied(msg).into_http()),
                // A refusal that cannot be logged is still a refusal; say the log failed.
                _ => Ok(Status::internal(
                    "call refused, and the refusal could not be logged; see the service's log",
                )
                .into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &[MethodAccess] = &[
        MethodAccess {
            path: "/amble.v1.Archive/Read",
            local: &[Role::App, Role::Agent],
            federation: &[],
        },
        MethodAccess {
            path: "/amble.v1.Audit/Checkpoint",
            local: &[Role::Auditor],
            federation: &[Role::Coordinator],
        },
    ];

    fn caller(role: Role, federation: &str, root: TrustRoot) -> Actor {
        Actor::certified("x", role, federation, root)
    }

    fn access(path: &str) -> &'static MethodAccess {
        access_of(TABLE, path).unwrap()
    }

    #[test]
    fn a_local_role_is_admitted_only_from_the_local_root() {
        let read = access("/amble.v1.Archive/Read");
        assert_eq!(
            refusal(&caller(Role::App, "f", TrustRoot::Local), read, "f"),
            None
        );
        let remote = refusal(&caller(Role::App, "f", TrustRoot::Federation), read, "f").unwrap();
        assert!(remote.contains("federation certificate"), "{remote}");
    }

    #[test]
    fn a_federation_role_reaches_only_the_federation_methods() {
        let checkpoint = access("/amble.v1.Audit/Checkpoint");
        let coord = caller(Role::Coordinator, "f", TrustRoot::Federation);
        assert_eq!(refusal(&coord, checkpoint, "f"), None);
        assert!(refusal(&coord, access("/amble.v1.Archive/Read"), "f").is_some());
        // A federation admin is not the organisation's admin.
        let admin = caller(Role::Auditor, "f", TrustRoot::Federation);
        assert!(refusal(&admin, checkpoint, "f").is_some());
    }

    #[test]
    fn a_certificate_of_another_federation_is_refused_whatever_its_role() {
        let other = caller(Role::Auditor, "other-fed", TrustRoot::Local);
        let why = refusal(&other, access("/amble.v1.Audit/Checkpoint"), "f").unwrap();
        assert!(why.contains("other-fed"), "{why}");
    }

    #[test]
    fn a_local_actor_without_a_certificate_is_refused() {
        let op = Actor::local("operator", Role::Admin);
        assert!(refusal(&op, access("/amble.v1.Audit/Checkpoint"), "f").is_some());
    }

    #[test]
    fn unknown_methods_are_not_in_the_table() {
        assert!(access_of(TABLE, "/amble.v1.Archive/Drop").is_none());
    }
}
