//! System tables whose rows are a snapshot of the engine's state, taken at each scan
//! (`audiolake_progress`, `audiolake_indexes`).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// State that can be shown as rows.
pub trait Snapshot: Send + Sync + 'static {
    fn schema() -> SchemaRef;
    fn snapshot(&self) -> Result<RecordBatch>;
}

/// A [`Snapshot`] as a read-only table.
pub struct SnapshotTable<T>(pub T);

impl<T> std::fmt::Debug for SnapshotTable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotTable<{}>", std::any::type_name::<T>())
    }
}

#[async_trait]
impl<T: Snapshot> TableProvider for SnapshotTable<T> {
    fn schema(&self) -> SchemaRef {
        T::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.0.snapshot()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            T::schema(),
            projection.cloned(),
        )?)
    }
}
