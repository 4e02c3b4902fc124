//! The wall clock as the store records it, and the random writer ids that keep object names
//! of concurrent processes apart.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch (0 before it, saturating far after it).
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A random number naming this writer in object names that must not collide with another
/// process's, from the standard library's randomly seeded hasher and the time.
pub(crate) fn writer_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), now_micros()))
}
