//! Stopping blocking work when the query that waits for it goes away: a dropped future (the
//! client disconnected or cancelled, `statement_timeout` passed, the caller gave up) sets a
//! flag that the work polls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Sets its flag when dropped: hold it across the `.await` of the blocking work, which polls
/// [`CancelOnDrop::flag`].
#[derive(Default)]
pub(crate) struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    /// The flag, for the work to poll.
    pub(crate) fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_future_sets_the_flag() {
        let cancel = CancelOnDrop::default();
        let flag = cancel.flag();
        let waiting = async move {
            let _cancel = cancel;
            std::future::pending::<()>().await;
        };
        let waiting = tokio::spawn(waiting);
        tokio::task::yield_now().await;
        assert!(!flag.load(Ordering::Relaxed));
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert!(flag.load(Ordering::Relaxed));
    }
}
