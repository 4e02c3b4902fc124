//! The table under a rewritten kNN query: the original table, whose scan is an index scan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use super::exec::HnswScanExec;
use super::search::KnnQuery;
use super::session::session_state;
use crate::sql::settings;

/// A table seen through one kNN query: its scan is a [`HnswScanExec`].
#[derive(Clone, Debug)]
pub struct KnnTable(pub KnnQuery);

#[async_trait]
impl TableProvider for KnnTable {
    fn schema(&self) -> SchemaRef {
        self.0.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.inner.table_type()
    }

    /// Every row the scan returns passes the filters it is given (the query's `WHERE`, which
    /// the rule saw), so they need not be applied again, nor their columns read.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Exact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = session_state(state)?.clone();
        let schema = match projection {
            Some(p) => Arc::new(self.0.inner.schema().project(p)?),
            None => self.0.inner.schema(),
        };
        let options = settings::search_options(state.config_options())?;
        // The filters as the optimiser left them (simplified): what the scan must apply.
        let mut query = self.0.clone();
        if let Some(pushed) = filters.iter().cloned().reduce(Expr::and) {
            query.predicate = Some(pushed);
        }
        Ok(Arc::new(HnswScanExec::new(
            query,
            state,
            projection.cloned(),
            options,
            schema,
        )))
    }
}
