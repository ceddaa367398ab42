//! Accepting mutual-TLS connections for a tonic server: a connection limit, a handshake
//! deadline, and a TLS configuration that can be swapped at run time (SIGHUP) without
//! dropping connections already made.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// The TLS configuration in force; replace the inner `Arc` to reload.
pub type TlsSlot = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Bounds on connections (the request-level bounds belong to the service).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections; more are closed at once.
    pub max_connections: usize,
    /// A TLS handshake taking longer is dropped.
    pub handshake_timeout: Duration,
}

/// Accepts TCP connections on `listener`, completes the TLS handshake with the configuration
/// in `tls` at accept time, and yields verified connections for
/// `tonic::transport::Server::serve_with_incoming_shutdown`. Stops when `stop` turns true.
/// A refused handshake has no verified peer to blame, so it reaches the tracing log only.
pub fn mtls_incoming(
    listener: TcpListener,
    tls: TlsSlot,
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
    tls: TlsSlot,
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
        let config = match tls.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx
                        .send(Ok(Conn {
                            inner: stream,
                            _permit: permit,
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
    _permit: OwnedSemaphorePermit,
}

impl Connected for Conn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
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
