//! Health, readiness and Prometheus metrics on a separate listener (`[metrics]` in node.toml).
//!
//! `listen = "127.0.0.1:9090"` opens a plain-HTTP/1.1 listener that answers three GETs:
//!
//! | path       | answer                                                                  |
//! |------------|-------------------------------------------------------------------------|
//! | `/healthz` | 200 while the process runs (liveness)                                   |
//! | `/readyz`  | 200 once the store is open and the gRPC service accepts; 503 from the moment shutdown starts (readiness) |
//! | `/metrics` | Prometheus text format 0.0.4                                            |
//!
//! **Why plain HTTP is acceptable here, and only here.** Everything else the node speaks is
//! mutual TLS. This listener carries no personal data, no identifiers and no secrets: no
//! external reference, pseudonym, caller id, text or key ever becomes a label or a value —
//! only counts, sizes, versions, ε, method names and status codes. It accepts nothing but those
//! three GETs and changes nothing. Bind it to loopback or to a monitoring network that a
//! firewall or NetworkPolicy keeps to the scraper; an aggregate such as the archive's subject
//! count is still the organisation's business.
//!
//! What is measured: every gRPC request by method and status code, and its handling time by
//! method, counted by a tower layer ([`GrpcMetricsLayer`]) that wraps the auth layer, so
//! refusals count too. A request dropped before it was answered (the client went away, or the
//! node's request timeout fired) counts as `Canceled`. Values that live in the store — subjects,
//! audit-log size, policy version, federated rounds trained, ε spent — are read when the
//! endpoint is scraped, never on a request's path. The registry ([`GrpcStats`]) belongs to the
//! [`Server`](super::Server); there is no global state.

use super::ServerError;
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

/// Request counts and latencies per gRPC method: the node's metrics registry.
pub struct GrpcStats {
    /// Known method paths (`/amble.v1.Archive/Append`), then [`UNKNOWN`].
    methods: Vec<&'static str>,
    stats: Vec<MethodStats>,
}

impl GrpcStats {
    /// A registry for these method paths; any other path is counted as `unknown`.
    pub fn new(methods: impl IntoIterator<Item = &'static str>) -> Self {
        let mut methods: Vec<&'static str> = methods.into_iter().collect();
        methods.push(UNKNOWN);
        let stats = methods.iter().map(|_| MethodStats::default()).collect();
        GrpcStats { methods, stats }
    }

    fn index(&self, path: &str) -> usize {
        let last = self.methods.len() - 1;
        self.methods[..last]
            .iter()
            .position(|m| *m == path)
            .unwrap_or(last)
    }

    fn record(&self, method: usize, code: Code, elapsed: Duration) {
        let Some(s) = self.stats.get(method) else {
            return;
        };
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

    /// Writes both families, under `prefix` (`amble_node`): methods never called are left out.
    pub fn write(&self, prefix: &str, out: &mut Exposition) {
        let requests = format!("{prefix}_grpc_requests_total");
        out.family(
            &requests,
            "counter",
            "gRPC requests answered, by method and status code.",
        );
        for (m, s) in self.methods.iter().zip(&self.stats) {
            let m: &str = m;
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
            let m: &str = m;
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
    fn finish(&mut self, code: Code) {
        if !self.done {
            self.done = true;
            self.stats.record(self.method, code, self.start.elapsed());
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
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
                    let code =
                        tonic::Status::from_header_map(trailers).map_or(Code::Ok, |s| s.code());
                    this.observation.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => this.observation.finish(status.code()),
            Poll::Ready(None) => this.observation.finish(Code::Ok),
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
                    observation.finish(Code::Unknown);
                    return Err(e);
                }
            };
            // An error answered before any message carries its status in the headers.
            if let Some(status) = tonic::Status::from_header_map(response.headers()) {
                observation.finish(status.code());
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
    pub(crate) async fn bind(config: &MetricsConfig) -> Result<Endpoint, ServerError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
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

/// The node's `/metrics` text: the request metrics, then the values read from the store now.
pub(crate) fn render(shared: &super::Shared, grpc: &GrpcStats) -> Result<String, String> {
    let mut out = Exposition::default();
    grpc.write("amble_node", &mut out);
    shared
        .with_node(|n| -> Result<(), crate::NodeError> {
            out.single(
                "amble_node_archive_subjects",
                "gauge",
                "Subjects (pseudonyms) in the archive.",
                n.subject_count() as f64,
            );
            out.single(
                "amble_node_audit_log_entries",
                "gauge",
                "Entries ever appended to the audit log (its Merkle tree size, pruned ones included).",
                n.audit_log().size() as f64,
            );
            out.single(
                "amble_node_policy_version",
                "gauge",
                "Version of the policy in force.",
                n.policy().version() as f64,
            );
            let runs = n.round_runs()?;
            out.single(
                "amble_node_federation_rounds_trained_total",
                "counter",
                "Federated rounds this node trained in.",
                runs.len() as f64,
            );
            let epsilon = runs.iter().rev().find_map(|r| r.epsilon_total).unwrap_or(0.0);
            out.family(
                "amble_node_federation_epsilon_spent",
                "gauge",
                "Epsilon per person this node has spent on the federated model (0 for plain training).",
            );
            out.sample(
                "amble_node_federation_epsilon_spent",
                &[("model", "intent")],
                epsilon,
            );
            Ok(())
        })
        .map_err(|e| e.to_string())?;
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

    #[test]
    fn the_text_format_escapes_labels_and_writes_cumulative_buckets() {
        let stats = GrpcStats::new(["/a.B/C"]);
        stats.record(0, Code::Ok, Duration::from_millis(3));
        stats.record(0, Code::NotFound, Duration::from_secs(100));
        stats.record(
            stats.index("/not/known\"x"),
            Code::Unimplemented,
            Duration::ZERO,
        );
        let mut out = Exposition::default();
        stats.write("t", &mut out);
        out.sample("t_x", &[("l", "a\"b\\c\nd")], f64::INFINITY);
        let text = out.finish();
        assert!(text.contains("t_grpc_requests_total{method=\"/a.B/C\",code=\"OK\"} 1\n"));
        assert!(text.contains("t_grpc_requests_total{method=\"/a.B/C\",code=\"NotFound\"} 1\n"));
        assert!(
            text.contains("t_grpc_requests_total{method=\"unknown\",code=\"Unimplemented\"} 1\n"),
            "an unknown path is not echoed: {text}"
        );
        assert!(text.contains(
            "t_grpc_request_duration_seconds_bucket{method=\"/a.B/C\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "t_grpc_request_duration_seconds_bucket{method=\"/a.B/C\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains(
                "t_grpc_request_duration_seconds_bucket{method=\"/a.B/C\",le=\"30\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "t_grpc_request_duration_seconds_bucket{method=\"/a.B/C\",le=\"+Inf\"} 2\n"
            )
        );
        assert!(text.contains("t_grpc_request_duration_seconds_count{method=\"/a.B/C\"} 2\n"));
        assert!(text.contains("t_x{l=\"a\\\"b\\\\c\\nd\"} +Inf\n"));
        assert!(text.contains("# TYPE t_grpc_request_duration_seconds histogram\n"));
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
