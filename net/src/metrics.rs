//! Health, readiness and Prometheus metrics on a separate listener: the one endpoint every
//! amble service opens when its configuration has a `[metrics]` section.
//!
//! `listen = "127.0.0.1:9090"` opens a plain-HTTP/1.1 listener that answers three GETs:
//!
//! | path       | answer                                                                  |
//! |------------|-------------------------------------------------------------------------|
//! | `/healthz` | 200 while the process runs (liveness)                                   |
//! | `/readyz`  | 200 once the service accepts; 503 from the moment shutdown starts (readiness) |
//! | `/metrics` | Prometheus text format 0.0.4, written by `prometheus-client`             |
//!
//! **Why plain HTTP is acceptable here, and only here.** Everything else an amble service
//! speaks is mutual TLS (the node's self-service portal is server-authenticated TLS, see
//! `amble_node::server::portal`). This listener carries no personal data, no identifiers and
//! no secrets: no external reference, pseudonym, caller or node id, text, model byte or key
//! ever becomes a label or a value — only counts, sizes, versions, ε, method names, status
//! codes and refusal classes. It accepts nothing but those three GETs and changes nothing.
//! Bind it to loopback or to a monitoring network that a firewall or NetworkPolicy keeps to
//! the scraper; an aggregate such as an archive's subject count is still the organisation's
//! business.
//!
//! What is measured here: every gRPC request by method and status code, and its handling time
//! by method, counted by a tower layer ([`GrpcMetricsLayer`]) that wraps the auth layer, so
//! refusals count too. A request dropped before it was answered (the client went away, or the
//! request timeout fired) counts as `Canceled`. A service may watch every finished request's
//! status ([`GrpcStats::on_status`]) to count what only it understands (the coordinator counts
//! refused updates by class). Values that live in a service's store are read when the endpoint
//! is scraped ([`Scrape`]), never on a request's path. The registry belongs to the service's
//! server; there is no global state.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
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
/// Label of a path that is not a known method (its text is not echoed: unbounded labels).
const UNKNOWN: &str = "unknown";
/// The `Content-Type` of what `/metrics` answers.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Go-style names of the gRPC codes, as other gRPC exporters label them.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

type HistogramFamily = Family<MethodLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// What a service does with each finished request's method path, status code and message.
pub type StatusHook = Box<dyn Fn(&'static str, Code, &str) + Send + Sync>;

/// Request counts and latencies per gRPC method: a service's metrics registry.
pub struct GrpcStats {
    /// Known method paths (`/amble.v1.Archive/Append`); any other is [`UNKNOWN`].
    methods: Vec<&'static str>,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
    hook: Option<StatusHook>,
    registry: Registry,
}

impl GrpcStats {
    /// A registry whose families are named `{prefix}_…` (`amble_node`), for these method
    /// paths; any other path is counted as `unknown`.
    pub fn new(prefix: &str, methods: impl IntoIterator<Item = &'static str>) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "grpc_requests",
            "gRPC requests answered, by method and status code.",
            requests.clone(),
        );
        let durations = HistogramFamily::new_with_constructor(latency_histogram);
        registry.register(
            "grpc_request_duration_seconds",
            "Time from a gRPC request's arrival to its last response byte, by method.",
            durations.clone(),
        );
        GrpcStats {
            methods: methods.into_iter().collect(),
            requests,
            durations,
            hook: None,
            registry,
        }
    }

    /// The registry, to add the service's own request-path families (under the same prefix).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Calls `hook` with every finished request's method, status code and status message.
    pub fn on_status(mut self, hook: StatusHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The `method` label of a request path: the path if it is a known method, else `unknown`.
    pub fn method(&self, path: &str) -> &'static str {
        self.methods
            .iter()
            .find(|m| **m == path)
            .copied()
            .unwrap_or(UNKNOWN)
    }

    /// Records one finished request (what [`GrpcMetricsLayer`] does for each).
    pub fn record(&self, method: &'static str, code: Code, message: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.durations
            .get_or_create(&MethodLabel { method })
            .observe(elapsed.as_secs_f64());
        if let Some(hook) = &self.hook {
            hook(method, code, message);
        }
    }

    /// The `/metrics` text: the request families, then the values `scrape` read from the
    /// service's store just now.
    pub fn render(&self, scrape: Scrape) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry)?;
        prometheus_text::encode(&mut out, &scrape.0)?;
        Ok(out)
    }
}

/// Values read from a service's store at scrape time, under the service's prefix.
pub struct Scrape(Registry);

impl Scrape {
    /// No values yet; each family is named `{prefix}_…`.
    pub fn new(prefix: &str) -> Self {
        Scrape(Registry::with_prefix(prefix))
    }

    /// A gauge: a value that goes up and down.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.0.register(name, help, ConstGauge::new(value));
    }

    /// A gauge with one labelled sample (`name{label="value"}`).
    pub fn labelled_gauge(
        &mut self,
        name: &str,
        help: &str,
        label: (&'static str, &'static str),
        value: f64,
    ) {
        let family = Family::<Vec<(&'static str, &'static str)>, Gauge<f64, AtomicU64>>::default();
        family.get_or_create(&vec![label]).set(value);
        self.0.register(name, help, family);
    }

    /// A counter: a total that only grows (written `name_total`; do not add the suffix).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.0.register(name, help, ConstCounter::new(value));
    }
}

/// Counts every request by method and status code and times it; see the module doc.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    stats: Arc<GrpcStats>,
}

impl GrpcMetricsLayer {
    /// A layer that records into `stats`.
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

/// The service [`GrpcMetricsLayer`] wraps around a server's services.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    stats: Arc<GrpcStats>,
}

/// One request being observed: recorded exactly once, when its status is known or, if it is
/// dropped unanswered, as `Canceled`.
struct Observation {
    stats: Arc<GrpcStats>,
    method: &'static str,
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
            method: self.stats.method(req.uri().path()),
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
pub struct MetricsEndpoint {
    listener: TcpListener,
}

/// Connections the endpoint serves at once (a scraper and a probe or two need few).
const MAX_CONNECTIONS: usize = 32;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

impl MetricsEndpoint {
    /// Binds `[metrics] listen`; the error is the bind's (the caller names the address).
    pub async fn bind(config: &MetricsConfig) -> std::io::Result<MetricsEndpoint> {
        Ok(MetricsEndpoint {
            listener: TcpListener::bind(config.listen).await?,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Starts serving on its own task (abort it to stop). `/readyz` follows `ready`;
    /// `render` writes the `/metrics` text and runs on the blocking pool, since it reads the
    /// service's store.
    pub fn spawn<R>(self, ready: Arc<AtomicBool>, render: R) -> tokio::task::JoinHandle<()>
    where
        R: Fn() -> Result<String, String> + Clone + Send + Sync + 'static,
    {
        tokio::spawn(self.run(ready, move || {
            let render = render.clone();
            async move {
                tokio::task::spawn_blocking(render)
                    .await
                    .map_err(|e| format!("metrics task failed: {e}"))?
            }
        }))
    }

    /// Serves until the task is aborted. `render` produces the `/metrics` text.
    pub async fn run<F, Fut>(self, ready: Arc<AtomicBool>, render: F)
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
            Ok(body) => text(StatusCode::OK, CONTENT_TYPE, body),
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
    use std::sync::Mutex;

    #[test]
    fn the_text_format_writes_known_methods_unknown_paths_and_cumulative_buckets() {
        let stats = GrpcStats::new("t", ["/a.B/C"]);
        let m = stats.method("/a.B/C");
        stats.record(m, Code::Ok, "", Duration::from_millis(3));
        stats.record(m, Code::NotFound, "", Duration::from_secs(100));
        stats.record(
            stats.method("/not/known\"x"),
            Code::Unimplemented,
            "",
            Duration::ZERO,
        );
        let mut scrape = Scrape::new("t");
        scrape.gauge("x", "An x.", f64::INFINITY);
        scrape.counter("y", "A y.", 7);
        scrape.labelled_gauge("z", "A z.", ("model", "intent"), 0.5);
        let text = stats.render(scrape).unwrap();
        assert!(text.contains("t_grpc_requests_total{method=\"/a.B/C\",code=\"OK\"} 1\n"));
        assert!(text.contains("t_grpc_requests_total{method=\"/a.B/C\",code=\"NotFound\"} 1\n"));
        assert!(
            text.contains("t_grpc_requests_total{method=\"unknown\",code=\"Unimplemented\"} 1\n"),
            "an unknown path is not echoed: {text}"
        );
        assert!(!text.contains("not/known"), "{text}");
        for (le, n) in [("0.0025", 0), ("0.005", 1), ("30", 1), ("+Inf", 2)] {
            let line = format!(
                "t_grpc_request_duration_seconds_bucket{{method=\"/a.B/C\",le=\"{le}\"}} {n}\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains("t_grpc_request_duration_seconds_count{method=\"/a.B/C\"} 2\n"));
        assert!(text.contains("# TYPE t_grpc_request_duration_seconds histogram\n"));
        assert!(text.contains("t_x +Inf\n"), "{text}");
        assert!(
            text.contains("# TYPE t_y_total counter\nt_y_total 7\n"),
            "{text}"
        );
        assert!(text.contains("t_z{model=\"intent\"} 0.5\n"), "{text}");
    }

    #[test]
    fn the_status_hook_sees_each_finished_request_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let stats = Arc::new(GrpcStats::new("t", ["/a.F/Submit"]).on_status(Box::new(
            move |method, code, message| {
                if let Ok(mut s) = sink.lock() {
                    s.push((method, code, message.to_owned()));
                }
            },
        )));
        let mut o = Observation {
            stats: Arc::clone(&stats),
            method: stats.method("/a.F/Submit"),
            start: Instant::now(),
            done: false,
        };
        o.finish(Code::FailedPrecondition, "replay: x");
        drop(o);
        drop(Observation {
            stats: Arc::clone(&stats),
            method: stats.method("/elsewhere"),
            start: Instant::now(),
            done: false,
        });
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen,
            vec![
                (
                    "/a.F/Submit",
                    Code::FailedPrecondition,
                    "replay: x".to_owned()
                ),
                (UNKNOWN, Code::Cancelled, String::new()),
            ],
            "finished once, then a request dropped unanswered counts as Canceled"
        );
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
        assert_eq!(
            answer(&get("/elsewhere"), &ready, render).await.status(),
            404
        );
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(answer(&post, &ready, render).await.status(), 405);
    }
}
