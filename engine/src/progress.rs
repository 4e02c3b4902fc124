//! Counters of files probed, shared by every scan of an engine, for progress bars and status.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct ScanProgress {
    total: AtomicU64,
    done: AtomicU64,
}

impl ScanProgress {
    /// A scan is about to open `files` files.
    pub fn add_total(&self, files: u64) {
        self.total.fetch_add(files, Ordering::Relaxed);
    }

    /// One file has been opened and read.
    pub fn file_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// (files done, files announced) since the engine started.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}
