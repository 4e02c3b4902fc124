//! Index kNN scans: the analyzer rule that finds `ORDER BY <distance>(column, <constant or
//! scalar subquery>) LIMIT k` over an indexed column, and the scan that answers it from the
//! index ([`HnswScanExec`], shown in `EXPLAIN`).
//!
//! The rule swaps the table under the query for a [`KnnTable`] and leaves the filter, sort and
//! limit in place, so the rows it lets through are re-ranked exactly. The scan returns the k
//! nearest rows that satisfy the query's `WHERE`. While the table's files are those of the
//! build (its [version](super::version)) and there is no `WHERE`, every indexed row exists as
//! it was; otherwise the scan reads which rows exist and qualify (the key column and the
//! predicate), compares rows added since the build exactly and skips rows gone since. It then
//! searches the graph with that filter. The k rows come from the index itself when the query
//! needs only the key and a float4 vector the index holds exactly, and from the table
//! otherwise; when fewer than k are found every qualifying row is let through, so the result
//! is never short. The metric `table_reads` (`EXPLAIN ANALYZE`) counts the table reads.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, LargeListArray, ListArray,
    RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::common::TableReference;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{
    lit, Expr, FetchType, LogicalPlan, LogicalPlanBuilder, SkipType, TableProviderFilterPushDown,
    TableScanBuilder, TableType,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::ident;
use futures::{stream, TryStreamExt};

use super::registry::{fingerprint, Entry, IndexDefinition, Indexes, Loaded};
use super::version::table_version;
use super::{Metric, Neighbor};
use crate::sql::settings;
use crate::sql::vector::Distance;

/// Rows added since a build, plus rows gone since, past which a scan rebuilds the index first.
const REBUILD_FRACTION: f64 = 0.2;

fn metric_of(distance: Distance) -> Option<Metric> {
    match distance {
        Distance::L2 => Some(Metric::L2),
        Distance::Cosine => Some(Metric::Cosine),
        Distance::NegativeInnerProduct => Some(Metric::InnerProduct),
        Distance::InnerProduct | Distance::L1 => None,
    }
}

/// Rewrites kNN queries on indexed columns into index scans.
#[derive(Debug)]
pub struct KnnRule {
    indexes: Arc<Indexes>,
}

impl KnnRule {
    pub fn new(indexes: Arc<Indexes>) -> Self {
        Self { indexes }
    }

    /// `plan` rewritten if it is `Limit` over the supported shape.
    fn rewrite_limit(&self, plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
        let LogicalPlan::Limit(limit) = plan else {
            return Ok(None);
        };
        let (FetchType::Literal(Some(k)), SkipType::Literal(skip)) =
            (limit.get_fetch_type()?, limit.get_skip_type()?)
        else {
            return Ok(None);
        };
        // A crafted LIMIT and OFFSET must not overflow; the index caps k by its rows.
        let k = k.saturating_add(skip);
        // Down through projections to the sort.
        let mut node = limit.input.as_ref();
        while let LogicalPlan::Projection(p) = node {
            node = p.input.as_ref();
        }
        let LogicalPlan::Sort(sort) = node else {
            return Ok(None);
        };
        let [order] = sort.expr.as_slice() else {
            return Ok(None);
        };
        if !order.asc {
            return Ok(None);
        }
        let Some((distance, column, query)) = distance_call(&order.expr) else {
            return Ok(None);
        };
        let Some(metric) = metric_of(distance) else {
            return Ok(None);
        };
        // Down through projections and filters to the table.
        let mut predicates = Vec::new();
        let mut node = sort.input.as_ref();
        loop {
            match node {
                LogicalPlan::Projection(p) => node = p.input.as_ref(),
                LogicalPlan::Filter(f) => {
                    predicates.push(f.predicate.clone());
                    node = f.input.as_ref();
                }
                _ => break,
            }
        }
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(None);
        };
        if column
            .relation
            .as_ref()
            .is_some_and(|r| !r.resolved_eq(&scan.table_name))
        {
            return Ok(None);
        }
        if predicates.iter().any(has_subquery) {
            return Ok(None);
        }
        let Some(entry) = self.indexes.find(&scan.table_name, &column.name, metric) else {
            return Ok(None);
        };
        let Ok(inner) = source_as_provider(&scan.source) else {
            return Ok(None);
        };
        if inner.is::<KnnTable>() {
            return Ok(None);
        }
        let knn = KnnTable {
            inner,
            table: scan.table_name.clone(),
            indexes: Arc::clone(&self.indexes),
            entry,
            query,
            k,
            predicate: predicates.into_iter().reduce(Expr::and),
        };
        let rewritten = plan.clone().transform_down(|node| match node {
            LogicalPlan::TableScan(s) if s.table_name == scan.table_name => {
                let replaced = TableScanBuilder::new(
                    s.table_name.clone(),
                    provider_as_source(Arc::new(knn.clone())),
                )
                .with_projection(s.projection.clone())
                .with_filters(s.filters.clone())
                .with_fetch(s.fetch)
                .build()?;
                Ok(Transformed::new(
                    LogicalPlan::TableScan(replaced),
                    true,
                    TreeNodeRecursion::Stop,
                ))
            }
            other => Ok(Transformed::no(other)),
        })?;
        Ok(Some(rewritten.data))
    }
}

impl AnalyzerRule for KnnRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        if self.indexes.list().is_empty() {
            return Ok(plan);
        }
        plan.transform_down_with_subqueries(|node| match self.rewrite_limit(&node)? {
            Some(rewritten) => Ok(Transformed::new(rewritten, true, TreeNodeRecursion::Jump)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "hnsw_knn"
    }
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })
    .unwrap_or(true)
}

/// `distance(column, query)` (either order), where `query` reads no column of the row.
fn distance_call(expr: &Expr) -> Option<(Distance, datafusion::common::Column, Expr)> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    let distance = Distance::of_function(call.func.name())?;
    let [a, b] = call.args.as_slice() else {
        return None;
    };
    let column_of = |e: &Expr| match strip_casts(e) {
        Expr::Column(c) => Some(c.clone()),
        _ => None,
    };
    let constant = |e: &Expr| {
        e.column_refs().is_empty()
            && !e
                .exists(|e| {
                    Ok(
                        matches!(e, Expr::ScalarSubquery(s) if !s.outer_ref_columns.is_empty())
                            || matches!(e, Expr::OuterReferenceColumn(..)),
                    )
                })
                .unwrap_or(true)
    };
    match (column_of(a), column_of(b)) {
        (Some(c), _) if constant(b) => Some((distance, c, b.clone())),
        (_, Some(c)) if constant(a) => Some((distance, c, a.clone())),
        _ => None,
    }
}

fn strip_casts(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        other => other,
    }
}

/// A table seen through one kNN query: its scan is a [`HnswScanExec`].
#[derive(Clone)]
pub struct KnnTable {
    pub(super) inner: Arc<dyn TableProvider>,
    pub(super) table: TableReference,
    pub(super) indexes: Arc<Indexes>,
    pub(super) entry: Arc<Entry>,
    pub(super) query: Expr,
    pub(super) k: usize,
    pub(super) predicate: Option<Expr>,
}

impl fmt::Debug for KnnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnnTable")
            .field("index", &self.entry.definition.name)
            .field("k", &self.k)
            .finish()
    }
}

#[async_trait]
impl TableProvider for KnnTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    /// The query's filters stay above the scan and are applied again to its rows.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = session_state(state)?.clone();
        let schema = match projection {
            Some(p) => Arc::new(self.inner.schema().project(p)?),
            None => self.inner.schema(),
        };
        let ef_search = settings::ef_search(state.config_options())?;
        Ok(Arc::new(HnswScanExec {
            table: self.clone(),
            state,
            projection: projection.cloned(),
            ef_search,
            metrics: ExecutionPlanMetricsSet::new(),
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&schema)),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Final,
                Boundedness::Bounded,
            )),
            schema,
        }))
    }
}

/// Reads the k nearest qualifying rows of a table through its HNSW index.
pub struct HnswScanExec {
    table: KnnTable,
    state: SessionState,
    projection: Option<Vec<usize>>,
    ef_search: usize,
    /// `table_reads`: how many times the scan read the table (0 when the index answered).
    metrics: ExecutionPlanMetricsSet,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for HnswScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HnswScanExec({:?})", self.table)
    }
}

impl DisplayAs for HnswScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.table.entry.definition;
        write!(
            f,
            "HnswIndexScan: index={}, table={}, column={}, {}, k={}, ef_search={}",
            d.name,
            d.table,
            d.column,
            d.metric.opclass(),
            self.table.k,
            self.ef_search
        )?;
        if let Some(p) = &self.table.predicate {
            write!(f, ", filter={p}")?;
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
        let (projection, ef) = (self.projection.clone(), self.ef_search);
        let reads = MetricBuilder::new(&self.metrics).counter("table_reads", partition);
        let rows = async move {
            let batches = knn_rows(&table, &state, projection, ef, &reads).await?;
            Ok::<_, DataFusionError>(stream::iter(batches.into_iter().map(Ok)))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream::once(rows).try_flatten(),
        )))
    }
}

/// The full session behind a scan's `Session`: index scans plan and run queries of their own.
pub fn session_state(state: &dyn Session) -> Result<&SessionState> {
    state
        .as_any()
        .downcast_ref::<SessionState>()
        .ok_or_else(|| DataFusionError::Internal("an index scan needs a SessionState".into()))
}

/// Runs `plan` to its batches.
async fn run(state: &SessionState, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    let physical = state.create_physical_plan(&plan).await?;
    collect(physical, state.task_ctx()).await
}

fn float4_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
}

/// The value of a constant vector expression (a literal, `'[1,2]'` or a scalar subquery);
/// `None` when it is NULL.
pub async fn evaluate_vector(state: &SessionState, expr: &Expr) -> Result<Option<Vec<f32>>> {
    let plan = LogicalPlanBuilder::empty(true)
        .project(vec![expr.clone().alias("query")])?
        .build()?;
    let batches = run(state, plan).await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let value = ScalarValue::try_from_array(batch.column(0), 0)?;
    vector_of(&value)
}

/// A scalar as a vector: a numeric list or pgvector's text form.
pub fn vector_of(value: &ScalarValue) -> Result<Option<Vec<f32>>> {
    if value.is_null() {
        return Ok(None);
    }
    if let ScalarValue::Utf8(Some(text))
    | ScalarValue::LargeUtf8(Some(text))
    | ScalarValue::Utf8View(Some(text)) = value
    {
        return crate::sql::vector::parse_vector(text).map(Some);
    }
    let array = cast(&value.to_array()?, &float4_list()).map_err(|_| {
        DataFusionError::Plan(format!(
            "a vector query must be a float4[] or '[1,2,3]', not {}",
            value.data_type()
        ))
    })?;
    let list = array.as_list::<i32>();
    let values = list.value(0);
    let values = values.as_primitive::<Float32Type>();
    if values.null_count() > 0 {
        return Err(DataFusionError::Execution(
            "array must not contain nulls".to_string(),
        ));
    }
    Ok(Some(values.values().to_vec()))
}

/// The table's scan, optionally filtered, as a plan builder.
fn scan(table: &KnnTable) -> Result<LogicalPlanBuilder> {
    LogicalPlanBuilder::scan(
        table.table.clone(),
        provider_as_source(Arc::clone(&table.inner)),
        None,
    )
}

/// `key IN (keys)`.
fn key_in(key: &str, keys: &[String]) -> Expr {
    ident(key).in_list(keys.iter().map(|k| lit(k.as_str())).collect(), false)
}

async fn knn_rows(
    table: &KnnTable,
    state: &SessionState,
    projection: Option<Vec<usize>>,
    ef_search: usize,
    reads: &Count,
) -> Result<Vec<RecordBatch>> {
    let query = evaluate_vector(state, &table.query).await?;
    let nearest = match query {
        Some(q) => nearest(state, table, &q, table.k, ef_search, reads).await?,
        None => Vec::new(),
    };
    let schema = match &projection {
        Some(p) => Arc::new(table.inner.schema().project(p)?),
        None => table.inner.schema(),
    };
    if nearest.len() >= table.k {
        if let Some(batch) = from_index(&nearest, &schema, &table.entry.definition)? {
            return Ok(vec![batch]);
        }
    }
    let mut plan = scan(table)?;
    // Short of k, rows without a vector may still qualify: let every qualifying row through.
    if nearest.len() >= table.k {
        let keys: Vec<String> = nearest.into_iter().map(|found| found.key).collect();
        plan = plan.filter(key_in(&table.entry.definition.key, &keys))?;
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

/// How the table's rows now stand against an index build.
struct Freshness {
    /// By row id of the build: whether the row still exists and passes the predicate; `None`
    /// when every row does.
    passing: Option<Vec<bool>>,
    /// Keys of rows added (or whose file changed) since the build that pass the predicate.
    added_passing: Vec<String>,
    /// Rows added, changed or gone since the build.
    changed: usize,
}

impl Freshness {
    /// From batches of `(keep, key)`, plus the file fingerprint when the build kept them.
    fn of(current: &[RecordBatch], loaded: &Loaded) -> Result<Freshness> {
        let mut passing = vec![false; loaded.keys.len()];
        let (mut present, mut changed, mut added_passing) = (0, 0, Vec::new());
        for batch in current {
            let keep = batch.column(0).as_boolean();
            let keys = cast(batch.column(1), &DataType::Utf8)?;
            let keys = keys.as_string::<i32>();
            let files = match batch.columns().get(2) {
                Some(files) => Some(cast(files, &DataType::Utf8)?),
                None => None,
            };
            let files = files.as_ref().map(|f| f.as_string::<i32>());
            for row in (0..batch.num_rows()).filter(|r| !keys.is_null(*r)) {
                let id = loaded.ids.get(keys.value(row)).map(|id| *id as usize);
                if let Some(id) = id {
                    present += 1;
                    let same_file = match (files, loaded.fingerprints.get(id)) {
                        (Some(files), Some(built)) => files.value(row) == built,
                        _ => true,
                    };
                    if same_file {
                        passing[id] = keep.value(row);
                        continue;
                    }
                }
                // Added, or its file changed: its indexed vector (if any) is left out.
                changed += 1;
                if keep.value(row) {
                    added_passing.push(keys.value(row).to_string());
                }
            }
        }
        let gone = loaded.keys.len().saturating_sub(present);
        Ok(Freshness {
            passing: (!passing.iter().all(|p| *p)).then_some(passing),
            added_passing,
            changed: gone + changed,
        })
    }

    /// The table is as it was built: every row exists and passes.
    fn unchanged() -> Freshness {
        Freshness {
            passing: None,
            added_passing: Vec::new(),
            changed: 0,
        }
    }

    /// Whether the build is worth redoing before answering.
    fn stale(&self, built_rows: usize) -> bool {
        self.changed > 0 && self.changed as f64 > REBUILD_FRACTION * built_rows.max(1) as f64
    }
}

/// A row a kNN search found.
pub struct Found {
    pub key: String,
    /// The metric's operator value.
    pub distance: f64,
    /// The row's vector as the index holds it, when that is its current value: the table has
    /// not changed since the build, and the metric keeps vectors as they are (not cosine).
    pub vector: Option<Vec<f32>>,
}

/// The k nearest qualifying rows with a vector, nearest first; fewer than k only when fewer
/// qualify.
///
/// When the table's version is the build's and there is no predicate, the table is not read:
/// every indexed row exists as it was. Otherwise its key column (and the predicate) is read to
/// learn which rows exist and qualify.
pub async fn nearest(
    state: &SessionState,
    table: &KnnTable,
    query: &[f32],
    k: usize,
    ef_search: usize,
    reads: &Count,
) -> Result<Vec<Found>> {
    let definition = &table.entry.definition;
    let key = definition.key.as_str();
    let version = table_version(state, table.inner.as_ref()).await?;
    let mut entry = Arc::clone(&table.entry);
    let mut loaded = table.indexes.loaded(&entry).await?;
    let unchanged = version.is_some() && version == entry.definition.version;
    let rows = if unchanged && table.predicate.is_none() {
        Freshness::unchanged()
    } else {
        // Which rows exist now, which of them pass the predicate, and which files changed.
        let keep = table.predicate.clone().unwrap_or(lit(true));
        let mut columns = vec![
            datafusion::functions::expr_fn::coalesce(vec![keep, lit(false)]).alias("keep"),
            ident(key).alias("key"),
        ];
        if entry.definition.fingerprinted {
            columns.extend(fingerprint(&table.inner.schema()).map(|f| f.alias("file")));
        }
        let plan = scan(table)?.project(columns)?.build()?;
        reads.add(1);
        let current = run(state, plan).await?;
        let mut rows = Freshness::of(&current, &loaded)?;
        if rows.stale(loaded.keys.len()) {
            reads.add(1);
            entry = table.indexes.build(state, entry.definition.clone()).await?;
            loaded = table.indexes.loaded(&entry).await?;
            rows = Freshness::of(&current, &loaded)?;
        }
        rows
    };
    let unchanged = version.is_some() && version == entry.definition.version;
    let passing = rows.passing;
    let passes = |id: u64| {
        passing
            .as_ref()
            .is_none_or(|p| p.get(id as usize).copied().unwrap_or(false))
    };
    let filter: Option<&dyn Fn(u64) -> bool> = passing.as_ref().map(|_| &passes as _);
    let found = loaded
        .index
        .search(query, k, ef_search, filter)
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let mut candidates: Vec<Found> = found
        .neighbors
        .iter()
        .map(|Neighbor { id, distance }| Found {
            key: loaded.keys[*id as usize].clone(),
            distance: *distance,
            vector: unchanged.then(|| loaded.index.vector(*id)).flatten(),
        })
        .collect();
    let added = rows.added_passing;
    if !added.is_empty() {
        let column = ident(&definition.column);
        let plan = scan(table)?
            .filter(key_in(key, &added).and(column.clone().is_not_null()))?
            .project(vec![ident(key), column])?
            .build()?;
        reads.add(1);
        for batch in run(state, plan).await? {
            let keys = cast(batch.column(0), &DataType::Utf8)?;
            let keys = keys.as_string::<i32>();
            let vectors = cast(batch.column(1), &float4_list())?;
            let vectors = vectors.as_list::<i32>();
            for row in 0..batch.num_rows() {
                let v = vectors.value(row);
                let v = v.as_primitive::<Float32Type>();
                let distance = definition
                    .metric
                    .distance(query, v.values())
                    .map_err(|e| DataFusionError::Execution(e.to_string()))?;
                candidates.push(Found {
                    key: keys.value(row).to_string(),
                    distance,
                    vector: None,
                });
            }
        }
        candidates.sort_by(|a, b| {
            a.distance
                .total_cmp(&b.distance)
                .then_with(|| a.key.cmp(&b.key))
        });
        candidates.truncate(k);
    }
    Ok(candidates)
}
