//! The storage fault latch: after an I/O error or corruption on the durable path, this process
//! no longer trusts its view of storage (the embedded engine never completes a flush after an
//! I/O error — see `store/sled.rs` —
//! and a retry in place could acknowledge what was never written). Like PostgreSQL's PANIC on
//! a failed fsync, the node stops: the latch trips once, readiness turns false, every new call
//! is refused with UNAVAILABLE without touching the node, and the server ends the process so
//! its supervisor restarts it on known-good state.
//!
//! The latch is process-wide because the condition is: one storage engine of this process
//! failed, and the process must end. It trips where a storage error becomes a [`NodeError`]
//! (crate::NodeError), so no path can see such an error without tripping it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

static ARMED: AtomicBool = AtomicBool::new(false);
static TRIPPED: OnceLock<String> = OnceLock::new();
static NOTIFY: Notify = Notify::const_new();

/// Arms the latch: from now on a storage fault ends this process. A serving node arms it; an
/// offline command (which ends at its first error anyway) does not need to.
pub fn arm() {
    ARMED.store(true, Ordering::SeqCst);
}

/// Records a storage fault (the first one's description is kept) and wakes the server.
pub fn trip(why: &str) {
    if !ARMED.load(Ordering::SeqCst) {
        return;
    }
    if TRIPPED.set(why.to_owned()).is_ok() {
        tracing::error!(
            error = why,
            "storage fault: the node stops serving and exits"
        );
    }
    NOTIFY.notify_waiters();
    NOTIFY.notify_one();
}

/// The first storage fault of this process, if one happened.
pub fn tripped() -> Option<&'static str> {
    TRIPPED.get().map(String::as_str)
}

/// Completes once a storage fault has happened.
pub async fn wait() -> &'static str {
    loop {
        let notified = NOTIFY.notified();
        if let Some(why) = tripped() {
            return why;
        }
        notified.await;
    }
}
