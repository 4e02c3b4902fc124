//! The set of nodes a graph search has seen, one per thread and reused across searches: clearing
//! it is a generation bump, not a pass over every node, and marking a node allocates nothing.

use std::cell::RefCell;

#[derive(Default)]
pub(super) struct Visited {
    /// A node is visited when its mark equals `generation`.
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    /// Empties the set and makes room for nodes `0..n`.
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        // After 65,535 searches the marks wrap: old ones could equal the new generation.
        if self.generation == 0 {
            self.marks.fill(0);
            self.generation = 1;
        }
    }

    /// Marks `node`; false when it was already marked.
    #[inline]
    pub(super) fn insert(&mut self, node: u32) -> bool {
        let mark = &mut self.marks[node as usize];
        let fresh = *mark != self.generation;
        *mark = self.generation;
        fresh
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = RefCell::default();
}

/// Runs `f` with this thread's empty set for nodes `0..n`.
pub(super) fn with_visited<R>(n: usize, f: impl FnOnce(&mut Visited) -> R) -> R {
    VISITED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut visited) => {
            visited.reset(n);
            f(&mut visited)
        }
        // A search inside a search (not done today) gets its own set rather than a panic.
        Err(_) => {
            let mut visited = Visited::default();
            visited.reset(n);
            f(&mut visited)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_search_starts_empty_even_after_the_generation_wraps() {
        for _ in 0..70_000 {
            with_visited(4, |v| {
                assert!(v.insert(3));
                assert!(!v.insert(3));
                assert!(v.insert(0));
            });
        }
        with_visited(10, |v| assert!(v.insert(9)));
    }

    #[test]
    fn nested_searches_get_their_own_set() {
        with_visited(2, |outer| {
            assert!(outer.insert(1));
            with_visited(2, |inner| assert!(inner.insert(1)));
            assert!(!outer.insert(1));
        });
    }
}
