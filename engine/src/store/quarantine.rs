//! Malformed objects met in the store (a feature part that is not a readable Parquet part of
//! its group, a compaction record or an index definition that does not parse): each is left
//! where it is, untouched, skipped by every reader, logged once and listed here, so that one bad
//! object never stops the engine.

use std::sync::{Mutex, PoisonError};

/// One malformed object of the store and why it was set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreProblem {
    /// The object's path in the store.
    pub path: String,
    pub reason: String,
}

/// The malformed objects seen so far, each once.
#[derive(Debug, Default)]
pub struct Quarantine {
    problems: Mutex<Vec<StoreProblem>>,
}

impl Quarantine {
    /// Records `path` as malformed (and logs it) unless it already is.
    pub fn report(&self, path: &str, reason: String) {
        let mut problems = self.problems.lock().unwrap_or_else(PoisonError::into_inner);
        if problems.iter().any(|p| p.path == path) {
            return;
        }
        log::warn!("{path} is malformed and was set aside (left in place, not read): {reason}");
        problems.push(StoreProblem {
            path: path.to_owned(),
            reason,
        });
    }

    /// Every malformed object seen, in the order met.
    pub fn problems(&self) -> Vec<StoreProblem> {
        self.problems
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
