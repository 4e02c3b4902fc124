//! The wall clock as the store records it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}
