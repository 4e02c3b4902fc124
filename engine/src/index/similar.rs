//! `similar(table, path_or_vector, k)`: the k rows of an indexed table nearest to one of its
//! rows (by key, e.g. a path; the row itself comes first, at distance 0) or to a vector, as
//! `(key, distance)` through the table's HNSW index.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::TableReference;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{lit, Expr, TableType};
use datafusion::physical_plan::metrics::Count;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{ident, SessionContext};

use super::knn::{evaluate_vector, nearest, session_state, vector_of, KnnQuery};
use super::registry::{Entry, Indexes};
use crate::sql::settings;

const USAGE: &str = "similar(table, path_or_vector, k)";

/// The table function.
#[derive(Debug)]
pub struct Similar {
    indexes: Arc<Indexes>,
}

impl Similar {
    pub fn new(indexes: Arc<Indexes>) -> Self {
        Self { indexes }
    }
}

fn usage(reason: &str) -> DataFusionError {
    DataFusionError::Plan(format!("{USAGE}: {reason}"))
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(v, _) => Some(v),
        Expr::Cast(c) => literal(&c.expr),
        _ => None,
    }
}

impl TableFunctionImpl for Similar {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        let [table, query, k] = args.exprs() else {
            return Err(usage("takes three arguments"));
        };
        let table = match literal(table) {
            Some(ScalarValue::Utf8(Some(t))) => TableReference::from(t.as_str()),
            _ => return Err(usage("the table must be a name in quotes")),
        };
        let k = match literal(k) {
            Some(ScalarValue::Int64(Some(k))) if *k >= 0 => *k as usize,
            _ => return Err(usage("k must be a number of rows, 0 or more")),
        };
        let Some(name) = self.indexes.on_table(&table).into_iter().next() else {
            return Err(usage(&format!(
                "table {table} has no hnsw index; create one with CREATE INDEX ON {table} USING hnsw (column)"
            )));
        };
        let entry = self
            .indexes
            .get(&name)
            .ok_or_else(|| usage(&format!("index {name} was dropped")))?;
        let key = entry.definition.key.clone();
        Ok(Arc::new(SimilarTable {
            indexes: Arc::clone(&self.indexes),
            entry,
            table,
            query: query.clone(),
            k,
            schema: Arc::new(Schema::new(vec![
                Field::new(key, DataType::Utf8, false),
                Field::new("distance", DataType::Float64, false),
            ])),
        }))
    }
}

#[derive(Debug)]
struct SimilarTable {
    indexes: Arc<Indexes>,
    entry: Arc<Entry>,
    table: TableReference,
    query: Expr,
    k: usize,
    schema: SchemaRef,
}

impl SimilarTable {
    /// The query vector: the argument itself, or the vector of the row whose key it is.
    async fn query_vector(&self, state: &SessionState) -> Result<Vec<f32>> {
        let d = &self.entry.definition;
        if let Some(ScalarValue::Utf8(Some(text))) = literal(&self.query) {
            if !text.trim_start().starts_with('[') {
                let frame = SessionContext::new_with_state(state.clone())
                    .table(self.table.clone())
                    .await?
                    .filter(ident(&d.key).eq(lit(text.as_str())))?
                    .select(vec![ident(&d.column)])?
                    .limit(0, Some(1))?;
                let batches = frame.collect().await?;
                let batch = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| {
                    usage(&format!("no row of {} has {} '{text}'", self.table, d.key))
                })?;
                let value = ScalarValue::try_from_array(batch.column(0), 0)?;
                return vector_of(&value)?.ok_or_else(|| {
                    usage(&format!(
                        "the row with {} '{text}' has no {}",
                        d.key, d.column
                    ))
                });
            }
        }
        evaluate_vector(state, &self.query)
            .await?
            .ok_or_else(|| usage("the vector is NULL"))
    }
}

#[async_trait]
impl TableProvider for SimilarTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = session_state(state)?;
        let inner = SessionContext::new_with_state(state.clone())
            .table_provider(self.table.clone())
            .await?;
        let query = self.query_vector(state).await?;
        let knn = KnnQuery {
            inner,
            table: self.table.clone(),
            indexes: Arc::clone(&self.indexes),
            entry: Arc::clone(&self.entry),
            query: lit(ScalarValue::Null),
            k: self.k,
            predicate: None,
        };
        let options = settings::search_options(state.config_options())?;
        let found = nearest(state, &knn, &query, self.k, &options, &Count::new()).await?;
        let (keys, distances): (Vec<String>, Vec<f64>) =
            found.rows.into_iter().map(|f| (f.key, f.distance)).unzip();
        let batch = RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(Float64Array::from(distances)),
            ],
        )?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}
