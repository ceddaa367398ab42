//! Accepting mutual-TLS connections for a tonic server: a connection limit, a handshake
//! deadline, an idle limit and a lifetime per connection, and a TLS configuration that can be
//! swapped at run time (SIGHUP) without dropping connections already made.
//!
//! A connection is idle while no request is in flight on it (HTTP/2 pings do not count: the
//! [auth layer](crate::AuthLayer) marks each request's start and end in the connection's
//! [`Activity`]). An idle connection is closed after `idle_timeout`, and any connection at its
//! first idle moment after `max_lifetime`, so finished handshakes left open cannot hold every
//! slot under `max_connections`.

use crate::tls::ServerTls;
use amble_crypto::pki::TrustRoot;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tonic::transport::server::Connected;

/// The TLS configuration in force. [`TlsSlot::replace`] swaps it (SIGHUP): new handshakes use
/// the new one at once, and every open connection checks its chain against it and closes if
/// it is no longer accepted (a revoked certificate loses the connections it already has).
#[derive(Debug)]
pub struct TlsSlot {
    current: RwLock<Arc<ServerTls>>,
    generation: watch::Sender<u64>,
}

impl TlsSlot {
    /// A slot holding `tls`.
    pub fn new(tls: Arc<ServerTls>) -> Arc<TlsSlot> {
        Arc::new(TlsSlot {
            current: RwLock::new(tls),
            generation: watch::Sender::new(0),
        })
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<ServerTls> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Puts `tls` in force and has every open connection check its chain against it.
    pub fn replace(&self, tls: Arc<ServerTls>) {
        match self.current.write() {
            Ok(mut c) => *c = tls,
            Err(poisoned) => *poisoned.into_inner() = tls,
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `born` at which the last request ended (or the connection began).
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Marks a request as started; the guard marks it ended when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// When the connection next becomes closable as idle, or `None` while a request runs.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let last = self.born + Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
        Some(last + idle)
    }
}

/// A request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_ms.store(ms, Ordering::SeqCst);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Who is at the other end of a verified connection, as the handshake established it; every
/// request on the connection carries it in its extensions for the auth layer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The verified chain, leaf first.
    pub certs: Arc<[CertificateDer<'static>]>,
    /// The root the chain verified against.
    pub root: TrustRoot,
    /// Requests in flight on this connection.
    pub activity: Arc<Activity>,
}

/// Bounds on connections (the request-level bounds belong to the service).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections; more are closed at once.
    pub max_connections: usize,
    /// A TLS handshake taking longer is dropped.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A connection older than this is closed at its first moment with no request in flight.
    pub max_lifetime: Duration,
}

/// Accepts TCP connections on `listener`, completes the TLS handshake with the configuration
/// in `tls` at accept time, and yields verified connections for
/// `tonic::transport::Server::serve_with_incoming_shutdown`. Stops when `stop` turns true.
/// A refused handshake has no verified peer to blame, so it reaches the tracing log only.
pub fn mtls_incoming(
    listener: TcpListener,
    tls: Arc<TlsSlot>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
) -> (
    ReceiverStream<Result<Conn, std::io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<Result<Conn, std::io::Error>>(64);
    let task = tokio::spawn(accept_loop(listener, tls, limits, tx, stop));
    (ReceiverStream::new(rx), task)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<TlsSlot>,
    limits: ConnLimits,
    tx: mpsc::Sender<Result<Conn, std::io::Error>>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let handshake = limits.handshake_timeout;
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // gRPC sends small frames and waits for answers: Nagle + delayed ACK would add ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::warn!(
                limit = limits.max_connections,
                "connection limit reached; closing a new connection"
            );
            continue;
        };
        let config = tls.current();
        let reloads = WatchStream::from_changes(tls.generation.subscribe());
        let slot = Arc::clone(&tls);
        let tx = tx.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&config.config));
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let (tcp, session) = stream.get_ref();
                    let certs: Arc<[CertificateDer<'static>]> = session
                        .peer_certificates()
                        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                        .unwrap_or_default();
                    let peer = PeerInfo {
                        remote: tcp.peer_addr().ok(),
                        root: config.root_of(&certs),
                        certs,
                        activity: Arc::new(Activity::new()),
                    };
                    let now = tokio::time::Instant::now();
                    let _ = tx
                        .send(Ok(Conn {
                            inner: stream,
                            peer,
                            _permit: permit,
                            idle_after: limits.idle_timeout,
                            idle: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
                            end_of_life: now + limits.max_lifetime,
                            reloads,
                            slot,
                        }))
                        .await;
                }
                Ok(Err(e)) => tracing::info!(error = %e, "TLS handshake refused"),
                Err(_) => tracing::info!("TLS handshake timed out"),
            }
        });
    }
}

/// A verified TLS connection that holds its slot under the connection limit until closed.
pub struct Conn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: PeerInfo,
    _permit: OwnedSemaphorePermit,
    idle_after: Duration,
    /// Fires at the next moment the connection may be closable.
    idle: Pin<Box<tokio::time::Sleep>>,
    end_of_life: tokio::time::Instant,
    /// Fires when the TLS configuration is replaced.
    reloads: WatchStream<u64>,
    slot: Arc<TlsSlot>,
}

impl Conn {
    /// Whether a reload since the last look refuses this connection's chain.
    fn revoked(&mut self, cx: &mut Context<'_>) -> bool {
        let mut reloaded = false;
        while let Poll::Ready(Some(_)) = Pin::new(&mut self.reloads).poll_next(cx) {
            reloaded = true;
        }
        if reloaded && !self.slot.current().still_accepts(&self.peer.certs) {
            tracing::info!("closing a connection whose certificate the reloaded TLS files refuse");
            return true;
        }
        false
    }

    /// Whether the connection should end now (idle too long, or past its lifetime while idle);
    /// otherwise re-arms the timer for the next moment that could be true.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = tokio::time::Instant::now();
            let next = match self.peer.activity.idle_deadline(self.idle_after) {
                // A request is running: look again after another idle period.
                None => now + self.idle_after,
                Some(deadline) => {
                    let deadline = tokio::time::Instant::from_std(deadline);
                    if deadline <= now || self.end_of_life <= now {
                        return true;
                    }
                    deadline.min(self.end_of_life)
                }
            };
            self.idle.as_mut().reset(next);
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.revoked(cx) || self.expired(cx) {
            // End of stream: the HTTP/2 server closes the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
