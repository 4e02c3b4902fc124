//! One kNN query answered from an index build and the table as it is now: rows added since the
//! build are inserted into it first, rows gone or filtered out are skipped, and a build with
//! too many dead rows is redone first.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::provider_as_source;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{lit, Expr, LogicalPlanBuilder};
use datafusion::physical_plan::metrics::Count;
use datafusion::prelude::ident;

use super::session::run;
use crate::index::passing::Passing;
use crate::index::registry::{
    fingerprint, push_vector_rows, AddedRow, Additions, Entry, Indexes, Loaded, SharedLoaded,
};
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

/// Rows of a build gone (deleted, or replaced by a changed row) past which a scan rebuilds the
/// index first.
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
    /// The rows that still exist and pass the predicate; `None` when every row does.
    passing: Option<Arc<Passing>>,
    /// Keys of rows added (or whose file changed) since the build.
    added: Vec<String>,
    /// Live rows of the build that are gone.
    gone: Vec<String>,
    /// Rows of the build dead or gone.
    dead: usize,
}

impl Freshness {
    /// From batches of `(keep, key)`, plus the file fingerprint when the build kept them.
    fn of(current: &[RecordBatch], loaded: &Loaded) -> Result<Freshness> {
        let mut passing = Passing::new(loaded.keys.len());
        let mut present = vec![false; loaded.keys.len()];
        let mut added = Vec::new();
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
                    present[id] = true;
                    let same_file = match (files, loaded.fingerprints.get(id)) {
                        (Some(files), Some(built)) => files.value(row) == built,
                        _ => true,
                    };
                    if same_file {
                        if keep.value(row) {
                            passing.insert(id as u64);
                        }
                        continue;
                    }
                }
                // Added, or its file changed: its indexed vector (if any) is left out.
                added.push(keys.value(row).to_string());
            }
        }
        let gone: Vec<String> = loaded
            .ids
            .iter()
            .filter(|(_, id)| !present[**id as usize])
            .map(|(key, _)| key.clone())
            .collect();
        Ok(Freshness {
            passing: (!passing.all(loaded.keys.len())).then(|| Arc::new(passing)),
            added,
            dead: loaded.keys.len() - loaded.ids.len() + gone.len(),
            gone,
        })
    }

    /// The table is as it was built: every row exists, and those of `passing` pass (every
    /// row when `None`).
    fn unchanged(passing: Option<Arc<Passing>>) -> Freshness {
        Freshness {
            passing,
            added: Vec::new(),
            gone: Vec::new(),
            dead: 0,
        }
    }

    /// Whether the build is worth redoing before answering.
    fn stale(&self, rows: usize) -> bool {
        self.dead > 0 && self.dead as f64 > REBUILD_FRACTION * rows.max(1) as f64
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
/// When the table's version is the one the loaded rows are of and there is no predicate, the
/// table is not read: every indexed row exists as it was. Otherwise its key column (and the
/// predicate) is read to learn which rows exist and qualify; rows added or changed since are
/// inserted into the index, and rows gone marked dead, before the search.
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
    let (entry, mut loaded) = table
        .indexes
        .loaded_or_rebuilt(state, Arc::clone(&table.entry))
        .await?;
    if !Arc::ptr_eq(&entry, &table.entry) {
        reads.add(1);
    }
    let current_rows = |loaded: &Loaded| version.is_some() && version == loaded.version;
    let rows = if current_rows(&loaded.read()) {
        let passing = match &table.predicate {
            Some(predicate) => {
                Some(passing_rows(state, table, &loaded, predicate, &version, reads).await?)
            }
            None => None,
        };
        Freshness::unchanged(passing)
    } else {
        // Which rows exist now, which of them pass the predicate, and which files changed.
        let keep = table.predicate.clone().unwrap_or(lit(true));
        let mut columns = vec![
            datafusion::functions::expr_fn::coalesce(vec![keep, lit(false)]).alias("keep"),
            ident(key).alias("key"),
        ];
        let file = match entry.definition.fingerprinted {
            true => fingerprint(&table.inner.schema()),
            false => None,
        };
        columns.extend(file.clone().map(|f| f.alias("file")));
        let plan = scan(table)?.project(columns)?.build()?;
        reads.add(1);
        let current = run(state, plan).await?;
        let mut rows = Freshness::of(&current, &loaded.read())?;
        if !rows.added.is_empty() || !rows.gone.is_empty() {
            let added = added_rows(state, table, &rows.added, file).await?;
            reads.add(1);
            let additions = Additions {
                version: version.clone(),
                rows: added,
                gone: std::mem::take(&mut rows.gone),
            };
            table.indexes.add_rows(&entry, &loaded, additions).await?;
            rows = Freshness::of(&current, &loaded.read())?;
        }
        let indexed = loaded.read().keys.len();
        if rows.stale(indexed) {
            reads.add(1);
            let rebuilt = table.indexes.build(state, entry.definition.clone()).await?;
            (_, loaded) = table.indexes.loaded_or_rebuilt(state, rebuilt).await?;
            rows = Freshness::of(&current, &loaded.read())?;
        }
        rows
    };
    let loaded = loaded.read();
    let unchanged = current_rows(&loaded);
    let passing = rows.passing;
    let passes = |id: u64| passing.as_ref().is_none_or(|p| p.contains(id));
    let filter = passing.as_ref().map(|p| Filter {
        accepts: &passes,
        passing: Some(p.count()),
    });
    let found = loaded
        .index
        .search(query, k, options, filter)
        .map_err(|e| DataFusionError::Execution(e.to_string()))?;
    let rows = found
        .neighbors
        .iter()
        .map(|Neighbor { id, distance }| Found {
            key: loaded.keys[*id as usize].clone(),
            distance: *distance,
            vector: unchanged.then(|| loaded.index.vector(*id)).flatten(),
        })
        .collect();
    Ok(Nearest {
        rows,
        plan: found.plan,
        estimate: found.estimate,
    })
}

/// For a table as its loaded rows are: which of them pass `predicate`. A predicate asked
/// before since the rows were loaded is answered from the build's cache; otherwise only the
/// keys of the rows that pass are read (the table's scan evaluates the predicate).
async fn passing_rows(
    state: &SessionState,
    table: &KnnQuery,
    loaded: &SharedLoaded,
    predicate: &Expr,
    version: &Option<String>,
    reads: &Count,
) -> Result<Arc<Passing>> {
    if let Some(passing) = loaded.read().passing.get(predicate) {
        return Ok(passing);
    }
    let key = &table.entry.definition.key;
    let plan = scan(table)?
        .filter(predicate.clone())?
        .project(vec![ident(key)])?
        .build()?;
    reads.add(1);
    let batches = run(state, plan).await?;
    let loaded = loaded.read();
    let mut passing = Passing::new(loaded.keys.len());
    for batch in batches {
        let keys = cast(batch.column(0), &DataType::Utf8)?;
        let keys = keys.as_string::<i32>();
        // A key the build does not hold is a row with a NULL vector: in no index.
        let ids = keys.iter().flatten().filter_map(|k| loaded.ids.get(k));
        ids.for_each(|id| passing.insert(*id));
    }
    let passing = Arc::new(passing);
    // Unless another query added rows to the build meanwhile: these are an older version's.
    if loaded.version == *version {
        loaded.passing.put(predicate, Arc::clone(&passing));
    }
    Ok(passing)
}

/// The key, vector and (with `file`) file fingerprint of the rows with these keys and a
/// vector: rows whose vector is NULL are in no index.
async fn added_rows(
    state: &SessionState,
    table: &KnnQuery,
    keys: &[String],
    file: Option<Expr>,
) -> Result<Vec<AddedRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let definition = &table.entry.definition;
    let column = ident(&definition.column);
    let mut columns = vec![ident(&definition.key), column.clone()];
    columns.extend(file.map(|f| f.alias("file")));
    let plan = scan(table)?
        .filter(key_in(&definition.key, keys).and(column.is_not_null()))?
        .project(columns)?
        .build()?;
    let mut added = Vec::with_capacity(keys.len());
    for batch in run(state, plan).await? {
        push_vector_rows(&batch, definition, &mut added)?;
    }
    Ok(added)
}
