//! The connection's DataFusion state, copied once and reused by the queries that follow:
//! `SessionContext::state()` copies every function map, and a query took several copies, with a
//! `TaskContext` (more copies) for each execution. Anything but a query may change the session
//! (`SET`, `CREATE VIEW`, a cursor), so the session drops its copy after running one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::execution::context::SessionState;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionContext;
use parking_lot::Mutex;

use super::super::compat;

pub(super) struct Snapshot {
    pub(super) state: SessionState,
    pub(super) task: Arc<TaskContext>,
    /// What a plan of this session depends on besides its text and tables: the settings and
    /// the connected database (its `current_database()` is the session's own).
    pub(super) settings: u64,
}

impl Snapshot {
    fn of(ctx: &SessionContext) -> Snapshot {
        let state = ctx.state();
        let mut hasher = DefaultHasher::new();
        for entry in state.config_options().entries() {
            (entry.key, entry.value).hash(&mut hasher);
        }
        compat::connected_database(state.config()).hash(&mut hasher);
        Snapshot {
            task: state.task_ctx(),
            state,
            settings: hasher.finish(),
        }
    }
}

/// The copy a session keeps between its statements.
#[derive(Default)]
pub(super) struct Snapshots(Mutex<Option<Snapshot>>);

impl Snapshots {
    /// The session's state for a statement that starts now (the time `now()` answers).
    pub(super) fn take(&self, ctx: &SessionContext) -> Snapshot {
        let mut snapshot = self.0.lock().take().unwrap_or_else(|| Snapshot::of(ctx));
        snapshot.state.mark_start_execution();
        snapshot
    }

    /// Keeps `snapshot` for the next statement.
    pub(super) fn put(&self, snapshot: Snapshot) {
        *self.0.lock() = Some(snapshot);
    }

    /// Forgets the copy: a statement that may have changed the session ran.
    pub(super) fn clear(&self) {
        self.0.lock().take();
    }
}
