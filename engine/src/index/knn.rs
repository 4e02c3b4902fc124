//! Index kNN scans: the analyzer rule that finds `ORDER BY <distance>(column, <constant or
//! scalar subquery>) LIMIT k` over an indexed column, and the scan that answers it from the
//! index ([`HnswScanExec`], shown in `EXPLAIN`).
//!
//! The rule swaps the table under the query for a [`KnnTable`] and leaves the filter, sort and
//! limit in place, so the rows it lets through are re-ranked exactly. The scan returns the k
//! nearest rows that satisfy the query's `WHERE`: it reads which rows qualify (the key column
//! and the predicate), searches the graph with that filter, compares rows added since the
//! build exactly, and skips rows gone since. When fewer than k rows come back it lets every
//! qualifying row through, so the result is never short.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
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
    col, lit, Expr, FetchType, LogicalPlan, LogicalPlanBuilder, SkipType,
    TableProviderFilterPushDown, TableScanBuilder, TableType,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::ident;
use futures::{stream, TryStreamExt};

use super::registry::{Entry, Indexes, Loaded};
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
        let k = k + skip;
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
        let rows = async move {
            let batches = knn_rows(&table, &state, projection, ef).await?;
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
) -> Result<Vec<RecordBatch>> {
    let query = evaluate_vector(state, &table.query).await?;
    let nearest = match query {
        Some(q) => nearest(state, table, &q, table.k, ef_search).await?,
        None => Vec::new(),
    };
    let mut plan = scan(table)?;
    // Short of k, rows without a vector may still qualify: let every qualifying row through.
    match (nearest.len() >= table.k).then_some(nearest) {
        Some(found) => {
            let keys: Vec<String> = found.into_iter().map(|(key, _)| key).collect();
            plan = plan.filter(key_in(&table.entry.definition.key, &keys))?;
        }
        None => {
            if let Some(p) = &table.predicate {
                plan = plan.filter(p.clone())?;
            }
        }
    }
    if let Some(p) = projection {
        let schema = table.inner.schema();
        plan = plan.project(p.iter().map(|i| col(schema.field(*i).name())))?;
    }
    run(state, plan.build()?).await
}

/// How the table's rows now stand against an index build.
struct Freshness {
    /// By row id of the build: whether the row still exists and passes the predicate.
    passing: Vec<bool>,
    /// Keys of rows added since the build that pass the predicate.
    added_passing: Vec<String>,
    /// Rows added since the build plus rows of the build gone since.
    changed: usize,
}

impl Freshness {
    /// From batches of `(keep, key)`.
    fn of(current: &[RecordBatch], loaded: &Loaded) -> Result<Freshness> {
        let mut passing = vec![false; loaded.keys.len()];
        let (mut present, mut added, mut added_passing) = (0, 0, Vec::new());
        for batch in current {
            let keep = batch.column(0).as_boolean();
            let keys = cast(batch.column(1), &DataType::Utf8)?;
            let keys = keys.as_string::<i32>();
            for row in (0..batch.num_rows()).filter(|r| !keys.is_null(*r)) {
                match loaded.ids.get(keys.value(row)) {
                    Some(id) => {
                        present += 1;
                        passing[*id as usize] = keep.value(row);
                    }
                    None => {
                        added += 1;
                        if keep.value(row) {
                            added_passing.push(keys.value(row).to_string());
                        }
                    }
                }
            }
        }
        let gone = loaded.keys.len().saturating_sub(present);
        Ok(Freshness {
            passing,
            added_passing,
            changed: gone + added,
        })
    }

    /// Whether the build is worth redoing before answering.
    fn stale(&self, built_rows: usize) -> bool {
        self.changed > 0 && self.changed as f64 > REBUILD_FRACTION * built_rows.max(1) as f64
    }
}

/// The k nearest qualifying rows with a vector, as `(key, distance)`, nearest first; fewer
/// than k only when fewer qualify.
pub async fn nearest(
    state: &SessionState,
    table: &KnnTable,
    query: &[f32],
    k: usize,
    ef_search: usize,
) -> Result<Vec<(String, f64)>> {
    let definition = &table.entry.definition;
    let key = definition.key.as_str();
    // Which rows exist now, and which of them pass the predicate.
    let keep = table.predicate.clone().unwrap_or(lit(true));
    let plan = scan(table)?
        .project(vec![
            datafusion::functions::expr_fn::coalesce(vec![keep, lit(false)]).alias("keep"),
            ident(key).alias("key"),
        ])?
        .build()?;
    let current = run(state, plan).await?;
    let mut entry = Arc::clone(&table.entry);
    let mut loaded = table.indexes.loaded(&entry).await?;
    let mut rows = Freshness::of(&current, &loaded)?;
    if rows.stale(loaded.keys.len()) {
        entry = table.indexes.build(state, entry.definition.clone()).await?;
        loaded = table.indexes.loaded(&entry).await?;
        rows = Freshness::of(&current, &loaded)?;
    }
    let added = rows.added_passing;
    let passing = rows.passing;
    let everything_passes = passing.iter().all(|p| *p);
    let passes = |id: u64| passing.get(id as usize).copied().unwrap_or(false);
    let filter: Option<&dyn Fn(u64) -> bool> = if everything_passes {
        None
    } else {
        Some(&passes)
    };
    let found = loaded
        .index
        .search(query, k, ef_search, filter)
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let mut candidates: Vec<(String, f64)> = found
        .neighbors
        .iter()
        .map(|Neighbor { id, distance }| (loaded.keys[*id as usize].clone(), *distance))
        .collect();
    if !added.is_empty() {
        let column = ident(&definition.column);
        let plan = scan(table)?
            .filter(key_in(key, &added).and(column.clone().is_not_null()))?
            .project(vec![ident(key), column])?
            .build()?;
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
                candidates.push((keys.value(row).to_string(), distance));
            }
        }
        candidates.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        candidates.truncate(k);
    }
    Ok(candidates)
}
