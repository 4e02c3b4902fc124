//! One kNN query answered from an index build and the table as it is now: rows gone, added
//! or filtered out since the build are accounted for, and a stale build is redone first.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{lit, Expr, LogicalPlanBuilder};
use datafusion::physical_plan::metrics::Count;
use datafusion::prelude::ident;

use super::query_vector::float4_list;
use super::session::run;
use crate::index::registry::{fingerprint, Entry, Indexes, Loaded};
use crate::index::version::table_version;
use crate::index::{Estimate, Filter, Neighbor, SearchOptions, SearchPlan};

/// One kNN query on an indexed table: what a search needs.
#[derive(Clone)]
pub struct KnnQuery {
    /// The table as registered.
    pub inner: Arc<dyn TableProvider>,
    pub table: TableReference,
    pub indexes: Arc<Indexes>,
    pub entry: Arc<Entry>,
    /// The query vector's expression.
    pub query: Expr,
    pub k: usize,
    /// The query's `WHERE`, if any.
    pub predicate: Option<Expr>,
}

impl fmt::Debug for KnnQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnnQuery")
            .field("index", &self.entry.definition.name)
            .field("k", &self.k)
            .finish()
    }
}

/// Rows added since a build, plus rows gone since, past which a scan rebuilds the index first.
const REBUILD_FRACTION: f64 = 0.2;

/// The table's scan, optionally filtered, as a plan builder.
pub(super) fn scan(table: &KnnQuery) -> Result<LogicalPlanBuilder> {
    LogicalPlanBuilder::scan(
        table.table.clone(),
        provider_as_source(Arc::clone(&table.inner)),
        None,
    )
}

/// `key IN (keys)`; false for no keys.
pub(super) fn key_in(key: &str, keys: &[String]) -> Expr {
    if keys.is_empty() {
        return lit(false);
    }
    ident(key).in_list(keys.iter().map(|k| lit(k.as_str())).collect(), false)
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

/// What [`nearest`] found and how.
pub struct Nearest {
    /// Nearest first.
    pub rows: Vec<Found>,
    /// How the index searched, and why when the rows were filtered.
    pub plan: SearchPlan,
    pub estimate: Option<Estimate>,
}

/// The k nearest qualifying rows with a vector, nearest first; fewer than k only when fewer
/// qualify, or when `hnsw.iterative_scan` is `off` or `hnsw.max_scan_tuples` stopped the scan.
///
/// When the table's version is the build's and there is no predicate, the table is not read:
/// every indexed row exists as it was. Otherwise its key column (and the predicate) is read to
/// learn which rows exist and qualify.
pub async fn nearest(
    state: &SessionState,
    table: &KnnQuery,
    query: &[f32],
    k: usize,
    options: &SearchOptions,
    reads: &Count,
) -> Result<Nearest> {
    let definition = &table.entry.definition;
    let key = definition.key.as_str();
    let version = table_version(state, table.inner.as_ref()).await?;
    let (mut entry, mut loaded) = table
        .indexes
        .loaded_or_rebuilt(state, Arc::clone(&table.entry))
        .await?;
    if !Arc::ptr_eq(&entry, &table.entry) {
        reads.add(1);
    }
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
            (entry, loaded) = table.indexes.loaded_or_rebuilt(state, entry).await?;
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
    let filter = passing.as_ref().map(|p| Filter {
        accepts: &passes,
        passing: Some(p.iter().filter(|pass| **pass).count()),
    });
    let found = loaded
        .index
        .search(query, k, options, filter)
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
    Ok(Nearest {
        rows: candidates,
        plan: found.plan,
        estimate: found.estimate,
    })
}
