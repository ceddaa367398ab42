//! The one serve loop of every amble listener: accept mutual-TLS connections, answer probes,
//! drain on shutdown, give up on a fault.
//!
//! A service binds its listener and builds its tonic router; [`Shell`] does the rest, the
//! same way for the node, the coordinator and the services to come:
//!
//! 1. **serving** — connections are accepted and handshaken ([`mtls_incoming`]); the
//!    metrics endpoint, if any, answers `/readyz` with 200;
//! 2. **draining** — when `shutdown` completes: `/readyz` turns 503, no new connection is
//!    accepted, background tasks see [`Shell::stopping`], requests in flight finish; tasks
//!    registered with [`Shell::finish_on_drain`] are awaited (a training round in progress
//!    ends first), the others aborted; then `flush` runs on the blocking pool, and only then
//!    does the metrics endpoint stop;
//! 3. **abandoning** — when `fault` completes (a storage fault: writes would hang or be
//!    lost), in either phase: readiness drops, requests in flight get `grace`, everything is
//!    aborted, and `flush` is *not* called (it would never finish). The caller should end the
//!    process at once; a supervisor restarts it.

use crate::incoming::{Conn, ConnLimits, TlsSlot, mtls_incoming};
use crate::metrics::MetricsEndpoint;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

/// The verified connections a tonic server reads (`serve_with_incoming_shutdown`).
pub type Incoming = ReceiverStream<Result<Conn, std::io::Error>>;

/// A future the server awaits to start its graceful shutdown.
pub type Drain = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How a [`Shell::run`] ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Ended {
    /// A fault stopped the service without the final flush (the fault's description).
    #[error("stopped after a fault: {0}")]
    Abandoned(String),
    /// The gRPC server failed.
    #[error("serving failed: {0}")]
    Serve(String),
    /// The final flush failed: what was acknowledged is durable, the rest may not be.
    #[error("the final flush failed: {0}")]
    Flush(String),
}

/// One listener's life; see the module doc.
pub struct Shell {
    incoming: Option<Incoming>,
    accept: JoinHandle<()>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    ready: Arc<AtomicBool>,
    metrics: Option<JoinHandle<()>>,
    finish: Vec<JoinHandle<()>>,
    abort: Vec<JoinHandle<()>>,
}

impl Shell {
    /// Starts accepting on `listener` with the TLS configuration in `tls`. Ready from here.
    pub fn start(listener: TcpListener, tls: Arc<TlsSlot>, limits: ConnLimits) -> Shell {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (incoming, accept) = mtls_incoming(listener, tls, limits, stop_rx.clone());
        Shell::from_parts(incoming, accept, stop_tx, stop_rx)
    }

    fn from_parts(
        incoming: Incoming,
        accept: JoinHandle<()>,
        stop_tx: watch::Sender<bool>,
        stop_rx: watch::Receiver<bool>,
    ) -> Shell {
        Shell {
            incoming: Some(incoming),
            accept,
            stop_tx,
            stop_rx,
            ready: Arc::new(AtomicBool::new(true)),
            metrics: None,
            finish: Vec::new(),
            abort: Vec::new(),
        }
    }

    /// Turns `true` when draining or abandoning starts: background tasks stop on it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop_rx.clone()
    }

    /// Serves health, readiness and metrics on `endpoint` until the very end; `render`
    /// writes the `/metrics` text (on the blocking pool).
    pub fn metrics<R>(&mut self, endpoint: MetricsEndpoint, render: R)
    where
        R: Fn() -> Result<String, String> + Clone + Send + Sync + 'static,
    {
        self.metrics = Some(endpoint.spawn(Arc::clone(&self.ready), render));
    }

    /// A background task awaited when draining (it must end on [`Shell::stopping`]).
    pub fn finish_on_drain(&mut self, task: JoinHandle<()>) {
        self.finish.push(task);
    }

    /// A background task aborted when the server stops.
    pub fn abort_on_stop(&mut self, task: JoinHandle<()>) {
        self.abort.push(task);
    }

    /// Runs the server `serve` builds (from the verified connections and the future it must
    /// drain on) through the phases of the module doc.
    pub async fn run<S, E>(
        mut self,
        serve: impl FnOnce(Incoming, Drain) -> S,
        shutdown: impl Future<Output = ()> + Send,
        fault: impl Future<Output = String> + Send,
        grace: Duration,
        flush: impl FnOnce() -> Result<(), String> + Send + 'static,
    ) -> Result<(), Ended>
    where
        S: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        let Some(incoming) = self.incoming.take() else {
            return Err(Ended::Serve("the shell was already run".into()));
        };
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let drain: Drain = Box::pin(async move {
            let _ = drain_rx.await;
        });
        let server = serve(incoming, drain);
        tokio::pin!(server, shutdown, fault);
        let mut drain_tx = Some(drain_tx);
        let begin_stop = |drain_tx: &mut Option<oneshot::Sender<()>>| {
            self.ready.store(false, Ordering::SeqCst);
            let _ = self.stop_tx.send(true);
            if let Some(tx) = drain_tx.take() {
                let _ = tx.send(());
            }
        };
        let served = tokio::select! {
            r = &mut server => Some(r),
            () = &mut shutdown => None,
            why = &mut fault => {
                begin_stop(&mut drain_tx);
                let _ = tokio::time::timeout(grace, &mut server).await;
                return Err(self.abandon(why));
            }
        };
        let served = match served {
            Some(r) => r,
            None => {
                begin_stop(&mut drain_tx);
                tokio::select! {
                    r = &mut server => r,
                    why = &mut fault => {
                        let _ = tokio::time::timeout(grace, &mut server).await;
                        return Err(self.abandon(why));
                    }
                }
            }
        };
        begin_stop(&mut drain_tx);
        self.accept.abort();
        // A fault that struck as the last request finished still forbids the flush.
        let tripped = tokio::select! {
            biased;
            why = &mut fault => Some(why),
            () = std::future::ready(()) => None,
        };
        if let Some(why) = tripped {
            return Err(self.abandon(why));
        }
        for task in self.finish.drain(..) {
            let _ = task.await;
        }
        for task in self.abort.drain(..) {
            task.abort();
        }
        let flushed = tokio::task::spawn_blocking(flush)
            .await
            .map_err(|e| Ended::Flush(format!("flush task failed: {e}")))
            .and_then(|r| r.map_err(Ended::Flush));
        if let Some(m) = self.metrics.take() {
            m.abort();
        }
        served.map_err(|e| Ended::Serve(e.to_string()))?;
        flushed
    }

    fn abandon(mut self, why: String) -> Ended {
        self.accept.abort();
        for task in self.finish.drain(..).chain(self.abort.drain(..)) {
            task.abort();
        }
        if let Some(m) = self.metrics.take() {
            m.abort();
        }
        Ended::Abandoned(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::mpsc;

    /// A shell over no connections, and a server that ends when told to drain.
    fn shell() -> Shell {
        let (_tx, rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let accept = tokio::spawn(std::future::pending::<()>());
        Shell::from_parts(ReceiverStream::new(rx), accept, stop_tx, stop_rx)
    }

    async fn server(_incoming: Incoming, drain: Drain) -> Result<(), String> {
        drain.await;
        Ok(())
    }

    #[tokio::test]
    async fn a_drain_stops_background_tasks_awaits_the_finishing_ones_then_flushes() {
        let mut shell = shell();
        let finished = Arc::new(AtomicUsize::new(0));
        let mut stopping = shell.stopping();
        let f = Arc::clone(&finished);
        // Ends only after it sees the stop, like the federation client finishing a round.
        shell.finish_on_drain(tokio::spawn(async move {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.fetch_add(1, Ordering::SeqCst);
        }));
        let flushed = Arc::new(AtomicUsize::new(0));
        let (fl, fin) = (Arc::clone(&flushed), Arc::clone(&finished));
        let result = shell
            .run(
                server,
                async {},
                std::future::pending(),
                Duration::ZERO,
                move || {
                    // The flush comes after the finishing task, never before.
                    assert_eq!(fin.load(Ordering::SeqCst), 1);
                    fl.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            )
            .await;
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert_eq!(flushed.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_fault_abandons_without_flushing_even_while_a_request_hangs() {
        let shell = shell();
        let flushed = Arc::new(AtomicUsize::new(0));
        let fl = Arc::clone(&flushed);
        // A server whose request in flight never finishes (writes hang on a failed disk).
        let hung = |_: Incoming, _: Drain| std::future::pending::<Result<(), String>>();
        let result = shell
            .run(
                hung,
                std::future::pending(),
                async { "disk gone".to_owned() },
                Duration::from_millis(10),
                move || {
                    fl.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                },
            )
            .await;
        assert!(matches!(result, Err(Ended::Abandoned(ref why)) if why == "disk gone"));
        assert_eq!(flushed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_failed_flush_is_reported() {
        let result = shell()
            .run(
                server,
                async {},
                std::future::pending(),
                Duration::ZERO,
                || Err("no space left".to_owned()),
            )
            .await;
        assert!(matches!(result, Err(Ended::Flush(ref why)) if why.contains("no space")));
    }
}
