//! The one way a service waits for its signals: SIGTERM or SIGINT starts a graceful
//! shutdown, and each SIGHUP reloads what the service can reload (its TLS files, and on a
//! node its policy) while it keeps serving.

use std::future::Future;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

/// The installed handlers, from the moment [`Signals::install`] returns (a signal that
/// arrives later is not lost, even before the service awaits it).
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers for SIGTERM, SIGINT and SIGHUP.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Starts a task that, on each SIGHUP, runs `reload` on the blocking pool and logs what it
    /// did (its `Ok` text) or why the old configuration stays in force. Returns the future to
    /// hand a server's `run` as its shutdown (it completes at SIGTERM or SIGINT) and the reload
    /// task, to abort once the server has stopped.
    pub fn split<R>(self, reload: R) -> (impl Future<Output = ()> + Send, JoinHandle<()>)
    where
        R: Fn() -> Result<String, String> + Clone + Send + 'static,
    {
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = self;
        let reloader = tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match tokio::task::spawn_blocking(reload.clone()).await {
                    Ok(Ok(what)) => tracing::info!(reloaded = %what, "SIGHUP: reloaded"),
                    Ok(Err(e)) => tracing::error!(
                        error = %e,
                        "SIGHUP: reload failed; the configuration in force stays"
                    ),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the reload task failed"),
                }
            }
        });
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("interrupt: shutting down"),
            }
        };
        (shutdown, reloader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Sends a signal to this test process (the handlers are installed first, so the default
    /// action — ending the process — never runs).
    fn raise(sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[tokio::test]
    async fn sighup_reloads_each_time_and_sigterm_ends_the_wait() {
        let signals = Signals::install().unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&reloads);
        let (shutdown, reloader) = signals.split(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                Ok("policy version 2".into())
            } else {
                Err("bad policy".into())
            }
        });
        for expected in 1..=2 {
            raise("HUP");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while reloads.load(Ordering::SeqCst) < expected {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "SIGHUP {expected} not seen"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(
            !reloader.is_finished(),
            "a failed reload does not stop the reloader"
        );
        raise("TERM");
        tokio::time::timeout(Duration::from_secs(10), shutdown)
            .await
            .expect("SIGTERM ends the wait");
        reloader.abort();
    }
}
