//! Whether a connection is idle: `--idle-timeout` closes it only when no statement runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// When a connection last did something, and whether a statement is running now.
#[derive(Debug)]
pub struct Activity {
    running: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    pub(super) fn new() -> Self {
        Self {
            running: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.running.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
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
