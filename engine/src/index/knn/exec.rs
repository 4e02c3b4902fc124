//! `HnswIndexScan`: the k nearest qualifying rows, from the index alone when it holds every
//! column asked for, else read from the table by key.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, LargeListArray, ListArray, RecordBatch,
    RecordBatchOptions, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::ident;
use futures::{stream, TryStreamExt};
use parking_lot::Mutex;

use super::query_vector::evaluate_vector;
use super::search::{key_in, nearest, scan, Found, KnnQuery};
use super::session::run;
use crate::index::registry::IndexDefinition;
use crate::index::{Estimate, SearchOptions, SearchPlan};

/// Reads the k nearest qualifying rows of a table through its HNSW index.
pub struct HnswScanExec {
    table: KnnQuery,
    state: SessionState,
    projection: Option<Vec<usize>>,
    options: SearchOptions,
    /// `table_reads`: how many times the scan read the table (0 when the index answered).
    metrics: ExecutionPlanMetricsSet,
    /// How the last run searched and why, for `EXPLAIN ANALYZE`.
    chosen: Arc<Mutex<Option<String>>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl HnswScanExec {
    pub fn new(
        table: KnnQuery,
        state: SessionState,
        projection: Option<Vec<usize>>,
        options: SearchOptions,
        schema: SchemaRef,
    ) -> Self {
        Self {
            table,
            state,
            projection,
            options,
            metrics: ExecutionPlanMetricsSet::new(),
            chosen: Arc::default(),
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&schema)),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
            schema,
        }
    }
}

impl fmt::Debug for HnswScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HnswScanExec({:?})", self.table)
    }
}

impl DisplayAs for HnswScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.table.entry.definition;
        let o = &self.options;
        write!(
            f,
            "HnswIndexScan: index={}, table={}, column={}, {}, k={}, ef_search={}, \
             iterative_scan={}, max_scan_tuples={}",
            d.name,
            d.table,
            d.column,
            d.metric.opclass(),
            self.table.k,
            o.ef_search,
            o.iterative_scan,
            o.max_scan_tuples
        )?;
        if let Some(p) = &self.table.predicate {
            write!(f, ", filter={p}")?;
        }
        match (self.chosen.lock().as_deref(), &self.table.predicate) {
            (Some(chosen), _) => write!(f, ", search={chosen}")?,
            // Before it runs (plain EXPLAIN) the rows that pass are not counted yet: the rule.
            (None, Some(_)) => {
                let ef = o.ef_search.max(self.table.k).min(d.rows.max(1));
                let share = Estimate::exact_at_most(d.rows, ef, d.params.m);
                write!(
                    f,
                    ", search=when run: exact if at most {:.1}% of {} rows pass, else graph",
                    share * 100.0,
                    d.rows
                )?;
            }
            (None, None) => {}
        }
        Ok(())
    }
}

impl ExecutionPlan for HnswScanExec {
    fn name(&self) -> &str {
        "HnswIndexScan"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "HnswIndexScan has no children".to_string(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "HnswIndexScan has no partition {partition}"
            )));
        }
        let (table, state) = (self.table.clone(), self.state.clone());
        let (projection, options) = (self.projection.clone(), self.options);
        let reads = MetricBuilder::new(&self.metrics).counter("table_reads", partition);
        let chosen = Arc::clone(&self.chosen);
        let rows = async move {
            let batches = knn_rows(&table, &state, projection, &options, &reads, &chosen).await?;
            Ok::<_, DataFusionError>(stream::iter(batches.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream::once(rows).try_flatten(),
        )))
    }
}

async fn knn_rows(
    table: &KnnQuery,
    state: &SessionState,
    projection: Option<Vec<usize>>,
    options: &SearchOptions,
    reads: &Count,
    chosen: &Mutex<Option<String>>,
) -> Result<Vec<RecordBatch>> {
    let query = evaluate_vector(state, &table.query).await?;
    let (nearest, cut_short) = match query {
        Some(q) => {
            let found = nearest(state, table, &q, table.k, options, reads).await?;
            *chosen.lock() = Some(match found.estimate {
                Some(estimate) => format!("{} because {estimate}", found.plan),
                None => found.plan.to_string(),
            });
            // A filtered graph search short of k stopped before it saw every qualifying row
            // (`hnsw.iterative_scan = off`, or `hnsw.max_scan_tuples`): as pgvector's, its
            // rows are the answer. Every other search short of k saw them all.
            let cut_short = matches!(found.plan, SearchPlan::Filtered { .. });
            (found.rows, cut_short)
        }
        None => (Vec::new(), false),
    };
    let schema = match &projection {
        Some(p) => Arc::new(table.inner.schema().project(p)?),
        None => table.inner.schema(),
    };
    let found_all = nearest.len() >= table.k || cut_short;
    if found_all {
        if let Some(batch) = from_index(&nearest, &schema, &table.entry.definition)? {
            return Ok(vec![batch]);
        }
    }
    let mut plan = scan(table)?;
    // Short of k, rows without a vector may still qualify: let every qualifying row through.
    if found_all {
        let keys: Vec<String> = nearest.into_iter().map(|found| found.key).collect();
        let mut by_key = key_in(&table.entry.definition.key, &keys);
        // No filter runs above the scan: a row changed since its keys were read must still
        // pass.
        if let Some(p) = &table.predicate {
            by_key = by_key.and(p.clone());
        }
        plan = plan.filter(by_key)?;
    } else if let Some(p) = &table.predicate {
        plan = plan.filter(p.clone())?;
    }
    plan = plan.project(schema.fields().iter().map(|f| ident(f.name())))?;
    reads.add(1);
    run(state, plan.build()?).await
}

/// The found rows as the scan's batch, straight from the index without reading the table:
/// `None` unless the scan needs no column but the key and the vector column, and the index
/// holds every found vector exactly in the column's type (float4 elements).
fn from_index(
    found: &[Found],
    schema: &SchemaRef,
    definition: &IndexDefinition,
) -> Result<Option<RecordBatch>> {
    let mut columns: Vec<ArrayRef> = Vec::new();
    for field in schema.fields() {
        let column = if field.name() == &definition.key {
            let keys = StringArray::from_iter_values(found.iter().map(|f| f.key.as_str()));
            match cast(&keys, field.data_type()) {
                Ok(keys) => keys,
                Err(_) => return Ok(None),
            }
        } else if field.name() == &definition.column {
            let vectors: Option<Vec<&[f32]>> = found.iter().map(|f| f.vector.as_deref()).collect();
            match vectors.and_then(|v| vector_array(field.data_type(), &v)) {
                Some(array) => array,
                None => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        columns.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(found.len()));
    Ok(Some(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?))
}

/// `vectors` as an array of `data_type`, a list of float4; `None` for other types.
fn vector_array(data_type: &DataType, vectors: &[&[f32]]) -> Option<ArrayRef> {
    let values: ArrayRef = Arc::new(Float32Array::from_iter_values(
        vectors.iter().flat_map(|v| v.iter().copied()),
    ));
    let lengths = vectors.iter().map(|v| v.len());
    let array: ArrayRef = match data_type {
        DataType::List(item) if item.data_type() == &DataType::Float32 => Arc::new(
            ListArray::try_new(
                Arc::clone(item),
                OffsetBuffer::from_lengths(lengths),
                values,
                None,
            )
            .ok()?,
        ),
        DataType::LargeList(item) if item.data_type() == &DataType::Float32 => Arc::new(
            LargeListArray::try_new(
                Arc::clone(item),
                OffsetBuffer::from_lengths(lengths),
                values,
                None,
            )
            .ok()?,
        ),
        DataType::FixedSizeList(item, size) if item.data_type() == &DataType::Float32 => {
            Arc::new(FixedSizeListArray::try_new(Arc::clone(item), *size, values, None).ok()?)
        }
        _ => return None,
    };
    Some(array)
}
