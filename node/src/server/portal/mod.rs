//! The self-service web page: an optional second listener (HTTPS, TLS 1.3, server
//! certificate only — a person's browser has no client certificate) where a person who opened
//! a one-time link sees their consents in plain language, gives or withdraws them, downloads
//! their export and asks for erasure.
//!
//! A link ([`PortalLinks::issue`]) carries a random 32-byte token that expires after
//! `link_ttl_secs` and opens exactly one session; the session lives in an `HttpOnly; Secure;
//! SameSite=Strict` cookie and every form carries a per-session CSRF token. Every action goes
//! through [`Node`](crate::Node) as the actor `subject-portal` (role `subject-portal`, method
//! `web`), so it is checked and audited like any other call. Pages are rendered on the server,
//! every value HTML-escaped, no script.

mod text;

use super::{ServerError, Shared};
use crate::{Actor, ConsentChange};
use amble_audit::Clock;
use amble_consent::{AssistanceLevel, ConsentEventKind, ConsentState};
use amble_crypto::ExternalRef;
use amble_policy::{Language, LegalBasis, Role};
use askama::Template;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use text::{Choice, Text};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// `__Host-`: the browser keeps it only if it is `Secure`, has `Path=/` and no `Domain`, so no
/// other host can set or shadow it.
const COOKIE: &str = "__Host-amble_portal";
/// The header that ends the session's cookie.
const CLEAR_COOKIE: &str =
    "__Host-amble_portal=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict";
const MAX_FORM_BYTES: usize = 8 * 1024;
const MAX_OPEN: usize = 10_000;
/// Open links one issuer may hold at once, so that one app cannot use up the table.
const MAX_OPEN_PER_ISSUER: usize = 1_000;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Longest a form's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests one session may make: `SESSION_BURST` at once, then `SESSION_RATE` a second. A
/// person clicking through their page never meets it; a script looping on one session gets
/// 429 answers that touch neither the node nor its audit log.
const SESSION_RATE: f64 = 4.0;
const SESSION_BURST: f64 = 20.0;

/// `[portal]` in `node.toml`: where the self-service page listens and its certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Address the page listens on (HTTPS), e.g. `0.0.0.0:8443`.
    pub listen: SocketAddr,
    /// The page's certificate chain (PEM), trusted by people's browsers.
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// How long a one-time link stays valid.
    #[serde(default = "default_link_ttl")]
    pub link_ttl_secs: u64,
    /// How long a session opened by a link lasts.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
}

fn default_link_ttl() -> u64 {
    15 * 60
}

fn default_session_ttl() -> u64 {
    30 * 60
}

impl PortalConfig {
    pub(crate) fn absolutize(&mut self, base: &Path) {
        for p in [&mut self.cert, &mut self.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

/// Who issued a link: what the link may unlock, and whom the audit log names for its use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Issuer {
    id: String,
    role: Role,
}

impl Issuer {
    /// Whether the link's session may call the node's `method` (a `Subject` method).
    fn may(&self, method: &str) -> bool {
        super::auth::local_role_may_call(self.role, &format!("/amble.v1.Subject/{method}"))
    }

    /// The actor of every action taken through the link.
    fn actor(&self) -> Actor {
        Actor::local(
            format!("portal-link/{}/{}", self.role, self.id),
            Role::SubjectPortal,
        )
    }
}

struct Pending {
    reference: ExternalRef,
    issuer: Issuer,
    /// By the node's clock, in ms since the epoch.
    expires: u64,
}

#[derive(Clone)]
struct Session {
    reference: ExternalRef,
    issuer: Issuer,
    csrf: String,
    /// By the node's clock, in ms since the epoch.
    expires: u64,
    /// Requests the session may still make now (a token bucket), as of `refilled` (ms).
    allowance: f64,
    refilled: u64,
    /// The language the person chose on the page, over their browser's.
    language: Option<Language>,
}

/// Why a session's request is not served.
enum Refused {
    /// No such session, or it expired.
    Ended,
    /// The session is going faster than [`SESSION_RATE`].
    TooFast,
}

#[derive(Default)]
struct Store {
    links: HashMap<String, Pending>,
    sessions: HashMap<String, Session>,
}

/// Issues one-time links to the page; cheap to clone, shared with the running listener.
#[derive(Clone)]
pub struct PortalLinks {
    store: Arc<Mutex<Store>>,
    shared: Arc<Shared>,
    link_ttl: Duration,
    session_ttl: Duration,
    /// The node's clock: links and sessions expire by it.
    clock: Arc<dyn Clock>,
    /// Who the page speaks for, as of the last page that read the policy: pages that refuse
    /// (a bad link, a session going too fast) show it without touching the node.
    org: Arc<Mutex<Arc<Org>>>,
}

/// The organisation the page speaks for: the controller in the node's policy.
#[derive(Default)]
struct Org {
    name: Option<String>,
    contact: Option<String>,
}

impl Org {
    /// The policy's `[controller]`; nothing when it names none (the page then shows neither).
    fn of(policy: &amble_policy::Policy) -> Org {
        match policy.controller() {
            Some(c) => Org {
                name: Some(c.pii_controller.clone()),
                contact: Some(format!("{}, {}, {}", c.contact, c.email, c.phone)),
            },
            None => Org::default(),
        }
    }
}

fn token() -> Result<String, ServerError> {
    let mut b = [0u8; 32];
    amble_crypto::random_bytes(&mut b).map_err(|e| ServerError::Tls(format!("random: {e}")))?;
    Ok(hex::encode(b))
}

impl PortalLinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        match self.store.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// A fresh single-use token for the subject `reference` (which must be known to the node);
    /// the link is `https://PORTAL/?t=TOKEN`. Issued as the node operator (`node:portal`).
    pub fn issue(&self, reference: &str) -> Result<String, ServerError> {
        let r = ExternalRef::parse(reference)
            .map_err(|e| ServerError::Config(format!("reference: {e}")))?;
        let who = Actor::local("node:portal", Role::Admin);
        self.issue_for(&who, &r)
    }

    /// Seconds a new link stays valid.
    pub fn link_ttl_secs(&self) -> u64 {
        self.link_ttl.as_secs()
    }

    /// Issues a link on behalf of `who` (the caller of `Subject.IssuePortalLink`); the
    /// issuance is audited as a read of the subject's consent (what the link opens).
    pub(crate) fn issue_for(&self, who: &Actor, r: &ExternalRef) -> Result<String, ServerError> {
        let issuer = Issuer {
            id: who.id.clone(),
            role: who.role,
        };
        // Checked before the issuance is logged, so a refused link leaves no entry saying it
        // was issued; concurrent issuers may pass it together, which only bends the bound.
        self.room_for(&issuer)?;
        self.shared.with_node(|n| n.record_portal_link(who, r))?;
        let t = token()?;
        let mut s = self.lock();
        s.links.insert(
            t.clone(),
            Pending {
                reference: r.clone(),
                issuer,
                expires: self.clock.now_ms() + self.link_ttl.as_millis() as u64,
            },
        );
        Ok(t)
    }

    /// Refuses a new link when `issuer` or the node holds as many open links as allowed.
    fn room_for(&self, issuer: &Issuer) -> Result<(), ServerError> {
        let now = self.clock.now_ms();
        let mut s = self.lock();
        s.links.retain(|_, p| p.expires > now);
        let mine = s.links.values().filter(|p| p.issuer == *issuer).count();
        if mine >= MAX_OPEN_PER_ISSUER {
            return Err(ServerError::Busy(format!(
                "{} {} holds {mine} open portal links, the most one issuer may; links expire \
                 after {} s",
                issuer.role,
                issuer.id,
                self.link_ttl.as_secs()
            )));
        }
        if s.links.len() >= MAX_OPEN {
            return Err(ServerError::Busy(format!(
                "the node holds {MAX_OPEN} open portal links; try again when some expire"
            )));
        }
        Ok(())
    }

    /// Consumes a link token and opens a session: (session id, CSRF token).
    fn open(&self, t: &str) -> Option<(String, String)> {
        let now = self.clock.now_ms();
        let mut s = self.lock();
        let p = s.links.remove(t)?;
        if p.expires <= now {
            return None;
        }
        let sid = token().ok()?;
        let csrf = token().ok()?;
        s.sessions.retain(|_, x| x.expires > now);
        if s.sessions.len() >= MAX_OPEN {
            return None;
        }
        s.sessions.insert(
            sid.clone(),
            Session {
                reference: p.reference,
                issuer: p.issuer,
                csrf: csrf.clone(),
                expires: now + self.session_ttl.as_millis() as u64,
                allowance: SESSION_BURST,
                refilled: now,
                language: None,
            },
        );
        Some((sid, csrf))
    }

    /// Who the page speaks for, as last read.
    fn org(&self) -> Arc<Org> {
        match self.org.lock() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Keeps `org`, read from the policy in force, for the pages that do not read it.
    fn remember(&self, org: &Arc<Org>) {
        match self.org.lock() {
            Ok(mut g) => *g = Arc::clone(org),
            Err(p) => *p.into_inner() = Arc::clone(org),
        }
    }

    /// Remembers the language the person chose for the rest of the session.
    fn set_language(&self, sid: &str, language: Language) {
        if let Some(x) = self.lock().sessions.get_mut(sid) {
            x.language = Some(language);
        }
    }

    /// The session `sid`, charged one request.
    fn session(&self, sid: &str) -> Result<Session, Refused> {
        let now = self.clock.now_ms();
        let mut s = self.lock();
        let x = s.sessions.get_mut(sid).ok_or(Refused::Ended)?;
        if x.expires <= now {
            return Err(Refused::Ended);
        }
        let earned = now.saturating_sub(x.refilled) as f64 / 1000.0 * SESSION_RATE;
        x.allowance = (x.allowance + earned).min(SESSION_BURST);
        x.refilled = now;
        if x.allowance < 1.0 {
            return Err(Refused::TooFast);
        }
        x.allowance -= 1.0;
        Ok(x.clone())
    }

    /// Ends one session (the person signed out).
    fn end_session(&self, sid: &str) {
        self.lock().sessions.remove(sid);
    }

    /// Ends every session and link of the subject of `r` (after erasure nothing is left to see).
    fn end_all(&self, r: &ExternalRef) {
        let mut s = self.lock();
        s.sessions.retain(|_, x| x.reference != *r);
        s.links.retain(|_, x| x.reference != *r);
    }
}

/// The bound, not yet running listener.
pub(crate) struct Portal {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    pub(crate) links: PortalLinks,
}

impl Portal {
    pub(crate) async fn bind(c: &PortalConfig, shared: Arc<Shared>) -> Result<Portal, ServerError> {
        // The one listener without client certificates: browsers reach it (see amble_net::dangerous).
        let tls = amble_net::dangerous::browser_server_config(&c.cert, &c.key)?;
        let listener = TcpListener::bind(c.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: c.listen,
                source,
            })?;
        let org = shared.with_node(|n| Org::of(&n.policy()));
        Ok(Portal {
            listener,
            tls,
            links: PortalLinks {
                store: Arc::default(),
                clock: shared.with_node(|n| n.clock()),
                shared,
                link_ttl: Duration::from_secs(c.link_ttl_secs.max(1)),
                session_ttl: Duration::from_secs(c.session_ttl_secs.max(1)),
                org: Arc::new(Mutex::new(Arc::new(org))),
            },
        })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(crate) async fn run(
        self,
        max_connections: usize,
        handshake: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let connections = Arc::new(tokio::sync::Semaphore::new(max_connections));
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        loop {
            let accepted = tokio::select! {
                _ = stop.changed() => break,
                a = self.listener.accept() => a,
            };
            let tcp = match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "portal accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                continue;
            };
            let acceptor = acceptor.clone();
            let links = self.links.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
                let svc = hyper::service::service_fn(move |req| {
                    let links = links.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&links, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Some(handshake))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                // A page needs seconds, not hours: bound how long one connection may live.
                match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                    Ok(Err(e)) => tracing::debug!(error = %e, "portal connection ended"),
                    Err(_) => tracing::debug!("portal connection closed after its lifetime"),
                    Ok(Ok(())) => {}
                }
            });
        }
    }
}

type Resp = Response<Full<Bytes>>;

/// Runs `f` on the node on a blocking worker (the node does disk I/O), sharing the node with
/// every other request: page views, consent changes and exports need no exclusive lock.
async fn on_node<T: Send + 'static>(
    links: &PortalLinks,
    f: impl FnOnce(&crate::Node) -> crate::Result<T> + Send + 'static,
) -> Result<T, String> {
    let shared = Arc::clone(&links.shared);
    match tokio::task::spawn_blocking(move || shared.with_node(f)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("worker failed: {e}")),
    }
}

/// As [`on_node`], with the node alone (erasure rotates the master key).
async fn on_node_mut<T: Send + 'static>(
    links: &PortalLinks,
    f: impl FnOnce(&mut crate::Node) -> crate::Result<T> + Send + 'static,
) -> Result<T, String> {
    let shared = Arc::clone(&links.shared);
    match tokio::task::spawn_blocking(move || shared.with_node_mut(f)).await {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("worker failed: {e}")),
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    let set = |h: &mut http::HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, http::HeaderValue::from_static(v));
    };
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    r
}

fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

/// What every page shows around its content: the organisation, the language switch, the
/// privacy contact; and the language it is written in.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    t: &'static Text,
    org: &'a Org,
}

impl Ctx<'_> {
    /// Every language the page speaks, for the switch.
    fn languages(&self) -> [&'static Text; 3] {
        text::ALL
    }
}

/// One purpose on the consents page.
struct PurposeView {
    id: String,
    description: String,
    /// The description's language, when it is not the page's (the policy lacks a translation).
    lang: Option<Language>,
    given: bool,
    /// When and how the consent was given, withdrawn or lapsed.
    since: Option<String>,
}

/// One AI-assistance level on the consents page.
struct LevelView {
    value: &'static str,
    description: &'static str,
    chosen: bool,
}

/// One legitimate-interest purpose the person may object to.
struct ObjectView {
    id: String,
    description: String,
    lang: Option<Language>,
    objected: bool,
}

/// One receipt of a choice the person made.
struct ReceiptView {
    when: String,
    what: String,
    how: &'static str,
    id: String,
}

/// What the consents page shows, read from the node in one go.
struct Rights {
    purposes: Vec<PurposeView>,
    levels: Vec<LevelView>,
    objectable: Vec<ObjectView>,
    restricted_since: Option<String>,
    receipts: Vec<ReceiptView>,
    /// Who the page speaks for, read with the rest.
    org: Arc<Org>,
}

/// The page a session sees: its consents, and what its link allows (`templates/portal/`).
#[derive(Template)]
#[template(path = "portal/consents.html")]
struct ConsentsPage<'a> {
    c: Ctx<'a>,
    title: &'a str,
    purposes: &'a [PurposeView],
    csrf: &'a str,
    may_export: bool,
    may_erase: bool,
    may_assist: bool,
    levels: &'a [LevelView],
    may_restrict: bool,
    restricted_since: Option<&'a str>,
    may_object: bool,
    objectable: &'a [ObjectView],
    may_log: bool,
    receipts: &'a [ReceiptView],
}

/// One entry of the person's access log, in plain language.
struct LogView {
    seq: u64,
    action: String,
    when: String,
    what: String,
    who: &'static str,
    refused: bool,
    /// An automated routing the person may ask a person to review.
    reviewable: bool,
}

/// The person's access log (`templates/portal/log.html`).
#[derive(Template)]
#[template(path = "portal/log.html")]
struct LogPage<'a> {
    c: Ctx<'a>,
    title: &'a str,
    entries: &'a [LogView],
    csrf: &'a str,
    may_review: bool,
}

/// The most entries the log page shows.
const LOG_PAGE_ENTRIES: usize = 200;
/// The most receipts the consents page shows.
const RECEIPTS_SHOWN: usize = 100;

/// What an audit entry says was done, in words the person understands.
fn plain(t: &Text, e: &amble_audit::Entry, policy: &amble_policy::Policy) -> String {
    use amble_audit::Action;
    let purpose = e.purpose.as_deref().map(|p| {
        policy.purpose(p).map_or_else(
            || p.to_owned(),
            |x| x.description_in(t.lang).text.to_owned(),
        )
    });
    let reason = e.reason.as_deref().unwrap_or("");
    let p = purpose.as_deref().unwrap_or("");
    match &e.action {
        Action::Read if purpose.is_some() => (t.read_for)(p),
        Action::Read => (t.looked_up)(reason),
        Action::Append => t.appended.to_owned(),
        Action::ConsentChange => match choice_of(reason, p) {
            Some(c) => t.choice(&c),
            None => (t.choice_changed)(p),
        },
        Action::Train => (t.trained)(p),
        Action::Assist => t.routed.to_owned(),
        Action::ReviewRequest => t.review_requested.to_owned(),
        Action::RequestAnswer => t.request_answered.to_owned(),
        Action::Rectify => t.rectified.to_owned(),
        Action::Export => t.exported.to_owned(),
        Action::PortalLink => t.link_issued.to_owned(),
        Action::Link | Action::Unlink | Action::Merge => t.identity_changed.to_owned(),
        other => (t.other_action)(other.as_str()),
    }
}

/// The choice a `consent_change` entry's reason records (`given`, `restriction=on`,
/// `ai_assistance=human_only`…), about `purpose` (already in words).
fn choice_of<'a>(reason: &str, purpose: &'a str) -> Option<Choice<'a>> {
    Some(match reason.split_once('=') {
        None => match reason {
            "given" => Choice::Consent(ConsentEventKind::Given, purpose),
            "withdrawn" => Choice::Consent(ConsentEventKind::Withdrawn, purpose),
            "expired" => Choice::Consent(ConsentEventKind::Expired, purpose),
            _ => return None,
        },
        Some(("restriction", v)) => Choice::Restriction(v == "on"),
        Some(("objection", v)) => Choice::Objection(purpose, v == "on"),
        Some(("ai_assistance", v)) => Choice::Assistance(v.parse().ok()?),
        Some(_) => return None,
    })
}

/// Every other page: a title and a sentence or two. The template escapes every value.
#[derive(Template)]
#[template(path = "portal/message.html")]
struct Message<'a> {
    c: Ctx<'a>,
    title: &'a str,
    /// The element id tests and scripts find the text by.
    id: Option<&'a str>,
    text: Option<&'a str>,
    hint: Option<&'a str>,
    /// Show a link back to the consents page.
    back: bool,
}

impl<'a> Message<'a> {
    fn new(c: Ctx<'a>, title: &'a str) -> Message<'a> {
        Message {
            c,
            title,
            id: None,
            text: None,
            hint: None,
            back: false,
        }
    }
}

/// A rendered page; a template that fails to render (it cannot, short of a bug) is a 500 with
/// a fixed text.
fn render(status: StatusCode, page: &impl Template) -> Resp {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "portal page failed to render");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "Something went wrong.",
            )
        }
    }
}

/// A page with a title only (`Bad request`, `Not found`).
fn bare(c: Ctx<'_>, status: StatusCode, title: &str) -> Resp {
    render(status, &Message::new(c, title))
}

fn forbidden(c: Ctx<'_>, msg: &str) -> Resp {
    render(
        StatusCode::FORBIDDEN,
        &Message {
            id: Some("error"),
            text: Some(msg),
            hint: Some(c.t.new_link_hint),
            ..Message::new(c, c.t.title_link_invalid)
        },
    )
}

/// The last page of a session: it says why the page closed and ends the session's cookie.
fn closed_page(c: Ctx<'_>, title: &str, id: &str, text: &str) -> Resp {
    let mut resp = render(
        StatusCode::OK,
        &Message {
            id: Some(id),
            text: Some(text),
            ..Message::new(c, title)
        },
    );
    resp.headers_mut().insert(
        header::SET_COOKIE,
        http::HeaderValue::from_static(CLEAR_COOKIE),
    );
    resp
}

/// 429 for a session going faster than a person clicks.
fn too_fast(c: Ctx<'_>) -> Resp {
    let mut r = render(
        StatusCode::TOO_MANY_REQUESTS,
        &Message {
            text: Some(c.t.too_fast),
            ..Message::new(c, c.t.title_wait)
        },
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    r
}

fn see_other(to: &'static str) -> Resp {
    let mut r = respond(StatusCode::SEE_OTHER, "text/plain", "");
    r.headers_mut()
        .insert(header::LOCATION, http::HeaderValue::from_static(to));
    r
}

fn error_page(c: Ctx<'_>, e: impl std::fmt::Display) -> Resp {
    tracing::warn!(error = %e, "portal request failed");
    render(
        StatusCode::INTERNAL_SERVER_ERROR,
        &Message {
            text: Some(c.t.error_text),
            ..Message::new(c, c.t.title_error)
        },
    )
}

/// Decodes an `application/x-www-form-urlencoded` body (also a query string) with the
/// `form_urlencoded` crate, the WHATWG parser the `url` crate uses: `+` is a space, `%XX` a
/// byte, a bad escape stays as written, invalid UTF-8 is replaced; a repeated name keeps its
/// last value. Public so that `fuzz/` reaches it.
pub fn decode_form(s: &str) -> HashMap<String, String> {
    form_urlencoded::parse(s.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The session id from the request's `Cookie` headers (RFC 6265 pairs, parsed by the
/// `cookie` crate); pairs that do not parse are skipped.
fn cookie(req: &Request<hyper::body::Incoming>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| cookie::Cookie::split_parse(v).filter_map(Result::ok))
        .find(|c| c.name() == COOKIE)
        .map(|c| c.value().to_owned())
}

/// Constant-time comparison of two tokens (their length is not secret).
fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The page's language: a `lang` the person chose on the page (`?lang=`, remembered by the
/// session), else their browser's `Accept-Language`, else English.
fn language_of(req: &Request<hyper::body::Incoming>, session: Option<&Session>) -> Language {
    let chosen = req
        .uri()
        .query()
        .map(decode_form)
        .and_then(|q| q.get("lang").and_then(|l| l.parse::<Language>().ok()));
    chosen
        .or(session.and_then(|s| s.language))
        .unwrap_or_else(|| {
            text::negotiate(
                req.headers()
                    .get(header::ACCEPT_LANGUAGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            )
        })
}

/// A purpose's description for the page: the text, and its language when it is not the page's.
fn described(p: &amble_policy::Purpose, t: &Text) -> (String, Option<Language>) {
    let d = p.description_in(t.lang);
    (
        d.text.to_owned(),
        (d.language != t.lang).then_some(d.language),
    )
}

async fn consents_page(links: &PortalLinks, session: &Session, t: &'static Text) -> Resp {
    let (r, csrf, issuer) = (
        session.reference.clone(),
        session.csrf.clone(),
        session.issuer.clone(),
    );
    let (may_export, may_erase) = (issuer.may("Export"), issuer.may("Erase"));
    let may_assist = issuer.may("SetAssistance");
    let (may_restrict, may_object) = (issuer.may("SetRestriction"), issuer.may("SetObjection"));
    let may_log = issuer.may("AccessLog");
    let result = on_node(links, move |n| {
        let now = n.now();
        let history = n.consent_history(&issuer.actor(), &r)?;
        let policy = n.policy();
        let purposes = policy
            .purposes()
            .filter(|p| p.legal_basis == LegalBasis::Consent)
            .map(|p| {
                let state = history.state(&p.id, now);
                let how = history
                    .consent_events()
                    .iter()
                    .rev()
                    .find(|e| e.purpose == p.id)
                    .map_or("", |e| t.how(e.method));
                let since = match state {
                    ConsentState::Given { since, .. } => Some((t.given_on)(&(t.date)(since), how)),
                    ConsentState::Withdrawn { at } => Some((t.withdrawn_on)(&(t.date)(at))),
                    ConsentState::Expired { at } => Some((t.expired_on)(&(t.date)(at))),
                    ConsentState::Never => None,
                };
                let (description, lang) = described(p, t);
                PurposeView {
                    id: p.id.clone(),
                    description,
                    lang,
                    given: state.is_given(),
                    since,
                }
            })
            .collect();
        let level = history.ai_assistance(now);
        let levels = AssistanceLevel::ALL
            .iter()
            .map(|l| LevelView {
                value: l.as_str(),
                description: t.level(*l),
                chosen: *l == level,
            })
            .collect();
        let objectable = policy
            .purposes()
            .filter(|p| p.legal_basis == LegalBasis::LegitimateInterest)
            .map(|p| {
                let (description, lang) = described(p, t);
                ObjectView {
                    id: p.id.clone(),
                    description,
                    lang,
                    objected: history.objected(&p.id, now).is_some(),
                }
            })
            .collect();
        let purpose = |id: &str| {
            policy
                .purpose(id)
                .map_or_else(|| id.to_owned(), |p| described(p, t).0)
        };
        let mut receipts: Vec<(time::OffsetDateTime, ReceiptView)> = Vec::new();
        let mut receipt = |at, what: String, method, id: &str| {
            let view = ReceiptView {
                when: (t.moment)(at),
                what,
                how: t.how(method),
                id: id.to_owned(),
            };
            receipts.push((at, view));
        };
        for e in history.consent_events() {
            let what = t.choice(&Choice::Consent(e.kind, &purpose(&e.purpose)));
            receipt(e.at, what, e.method, &e.receipt_id);
        }
        for e in history.assistance_events() {
            let what = t.choice(&Choice::Assistance(e.level));
            receipt(e.at, what, e.method, &e.receipt_id);
        }
        for e in history.right_events() {
            let p = e.purpose.as_deref().map(purpose).unwrap_or_default();
            let what = match e.right {
                amble_consent::Right::Objection => t.choice(&Choice::Objection(&p, e.active)),
                _ => t.choice(&Choice::Restriction(e.active)),
            };
            receipt(e.at, what, e.method, &e.receipt_id);
        }
        receipts.sort_by_key(|r| std::cmp::Reverse(r.0));
        Ok(Rights {
            org: Arc::new(Org::of(&policy)),
            purposes,
            levels,
            objectable,
            restricted_since: history.restricted(now).map(t.date),
            receipts: receipts
                .into_iter()
                .take(RECEIPTS_SHOWN)
                .map(|(_, v)| v)
                .collect(),
        })
    })
    .await;
    let rights = match result {
        Ok(rights) => rights,
        Err(e) => {
            return error_page(
                Ctx {
                    t,
                    org: &links.org(),
                },
                e,
            );
        }
    };
    links.remember(&rights.org);
    render(
        StatusCode::OK,
        &ConsentsPage {
            c: Ctx {
                t,
                org: &rights.org,
            },
            title: t.title_home,
            purposes: &rights.purposes,
            csrf: &csrf,
            may_export,
            may_erase,
            may_assist,
            levels: &rights.levels,
            may_restrict,
            restricted_since: rights.restricted_since.as_deref(),
            may_object,
            objectable: &rights.objectable,
            may_log,
            receipts: &rights.receipts,
        },
    )
}

async fn log_page(links: &PortalLinks, session: &Session, t: &'static Text) -> Resp {
    let (r, csrf, issuer) = (
        session.reference.clone(),
        session.csrf.clone(),
        session.issuer.clone(),
    );
    let may_review = issuer.may("RequestReview");
    let result = on_node(links, move |n| {
        let entries = n.access_log(&issuer.actor(), &r)?;
        let policy = n.policy();
        let org = Arc::new(Org::of(&policy));
        let entries = entries
            .iter()
            .rev()
            .take(LOG_PAGE_ENTRIES)
            .map(|e| LogView {
                seq: e.seq,
                action: e.action.as_str().to_owned(),
                when: (t.moment)(e.time),
                what: plain(t, e, &policy),
                who: t.reader(&e.role),
                refused: e.decision == amble_audit::Decision::Deny,
                reviewable: e.action == amble_audit::Action::Assist,
            })
            .collect::<Vec<_>>();
        Ok((entries, org))
    })
    .await;
    let (entries, org) = match result {
        Ok(x) => x,
        Err(e) => {
            return error_page(
                Ctx {
                    t,
                    org: &links.org(),
                },
                e,
            );
        }
    };
    links.remember(&org);
    render(
        StatusCode::OK,
        &LogPage {
            c: Ctx { t, org: &org },
            title: t.title_log,
            entries: &entries,
            csrf: &csrf,
            may_review,
        },
    )
}

async fn review(
    c: Ctx<'_>,
    links: &PortalLinks,
    req: Request<hyper::body::Incoming>,
    csrf: &str,
    issuer: Issuer,
    r: ExternalRef,
) -> Resp {
    let f = match posted_form(c, req, csrf).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let Some(decision) = f.get("decision").and_then(|d| d.parse::<u64>().ok()) else {
        return bare(c, StatusCode::BAD_REQUEST, c.t.title_bad_request);
    };
    if !issuer.may("RequestReview") {
        return forbidden(c, c.t.cannot_review);
    }
    match on_node(links, move |n| {
        n.request_review(&issuer.actor(), &r, decision)
    })
    .await
    {
        Ok(review) => {
            let text = (c.t.review_asked)(&(c.t.date)(review.decided_at), &review.explanation);
            render(
                StatusCode::OK,
                &Message {
                    id: Some("review"),
                    text: Some(&text),
                    back: true,
                    ..Message::new(c, c.t.title_review)
                },
            )
        }
        Err(e) => error_page(c, e),
    }
}

/// A change of one of the person's rights, sent from a form of the consents page.
enum RightForm {
    Assistance(AssistanceLevel),
    Restriction(bool),
    Objection(String, bool),
}

impl RightForm {
    /// The `Subject` method a link must allow for this change.
    fn method(&self) -> &'static str {
        match self {
            RightForm::Assistance(_) => "SetAssistance",
            RightForm::Restriction(_) => "SetRestriction",
            RightForm::Objection(..) => "SetObjection",
        }
    }

    /// Reads the form posted to `path`; `None` for anything the page never sends.
    fn parse(path: &str, f: &HashMap<String, String>) -> Option<RightForm> {
        let field = |k: &str| f.get(k).map(String::as_str);
        match (path, field("action")) {
            ("/assistance", _) => field("level")?.parse().ok().map(RightForm::Assistance),
            ("/restriction", Some("restrict")) => Some(RightForm::Restriction(true)),
            ("/restriction", Some("lift")) => Some(RightForm::Restriction(false)),
            ("/objection", Some(a @ ("object" | "withdraw"))) => Some(RightForm::Objection(
                field("purpose")?.to_owned(),
                a == "object",
            )),
            _ => None,
        }
    }
}

async fn change_right(
    c: Ctx<'_>,
    links: &PortalLinks,
    req: Request<hyper::body::Incoming>,
    path: &str,
    csrf: &str,
    issuer: Issuer,
    r: ExternalRef,
) -> Resp {
    let f = match posted_form(c, req, csrf).await {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let Some(change) = RightForm::parse(path, &f) else {
        return bare(c, StatusCode::BAD_REQUEST, c.t.title_bad_request);
    };
    if !issuer.may(change.method()) {
        return forbidden(c, c.t.cannot_change);
    }
    let done = on_node(links, move |n| {
        let who = issuer.actor();
        match change {
            RightForm::Assistance(level) => n.set_ai_assistance(&who, &r, level),
            RightForm::Restriction(on) => n.set_restriction(&who, &r, on),
            RightForm::Objection(purpose, on) => n.set_objection(&who, &r, &purpose, on),
        }
    })
    .await;
    match done {
        Ok(_) => see_other("/"),
        Err(e) => error_page(c, e),
    }
}

/// A form posted from this page: its fields, or the answer that refuses it (400 for a body that
/// is not a form, 403 without the session's CSRF token).
async fn posted_form(
    c: Ctx<'_>,
    req: Request<hyper::body::Incoming>,
    csrf: &str,
) -> Result<HashMap<String, String>, Resp> {
    let Some(f) = read_form(req).await else {
        return Err(bare(c, StatusCode::BAD_REQUEST, c.t.title_bad_request));
    };
    if !f.get("csrf").is_some_and(|x| same(x, csrf)) {
        return Err(forbidden(c, c.t.not_from_page));
    }
    Ok(f)
}

async fn read_form(req: Request<hyper::body::Incoming>) -> Option<HashMap<String, String>> {
    // A form is a few hundred bytes: a body that trickles in is cut off, so slow clients cannot
    // hold the portal's connections.
    let body = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_FORM_BYTES).collect(),
    )
    .await
    .ok()?
    .ok()?
    .to_bytes();
    Some(decode_form(std::str::from_utf8(&body).ok()?))
}

async fn handle(links: &PortalLinks, req: Request<hyper::body::Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let org = links.org();
    let before = Ctx {
        t: Text::of(language_of(&req, None)),
        org: &org,
    };
    if method == Method::GET && path == "/" {
        if let Some(tok) = req
            .uri()
            .query()
            .map(decode_form)
            .and_then(|q| q.get("t").cloned())
        {
            let Some((sid, _)) = links.open(&tok) else {
                return forbidden(before, before.t.link_used);
            };
            let Ok(session) = links.session(&sid) else {
                return forbidden(before, before.t.link_used);
            };
            let mut resp = consents_page(links, &session, before.t).await;
            if let Ok(v) = http::HeaderValue::from_str(&format!(
                "{COOKIE}={sid}; Path=/; HttpOnly; Secure; SameSite=Strict"
            )) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            return resp;
        }
    }
    let Some(sid) = cookie(&req) else {
        return forbidden(before, before.t.open_from_app);
    };
    let session = match links.session(&sid) {
        Ok(s) => s,
        Err(Refused::Ended) => return forbidden(before, before.t.session_ended),
        Err(Refused::TooFast) => return too_fast(before),
    };
    let language = language_of(&req, Some(&session));
    if session.language != Some(language) && req.uri().query().is_some_and(|q| q.contains("lang="))
    {
        links.set_language(&sid, language);
    }
    let t = Text::of(language);
    let c = Ctx { t, org: &org };
    let (r, csrf, issuer) = (
        session.reference.clone(),
        session.csrf.clone(),
        session.issuer.clone(),
    );
    match (method, path.as_str()) {
        (Method::GET, "/") => consents_page(links, &session, t).await,
        (Method::GET, "/export") if !issuer.may("Export") => forbidden(c, t.cannot_export),
        (Method::POST, "/erase") if !issuer.may("Erase") => forbidden(c, t.cannot_erase),
        (Method::GET, "/export") => {
            match on_node(links, move |n| n.export(&issuer.actor(), &r)).await {
                Err(e) => error_page(c, e),
                Ok(x) => match serde_json::to_vec_pretty(&x) {
                    Err(e) => error_page(c, e),
                    Ok(body) => {
                        let mut resp = respond(StatusCode::OK, "application/json", body);
                        resp.headers_mut().insert(
                            header::CONTENT_DISPOSITION,
                            http::HeaderValue::from_static("attachment; filename=\"my-data.json\""),
                        );
                        resp
                    }
                },
            }
        }
        (Method::POST, "/consent") => {
            let f = match posted_form(c, req, &csrf).await {
                Ok(f) => f,
                Err(refused) => return refused,
            };
            let purpose = f.get("purpose").map(String::as_str).unwrap_or("");
            let change = match f.get("action").map(String::as_str) {
                Some("give") => ConsentChange::Give {
                    valid_until: None,
                    explicit: true,
                },
                Some("withdraw") => ConsentChange::Withdraw,
                _ => return bare(c, StatusCode::BAD_REQUEST, t.title_bad_request),
            };
            let ok_purpose = links.shared.with_node(|n| {
                n.policy()
                    .purpose(purpose)
                    .is_some_and(|p| p.legal_basis == LegalBasis::Consent)
            });
            if !ok_purpose {
                return bare(c, StatusCode::BAD_REQUEST, t.title_unknown_purpose);
            }
            let purpose = purpose.to_owned();
            match on_node(links, move |n| {
                n.change_consent(&issuer.actor(), &r, &purpose, change)
            })
            .await
            {
                Ok(_) => see_other("/"),
                Err(e) => error_page(c, e),
            }
        }
        (Method::GET, "/log") if !issuer.may("AccessLog") => forbidden(c, t.cannot_log),
        (Method::GET, "/log") => log_page(links, &session, t).await,
        (Method::POST, "/review") => review(c, links, req, &csrf, issuer, r).await,
        (Method::POST, p @ ("/assistance" | "/restriction" | "/objection")) => {
            let p = p.to_owned();
            change_right(c, links, req, &p, &csrf, issuer, r).await
        }
        (Method::POST, "/erase") => {
            let f = match posted_form(c, req, &csrf).await {
                Ok(f) => f,
                Err(refused) => return refused,
            };
            if f.get("confirm").map(String::as_str) != Some("yes") {
                return render(
                    StatusCode::BAD_REQUEST,
                    &Message {
                        text: Some(t.confirm_erase),
                        back: true,
                        ..Message::new(c, t.title_confirm)
                    },
                );
            }
            // As over gRPC: erase, then rotate the key so the shredded keys are gone for good.
            let erased_ref = r.clone();
            let erased = on_node_mut(links, move |n| {
                let who = issuer.actor();
                n.erase(&who, &erased_ref)?;
                n.rotate_key(&who)
            })
            .await;
            match erased {
                Err(e) => error_page(c, e),
                Ok(_) => {
                    links.end_all(&r);
                    closed_page(c, t.title_erased, "erased", t.erased)
                }
            }
        }
        (Method::POST, "/logout") => {
            if let Err(refused) = posted_form(c, req, &csrf).await {
                return refused;
            }
            links.end_session(&sid);
            closed_page(c, t.title_signed_out, "signed-out", t.signed_out)
        }
        _ => bare(c, StatusCode::NOT_FOUND, t.title_not_found),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_as_browsers_encode_them_and_bad_escapes_stay_as_written() {
        let f = decode_form("a=1+2&b=%E4%BA%BA&c=%zz&&d&a=3&e=%FF");
        assert_eq!(f["a"], "3", "a repeated name keeps its last value");
        assert_eq!(f["b"], "人");
        assert_eq!(f["c"], "%zz");
        assert_eq!(f["d"], "");
        assert_eq!(f["e"], "\u{FFFD}", "invalid UTF-8 is replaced");
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn every_value_a_page_shows_is_escaped_by_the_templates() {
        let hostile = "<script>alert(1)</script>\"'&";
        let purposes = [PurposeView {
            id: hostile.to_owned(),
            description: hostile.to_owned(),
            lang: Some(Language::En),
            given: true,
            since: Some(hostile.to_owned()),
        }];
        let objectable = [ObjectView {
            id: hostile.to_owned(),
            description: hostile.to_owned(),
            lang: None,
            objected: false,
        }];
        let receipts = [ReceiptView {
            when: hostile.to_owned(),
            what: hostile.to_owned(),
            how: "on this page",
            id: hostile.to_owned(),
        }];
        let org = Org {
            name: Some(hostile.to_owned()),
            contact: Some(hostile.to_owned()),
        };
        let c = Ctx {
            t: Text::of(Language::ZhTw),
            org: &org,
        };
        let levels = [LevelView {
            value: "ai_answers",
            description: "AI answers",
            chosen: true,
        }];
        let page = ConsentsPage {
            c,
            title: hostile,
            purposes: &purposes,
            csrf: hostile,
            may_export: false,
            may_erase: true,
            may_assist: true,
            levels: &levels,
            may_restrict: true,
            restricted_since: Some(hostile),
            may_object: true,
            objectable: &objectable,
            may_log: true,
            receipts: &receipts,
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("\"'&"), "{page}");
        // Escaped as character references (askama writes `&#60;` for `<`), not dropped.
        assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#38;"));
        // The link may erase but not export, so the page says how to get a link that may.
        assert!(page.contains("id=\"verify\""));
        assert!(page.contains("action=\"/erase\"") && !page.contains("href=\"/export\""));
        assert!(page.contains("name=\"action\" value=\"withdraw\""));
        assert!(page.contains("value=\"ai_answers\" checked"));
        assert!(page.contains("id=\"restricted\"") && page.contains("value=\"lift\""));
        assert!(page.contains("data-objected=\"no\"") && page.contains("value=\"object\""));
        // In the language asked for, with a switch to every other, and the description that
        // fell back to English marked as English.
        assert!(
            page.starts_with("<!doctype html>\n<html lang=\"zh-TW\">"),
            "{page}"
        );
        assert!(page.contains("撤回我的同意") && page.contains("href=\"/?lang=zh-CN\""));
        assert!(page.contains("<p lang=\"en\">&#60;script"));
        assert!(page.contains("id=\"receipts\"") && page.contains("id=\"privacy-contact\""));
        let message = Message {
            id: Some("error"),
            text: Some(hostile),
            ..Message::new(c, "t")
        }
        .render()
        .unwrap();
        assert!(
            message.contains("<p id=\"error\">&#60;script&#62;"),
            "{message}"
        );
    }

    #[test]
    fn form_decoding() {
        let f = decode_form("a=1+2&b=%3Cx%3E&c=%zz&d");
        assert_eq!(f["a"], "1 2");
        assert_eq!(f["b"], "<x>");
        assert_eq!(f["c"], "%zz");
        assert_eq!(f["d"], "");
        assert_eq!(decode_form("e=%4")["e"], "%4");
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
    }

    /// A page view shares the node with every other request. One that took the node alone
    /// waited here, and every gRPC call waited behind it: 16 threads of one portal session
    /// doubled the latency of concurrent gRPC calls. `benches/server.rs` measures the effect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_page_view_runs_while_another_request_holds_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let node = crate::Node::init(dir.path(), None).unwrap();
        let person = ExternalRef::parse("phone:+15550001").unwrap();
        let op = Actor::local("test", Role::Admin);
        let mut data = serde_json::Map::new();
        data.insert("display_name".into(), "Ann".into());
        let profile = crate::NewRecord {
            collection: crate::Collection::Profile,
            time: time::OffsetDateTime::now_utc(),
            data,
        };
        node.append(&op, &person, &profile).unwrap();
        let links = PortalLinks {
            store: Arc::default(),
            clock: amble_audit::clock::system(),
            shared: Arc::new(Shared {
                node: std::sync::RwLock::new(node),
                federation: "test-fed".into(),
                chunk_bytes: 1 << 20,
            }),
            link_ttl: Duration::from_secs(60),
            session_ttl: Duration::from_secs(60),
            org: Arc::default(),
        };
        let session = Session {
            reference: person,
            issuer: Issuer {
                id: "crm".into(),
                role: Role::App,
            },
            csrf: "c".repeat(64),
            expires: u64::MAX,
            allowance: SESSION_BURST,
            refilled: 0,
            language: None,
        };

        let held = Arc::clone(&links.shared);
        let (holding, release) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let reader = std::thread::spawn(move || {
            held.with_node(|_| {
                let _ = holding.0.send(());
                let _ = release.1.recv_timeout(Duration::from_secs(30));
            });
        });
        holding.1.recv().unwrap();
        let view = tokio::time::timeout(
            Duration::from_secs(10),
            consents_page(&links, &session, Text::of(Language::En)),
        )
        .await
        .expect("the page view waited for another reader to let go of the node");
        let _ = release.0.send(());
        reader.join().unwrap();
        assert_eq!(view.status(), StatusCode::OK);
        let body = view.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("personalisation"));
    }
}
