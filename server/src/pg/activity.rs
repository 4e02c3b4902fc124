//! Whether a connection is idle, and whether it has authenticated: `--idle-timeout` closes it
//! only when no statement runs, `--authentication-timeout` when it has not logged in by then.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// When a connection last did something, and whether a statement is running now.
#[derive(Debug)]
pub struct Activity {
    running: AtomicUsize,
    last: Mutex<Instant>,
    authenticated: AtomicBool,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            running: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
            authenticated: AtomicBool::new(false),
        }
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.running.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// The client has logged in and may send statements.
    pub(super) fn authenticated(&self) {
        self.authenticated.store(true, Ordering::SeqCst);
    }

    /// Returns `timeout` after the connection began if the client has not logged in by then
    /// (and never returns otherwise), so that a silent client does not keep a connection slot.
    pub(super) async fn unauthenticated_after(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
        if self.authenticated.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once the connection has run nothing for `timeout`.
    pub(super) async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = *self.last.lock();
            let idle = last.elapsed();
            if self.running.load(Ordering::SeqCst) == 0 && idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout.saturating_sub(idle).max(Duration::from_millis(100))).await;
        }
    }
}

/// A statement in progress; the connection is not idle while one is alive.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock() = Instant::now();
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}
