//! The one place a caller becomes an [`Actor`]: a tower layer that reads id and role from the
//! verified client certificate, checks the method's allowed roles, and either passes the
//! request on with the `Actor` in its extensions or answers PERMISSION_DENIED and logs the
//! refusal in the audit log. Handlers never look at certificates or request fields for this.

use super::Shared;
use crate::Actor;
use amble_consent::Method;
use amble_policy::Role;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use Role::{Admin, Agent, App, Auditor, Coordinator, Node, SubjectPortal};

const EVERYONE: &[Role] = &[Coordinator, Node, App, Agent, Auditor, Admin, SubjectPortal];

/// Which roles may call each method; a method not listed here is refused for everyone.
pub const METHOD_ROLES: &[(&str, &[Role])] = &[
    ("/amble.v1.Archive/Append", &[App, Agent, Node]),
    ("/amble.v1.Archive/Read", &[App, Agent, Node]),
    ("/amble.v1.Archive/Link", &[App, Admin]),
    ("/amble.v1.Archive/Unlink", &[App, Admin]),
    ("/amble.v1.Subject/GetConsent", &[App, SubjectPortal, Admin]),
    ("/amble.v1.Subject/SetConsent", &[App, SubjectPortal, Admin]),
    ("/amble.v1.Subject/Export", &[SubjectPortal, Admin]),
    ("/amble.v1.Subject/Erase", &[SubjectPortal, Admin]),
    ("/amble.v1.Subject/AccessLog", &[App, SubjectPortal, Admin]),
    ("/amble.v1.Subject/IssuePortalLink", &[App, SubjectPortal]),
    ("/amble.v1.Audit/Checkpoint", &[Auditor, Admin, Coordinator]),
    ("/amble.v1.Audit/Entries", &[Auditor, Admin]),
    (
        "/amble.v1.Audit/InclusionProof",
        &[Auditor, Admin, Coordinator],
    ),
    (
        "/amble.v1.Audit/ConsistencyProof",
        &[Auditor, Admin, Coordinator],
    ),
    ("/amble.v1.Admin/ReloadPolicy", &[Admin]),
    ("/amble.v1.Admin/RotateKey", &[Admin]),
    ("/amble.v1.Admin/Health", EVERYONE),
    ("/amble.v1.Assist/Classify", &[App, Agent]),
    ("/amble.v1.Assist/PredictNeeds", &[App, Agent]),
];

/// The roles allowed to call `path` (`/package.Service/Method`), if it is a known method.
pub fn allowed_roles(path: &str) -> Option<&'static [Role]> {
    METHOD_ROLES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, roles)| *roles)
}

fn method_for(role: Role) -> Method {
    match role {
        Role::App => Method::App,
        Role::SubjectPortal => Method::Web,
        Role::Agent => Method::Agent,
        _ => Method::Api,
    }
}

/// The actor a verified certificate chain names, or why it names none.
fn actor_from_certs<B>(req: &http::Request<B>) -> Result<Actor, Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs)
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let identity = amble_crypto::pki::identity_of(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    let role: Role = identity.role.parse().map_err(|e| {
        Status::unauthenticated(format!("client certificate carries an unknown role: {e}"))
    })?;
    Ok(Actor::new(identity.id, role, method_for(role)))
}

/// The layer; see the module doc.
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

impl AuthLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        AuthLayer { shared }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
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
        let path = req.uri().path().to_owned();
        let actor = match actor_from_certs(&req) {
            Ok(a) => a,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let Some(roles) = allowed_roles(&path) else {
            return Box::pin(async move {
                Ok(Status::unimplemented(format!(
                    "{path} is not a method of this node; see proto/amble/v1"
                ))
                .into_http())
            });
        };
        if roles.contains(&actor.role) {
            req.extensions_mut().insert(actor);
            return Box::pin(inner.call(req));
        }
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            let msg = format!(
                "role {} may not call {path}; it is open to: {}",
                actor.role,
                allowed.join(", ")
            );
            tracing::warn!(caller = %actor.id, role = %actor.role, method = %path, "refused call");
            let logged = tokio::task::spawn_blocking(move || {
                shared.with_node(|node| node.log_denied_call(&actor, &path))
            })
            .await;
            match logged {
                Ok(Ok(_)) => Ok(Status::permission_denied(msg).into_http()),
                // A refusal that cannot be logged is still a refusal; say the log failed.
                _ => Ok(Status::internal(
                    "call refused, and the refusal could not be logged; see the node's log",
                )
                .into_http()),
            }
        })
    }
}
