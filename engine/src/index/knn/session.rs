//! The session an index scan plans and runs its own queries in.

use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;

/// The full session behind a scan's `Session`: index scans plan and run queries of their own.
pub fn session_state(state: &dyn Session) -> Result<&SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| DataFusionError::Internal("an index scan needs a SessionState".into()))
}

/// Runs `plan` to its batches.
pub(super) async fn run(state: &SessionState, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    let physical = state.create_physical_plan(&plan).await?;
    collect(physical, state.task_ctx()).await
}
