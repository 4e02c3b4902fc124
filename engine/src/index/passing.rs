//! Which rows of a loaded index build pass a kNN query's `WHERE`, as a set of row ids, and a
//! small cache of them per build: applications filter by the same few values again and again
//! (a genre, a label, a mode), and on a table that has not changed the answer is the same, so
//! only the first such query reads the filter's columns.

use std::sync::Arc;

use datafusion::logical_expr::Expr;
use parking_lot::Mutex;

/// Row ids that pass, as bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passing {
    bits: Vec<u64>,
    count: usize,
}

impl Passing {
    /// No row of `rows` passes yet.
    pub fn new(rows: usize) -> Passing {
        Passing {
            bits: vec![0; rows.div_ceil(64)],
            count: 0,
        }
    }

    /// Row `id` (below the `rows` given to [`new`](Self::new)) passes.
    pub fn insert(&mut self, id: u64) {
        let (word, bit) = ((id / 64) as usize, id % 64);
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.bits
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// Whether every one of `rows` passes.
    pub fn all(&self, rows: usize) -> bool {
        self.count == rows
    }

    pub fn count(&self) -> usize {
        self.count
    }
}

/// Predicates kept per build: each costs one bit per row.
const KEPT: usize = 16;

/// The rows that recent predicates passed, for one loaded build at one table version; emptied
/// when the build takes additions.
#[derive(Debug, Default)]
pub struct PassingCache {
    /// Most recently used last.
    kept: Mutex<Vec<(Expr, Arc<Passing>)>>,
}

impl PassingCache {
    /// The rows `predicate` passed, if it was asked since the build last changed.
    pub fn get(&self, predicate: &Expr) -> Option<Arc<Passing>> {
        let mut kept = self.kept.lock();
        let at = kept.iter().position(|(p, _)| p == predicate)?;
        let hit = kept.remove(at);
        let passing = Arc::clone(&hit.1);
        kept.push(hit);
        Some(passing)
    }

    /// Keeps what `predicate` passed; a predicate whose value can change from one evaluation
    /// to the next (`random()`, `now()`) is not kept.
    pub fn put(&self, predicate: &Expr, passing: Arc<Passing>) {
        if predicate.is_volatile() {
            return;
        }
        let mut kept = self.kept.lock();
        kept.retain(|(p, _)| p != predicate);
        if kept.len() == KEPT {
            kept.remove(0);
        }
        kept.push((predicate.clone(), passing));
    }

    pub fn clear(&self) {
        self.kept.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};
    use datafusion::prelude::random;

    #[test]
    fn passing_counts_each_row_once() {
        let mut passing = Passing::new(130);
        for id in [0, 64, 129, 64] {
            passing.insert(id);
        }
        assert_eq!(passing.count(), 3);
        assert!(passing.contains(129) && passing.contains(0) && !passing.contains(1));
        // Ids past the rows (a build's additions) do not pass.
        assert!(!passing.contains(1000));
        assert!(!passing.all(130));
    }

    #[test]
    fn the_cache_keeps_recent_stable_predicates() {
        let cache = PassingCache::default();
        let one = Arc::new(Passing::new(10));
        for i in 0..=KEPT as i32 {
            cache.put(&col("bucket").lt(lit(i)), Arc::clone(&one));
        }
        // The first one was used least recently and went.
        assert!(cache.get(&col("bucket").lt(lit(0))).is_none());
        assert_eq!(cache.get(&col("bucket").lt(lit(1))), Some(Arc::clone(&one)));
        let volatile = col("x").lt(random());
        cache.put(&volatile, Arc::clone(&one));
        assert!(cache.get(&volatile).is_none());
        // lit(1) was used last: putting one more drops lit(2), not it.
        cache.put(&col("bucket").lt(lit(99)), Arc::clone(&one));
        assert!(cache.get(&col("bucket").lt(lit(2))).is_none());
        assert!(cache.get(&col("bucket").lt(lit(1))).is_some());
        cache.clear();
        assert!(cache.get(&col("bucket").lt(lit(1))).is_none());
    }
}
