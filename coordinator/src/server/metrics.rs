//! Health, readiness and Prometheus metrics on a separate listener (`[metrics]` in
//! coordinator.toml).
//!
//! `listen = "127.0.0.1:9091"` opens a plain-HTTP/1.1 listener that answers three GETs:
//!
//! | path       | answer                                                                  |
//! |------------|-------------------------------------------------------------------------|
//! | `/healthz` | 200 while the process runs (liveness)                                   |
//! | `/readyz`  | 200 once the store is open and the gRPC service accepts; 503 from the moment shutdown starts (readiness) |
//! | `/metrics` | Prometheus text format 0.0.4                                            |
//!
//! **Why plain HTTP is acceptable here, and only here.** Everything else the coordinator
//! speaks is mutual TLS. This listener carries no personal data, no identifiers and no
//! secrets: no node id, caller id, model byte or key becomes a label or a value — only counts,
//! round numbers, sizes, method names, status codes and refusal classes. It accepts nothing
//! but those three GETs and changes nothing. Bind it to loopback or to a monitoring network
//! that a firewall or NetworkPolicy keeps to the scraper.
//!
//! What is measured: every gRPC request by method and status code, and its handling time by
//! method, counted by a tower layer ([`GrpcMetricsLayer`]); a request dropped before it was
//! answered counts as `Canceled`. A refused update (`SubmitUpdate` answered
//! FAILED_PRECONDITION) is also counted by the class of its reason — `shape`, `non_finite`,
//! `norm`, `round`, `duplicate`, `replay`, `other` — read from the refusal's message, the same
//! text the audit log records. Values that live in the store — the round, rounds published,
//! updates accepted, members, audit-log size — are read when the endpoint is scraped, never on
//! a request's path. The registry ([`GrpcStats`]) belongs to the
//! [`CoordinatorServer`](super::CoordinatorServer); there is no global state.

use crate::CoordinatorError;
use crate::state::{Coordinator, Phase};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tonic::Code;

/// `[metrics]`: where the health, readiness and metrics endpoint listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. `127.0.0.1:9090` (port 0 picks a free one). Plain HTTP: see the module doc.
    pub listen: SocketAddr,
}

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// gRPC status codes 0..=16.
const CODES: usize = 17;
/// Label of a path that is not a known method (its text is not echoed: unbounded labels).
const UNKNOWN: &str = "unknown";

/// Go-style names of the gRPC codes, as other gRPC exporters label them.
fn code_name(code: usize) -> &'static str {
    const NAMES: [&str; CODES] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES.get(code).copied().unwrap_or("Unknown")
}

#[derive(Default)]
struct MethodStats {
    codes: [AtomicU64; CODES],
    /// Non-cumulative: `buckets[i]` counts requests in (BUCKETS[i-1], BUCKETS[i]].
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// The classes a refused update is counted under.
pub const REFUSAL_CLASSES: [&str; 7] = [
    "shape",
    "non_finite",
    "norm",
    "round",
    "duplicate",
    "replay",
    "other",
];

/// The class of a refused update's reason (the message the coordinator answered and logged).
pub fn refusal_class(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    // First the refusals whose text names another class too ("… (stale or replayed update)").
    if r.starts_with("duplicate") {
        "duplicate"
    } else if r.starts_with("replay") {
        "replay"
    } else if r.contains("nan or infinite") {
        "non_finite"
    } else if r.contains("norm") && r.contains("clip bound") {
        "norm"
    } else if r.contains(" values, the model has ") || r.contains("not a multiple of 4") {
        "shape"
    } else if r.contains("round") || r.contains("trained from version") {
        "round"
    } else {
        "other"
    }
}

/// Request counts and latencies per gRPC method, and refused updates by class: the
/// coordinator's metrics registry.
pub struct GrpcStats {
    /// Known method paths (`/amble.v1.Federation/Join`), then [`UNKNOWN`].
    methods: Vec<String>,
    stats: Vec<MethodStats>,
    /// Index of `SubmitUpdate` in `methods`.
    submit: usize,
    refused: [AtomicU64; REFUSAL_CLASSES.len()],
}

impl GrpcStats {
    /// A registry for these method paths; any other path is counted as `unknown`. Refusals
    /// are counted for `submit_path`.
    pub fn new(methods: impl IntoIterator<Item = String>, submit_path: &str) -> Self {
        let mut methods: Vec<String> = methods.into_iter().collect();
        methods.push(UNKNOWN.to_owned());
        let stats = methods.iter().map(|_| MethodStats::default()).collect();
        let submit = methods
            .iter()
            .position(|m| m == submit_path)
            .unwrap_or(usize::MAX);
        GrpcStats {
            methods,
            stats,
            submit,
            refused: Default::default(),
        }
    }

    fn index(&self, path: &str) -> usize {
        let last = self.methods.len() - 1;
        self.methods[..last]
            .iter()
            .position(|m| *m == path)
            .unwrap_or(last)
    }

    fn record(&self, method: usize, code: Code, message: &str, elapsed: Duration) {
        let Some(s) = self.stats.get(method) else {
            return;
        };
        if method == self.submit && code == Code::FailedPrecondition {
            let class = refusal_class(message);
            if let Some(i) = REFUSAL_CLASSES.iter().position(|c| *c == class) {
                self.refused[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        let code = (code as i32).clamp(0, CODES as i32 - 1) as usize;
        s.codes[code].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|&le| secs <= le) {
            s.buckets[b].fetch_add(1, Ordering::Relaxed);
        }
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Writes the request families, under `prefix` (`amble_coordinator`), then refused updates
    /// by class: methods never called are left out, every refusal class is written.
    pub fn write(&self, prefix: &str, out: &mut Exposition) {
        let requests = format!("{prefix}_grpc_requests_total");
        out.family(
            &requests,
            "counter",
            "gRPC requests answered, by method and status code.",
        );
        for (m, s) in self.methods.iter().zip(&self.stats) {
            let m = m.as_str();
            for (c, n) in s.codes.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n > 0 {
                    out.sample(
                        &requests,
                        &[("method", m), ("code", code_name(c))],
                        n as f64,
                    );
                }
            }
        }
        let duration = format!("{prefix}_grpc_request_duration_seconds");
        out.family(
            &duration,
            "histogram",
            "Time from a gRPC request's arrival to its last response byte, by method.",
        );
        for (m, s) in self.methods.iter().zip(&self.stats) {
            let m = m.as_str();
            let count = s.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(&s.buckets) {
                cumulative += n.load(Ordering::Relaxed);
                out.sample(
                    &format!("{duration}_bucket"),
                    &[("method", m), ("le", &format_value(*le))],
                    cumulative as f64,
                );
            }
            out.sample(
                &format!("{duration}_bucket"),
                &[("method", m), ("le", "+Inf")],
                count as f64,
            );
            let sum = s.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            out.sample(&format!("{duration}_sum"), &[("method", m)], sum);
            out.sample(&format!("{duration}_count"), &[("method", m)], count as f64);
        }
        let refused = format!("{prefix}_updates_refused_total");
        out.family(
            &refused,
            "counter",
            "Updates refused since the coordinator started, by the class of the reason.",
        );
        for (class, n) in REFUSAL_CLASSES.iter().zip(&self.refused) {
            out.sample(
                &refused,
                &[("reason", class)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
    }
}

/// The Prometheus text format, version 0.0.4: `# HELP`, `# TYPE`, then samples.
#[derive(Default)]
pub struct Exposition(String);

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{v}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", format_value(value));
    }

    /// One family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.0
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Counts every request by method and status code and times it; see the module doc.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    stats: Arc<GrpcStats>,
}

impl GrpcMetricsLayer {
    pub fn new(stats: Arc<GrpcStats>) -> Self {
        GrpcMetricsLayer { stats }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            stats: Arc::clone(&self.stats),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    stats: Arc<GrpcStats>,
}

/// One request being observed: recorded exactly once, when its status is known or, if it is
/// dropped unanswered, as `Canceled`.
struct Observation {
    stats: Arc<GrpcStats>,
    method: usize,
    start: Instant,
    done: bool,
}

impl Observation {
    fn finish(&mut self, code: Code, message: &str) {
        if !self.done {
            self.done = true;
            self.stats
                .record(self.method, code, message, self.start.elapsed());
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, "");
    }
}

/// A response body that records the status from the trailers once they are sent.
struct ObservedBody {
    inner: tonic::body::Body,
    observation: Observation,
}

impl hyper::body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    match tonic::Status::from_header_map(trailers) {
                        Some(s) => this.observation.finish(s.code(), s.message()),
                        None => this.observation.finish(Code::Ok, ""),
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                this.observation.finish(status.code(), status.message())
            }
            Poll::Ready(None) => this.observation.finish(Code::Ok, ""),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcMetrics<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut observation = Observation {
            method: self.stats.index(req.uri().path()),
            stats: Arc::clone(&self.stats),
            start: Instant::now(),
            done: false,
        };
        Box::pin(async move {
            let response = match inner.call(req).await {
                Ok(r) => r,
                Err(e) => {
                    observation.finish(Code::Unknown, "");
                    return Err(e);
                }
            };
            // An error answered before any message carries its status in the headers.
            if let Some(status) = tonic::Status::from_header_map(response.headers()) {
                observation.finish(status.code(), status.message());
                return Ok(response);
            }
            Ok(response.map(|inner| tonic::body::Body::new(ObservedBody { inner, observation })))
        })
    }
}

/// The bound endpoint, not yet serving.
pub(crate) struct Endpoint {
    listener: TcpListener,
}

/// Connections the endpoint serves at once (a scraper and a probe or two need few).
const MAX_CONNECTIONS: usize = 32;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

impl Endpoint {
    pub(crate) async fn bind(config: &MetricsConfig) -> Result<Endpoint, CoordinatorError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| CoordinatorError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Ok(Endpoint { listener })
    }

    pub(crate) fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is aborted. `render` produces the `/metrics` text.
    pub(crate) async fn run<F, Fut>(self, ready: Arc<AtomicBool>, render: F)
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<String, String>> + Send + 'static,
    {
        let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let tcp = match self.listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                continue;
            };
            let (ready, render) = (Arc::clone(&ready), render.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let svc = hyper::service::service_fn(move |req| {
                    let (ready, render) = (Arc::clone(&ready), render.clone());
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &ready, render).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Some(HEADER_TIMEOUT))
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            });
        }
    }
}

/// The coordinator's `/metrics` text: the request metrics, then the values read from the
/// store now.
pub(crate) fn render(c: &Coordinator, grpc: &GrpcStats) -> Result<String, String> {
    let mut out = Exposition::default();
    grpc.write("amble_coordinator", &mut out);
    let s = c.status().map_err(|e| e.to_string())?;
    out.single(
        "amble_coordinator_round",
        "gauge",
        "The round open now (the last one once the federation is done).",
        s.round as f64,
    );
    out.single(
        "amble_coordinator_rounds_planned",
        "gauge",
        "Rounds the plan runs.",
        s.rounds_total as f64,
    );
    out.single(
        "amble_coordinator_rounds_published_total",
        "counter",
        "Rounds aggregated and published as a new model version.",
        s.history.len() as f64,
    );
    out.single(
        "amble_coordinator_federation_done",
        "gauge",
        "1 once the last round is published.",
        if s.phase == Phase::Done { 1.0 } else { 0.0 },
    );
    let accepted: usize = s.history.iter().map(|h| h.updates.len()).sum::<usize>()
        + if s.phase == Phase::Done {
            0
        } else {
            s.accepted_in_round.len()
        };
    out.single(
        "amble_coordinator_updates_accepted_total",
        "counter",
        "Updates accepted (their receipt written), over all rounds.",
        accepted as f64,
    );
    out.single(
        "amble_coordinator_members",
        "gauge",
        "Nodes that have joined the federation.",
        s.members.len() as f64,
    );
    out.single(
        "amble_coordinator_audit_log_entries",
        "gauge",
        "Entries ever appended to the coordinator's audit log (its Merkle tree size).",
        c.audit_log().size() as f64,
    );
    Ok(out.finish())
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

const PLAIN: &str = "text/plain; charset=utf-8";

async fn answer<B, F, Fut>(req: &Request<B>, ready: &AtomicBool, render: F) -> Resp
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "only GET and HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n".into()),
        "/readyz" if ready.load(Ordering::SeqCst) => text(StatusCode::OK, PLAIN, "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "not serving (starting or shutting down)\n".into(),
        ),
        "/metrics" => match render().await {
            Ok(body) => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            ),
            Err(e) => {
                tracing::error!(error = %e, "metrics endpoint: cannot read the values");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PLAIN,
                    "metrics could not be read; see the service's log\n".into(),
                )
            }
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: this endpoint serves /healthz, /readyz and /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amble_learn::aggregate::Rejection;

    #[test]
    fn refusal_reasons_fall_in_their_class() {
        let checked = |r: Rejection| refusal_class(&r.to_string());
        assert_eq!(
            checked(Rejection::Shape {
                expected: 3,
                got: 4
            }),
            "shape"
        );
        assert_eq!(checked(Rejection::Encoding { bytes: 7 }), "shape");
        assert_eq!(checked(Rejection::NonFinite { index: 2 }), "non_finite");
        assert_eq!(
            checked(Rejection::Norm {
                norm: 9.0,
                bound: 1.0
            }),
            "norm"
        );
        // The coordinator's own refusals (coordinator/src/state.rs).
        for (reason, class) in [
            ("update has 5 values, the model has 4 parameters", "shape"),
            (
                "update is for round 1, but round 2 is open (stale or replayed update)",
                "round",
            ),
            (
                "update was trained from version 0, round 2 trains from 1",
                "round",
            ),
            ("round 3 closed while the update was streaming", "round"),
            (
                "duplicate: node n-1 already has an accepted update in round 2",
                "duplicate",
            ),
            (
                "replay: this exact update was already accepted in round 1",
                "replay",
            ),
            (
                "the values do not match the header's sha256 (corrupted or truncated upload)",
                "other",
            ),
            ("another upload from this node is in progress", "other"),
        ] {
            assert_eq!(refusal_class(reason), class, "{reason}");
        }
    }

    #[test]
    fn refusals_are_counted_for_submit_update_only_and_every_class_is_written() {
        let stats = GrpcStats::new(
            ["/a.F/SubmitUpdate".to_owned(), "/a.F/Join".to_owned()],
            "/a.F/SubmitUpdate",
        );
        let submit = stats.index("/a.F/SubmitUpdate");
        stats.record(
            submit,
            Code::FailedPrecondition,
            "replay: x",
            Duration::ZERO,
        );
        stats.record(
            stats.index("/a.F/Join"),
            Code::FailedPrecondition,
            "replay: x",
            Duration::ZERO,
        );
        let mut out = Exposition::default();
        stats.write("t", &mut out);
        let text = out.finish();
        assert!(
            text.contains("t_updates_refused_total{reason=\"replay\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("t_updates_refused_total{reason=\"norm\"} 0\n"),
            "{text}"
        );
        assert!(text.contains(
            "t_grpc_requests_total{method=\"/a.F/SubmitUpdate\",code=\"FailedPrecondition\"} 1\n"
        ));
        assert!(text.contains(
            "t_grpc_request_duration_seconds_bucket{method=\"/a.F/Join\",le=\"0.001\"} 1\n"
        ));
    }

    #[tokio::test]
    async fn readiness_is_503_once_shutdown_began_and_only_gets_are_answered() {
        let get = |path: &str| Request::get(path).body(()).unwrap();
        let render = || async { Ok::<_, String>("x 1\n".to_owned()) };
        let ready = AtomicBool::new(true);
        assert_eq!(answer(&get("/readyz"), &ready, render).await.status(), 200);
        ready.store(false, Ordering::SeqCst);
        assert_eq!(answer(&get("/readyz"), &ready, render).await.status(), 503);
        assert_eq!(answer(&get("/healthz"), &ready, render).await.status(), 200);
        let metrics = answer(&get("/metrics"), &ready, render).await;
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(answer(&post, &ready, render).await.status(), 405);
    }
}
