//! [`HnswIndex`]: an HNSW graph over `(row id, f32 vector)` pairs, searched in the order of
//! one of pgvector's metrics, with filters, dead rows and persistence.
//!
//! The graph ([`graph`]) measures squared L2, the negative dot product or L1 directly; cosine
//! indexes keep each vector scaled to norm 1 and use the dot product. Graph nodes are the rows
//! in ascending id order, so a row's node is found by binary search on the ids.

mod file;
mod graph;
mod section;
#[cfg(test)]
mod tests;
mod visited;

use super::IndexError;
use crate::sql::settings::{DEFAULT_MAX_SCAN_TUPLES, EF_SEARCH_MAX, MAX_SCAN_TUPLES_MAX};
use audiolake_udf::vector::{self, DimensionMismatch};
use graph::{Graph, Kernel, ScanStats, Scored};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::path::Path;
use std::sync::atomic::{self, AtomicU64};
use std::time::Instant;

const M_MIN: usize = 2;
const M_MAX: usize = 100;
const EF_CONSTRUCTION_MIN: usize = 4;
const EF_CONSTRUCTION_MAX: usize = 1000;
/// Rows whose filter result estimates the fraction of rows a filter passes.
const FILTER_SAMPLE: usize = 512;
/// The file [`HnswIndex::save`] writes in its folder.
const INDEX_FILE: &str = "index.hnsw";

/// The distance an index orders by, named after pgvector's operator classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// `vector_l2_ops`, operator `<->`.
    L2,
    /// `vector_cosine_ops`, operator `<=>`.
    Cosine,
    /// `vector_ip_ops`, operator `<#>` (negative inner product).
    InnerProduct,
    /// `vector_l1_ops`, operator `<+>` (taxicab distance).
    L1,
}

impl Metric {
    /// The metric of a pgvector operator class name (`vector_l2_ops`, `vector_cosine_ops`,
    /// `vector_ip_ops`, `vector_l1_ops`), case-insensitively.
    pub fn from_opclass(name: &str) -> Option<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "vector_l2_ops" => Some(Metric::L2),
            "vector_cosine_ops" => Some(Metric::Cosine),
            "vector_ip_ops" => Some(Metric::InnerProduct),
            "vector_l1_ops" => Some(Metric::L1),
            _ => None,
        }
    }

    /// pgvector's operator class name.
    pub fn opclass(self) -> &'static str {
        match self {
            Metric::L2 => "vector_l2_ops",
            Metric::Cosine => "vector_cosine_ops",
            Metric::InnerProduct => "vector_ip_ops",
            Metric::L1 => "vector_l1_ops",
        }
    }

    /// The value of the metric's operator (`<->`, `<=>`, `<#>`, `<+>`) on two vectors, as
    /// pgvector.
    pub fn distance(self, a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
        match self {
            Metric::L2 => vector::l2_distance(a, b),
            Metric::Cosine => vector::cosine_distance(a, b),
            Metric::InnerProduct => vector::negative_inner_product(a, b),
            Metric::L1 => vector::l1_distance(a, b),
        }
    }

    /// What the graph orders by: cosine is the negative dot product of vectors normalised at
    /// insert (1 - cos is its order).
    fn kernel(self) -> Kernel {
        match self {
            Metric::L2 => Kernel::L2Squared,
            Metric::Cosine | Metric::InnerProduct => Kernel::NegativeDot,
            Metric::L1 => Kernel::L1,
        }
    }

    /// The metric's operator value from the graph's distance.
    fn operator_value(self, d: f32) -> f64 {
        match self {
            Metric::L2 => f64::from(d).sqrt(),
            Metric::Cosine => 1.0 - f64::from(-d).clamp(-1.0, 1.0),
            Metric::InnerProduct | Metric::L1 => f64::from(d),
        }
    }
}

/// `WITH (m = ..., ef_construction = ...)` of `CREATE INDEX ... USING hnsw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexParams {
    /// Links per row and layer (twice as many on the bottom layer), 2 to 100; default 16.
    pub m: usize,
    /// Candidates considered while linking a row, 4 to 1000 and at least `2 * m`; default 64.
    pub ef_construction: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams {
            m: 16,
            ef_construction: 64,
        }
    }
}

impl IndexParams {
    /// Checks pgvector's limits.
    pub fn validate(&self) -> Result<(), IndexError> {
        if !(M_MIN..=M_MAX).contains(&self.m) {
            return Err(IndexError::Parameter(format!(
                "m must be between {M_MIN} and {M_MAX}, not {}",
                self.m
            )));
        }
        if !(EF_CONSTRUCTION_MIN..=EF_CONSTRUCTION_MAX).contains(&self.ef_construction) {
            return Err(IndexError::Parameter(format!(
                "ef_construction must be between {EF_CONSTRUCTION_MIN} and {EF_CONSTRUCTION_MAX}, not {}",
                self.ef_construction
            )));
        }
        if self.ef_construction < 2 * self.m {
            return Err(IndexError::Parameter(format!(
                "ef_construction must be greater than or equal to 2 * m ({}), not {}",
                2 * self.m,
                self.ef_construction
            )));
        }
        Ok(())
    }
}

/// What an index was built from and what its saved files weigh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub metric: Metric,
    pub params: IndexParams,
    /// Rows indexed, dead ones included.
    pub rows: usize,
    pub dims: usize,
    pub build_seconds: f64,
    /// Bytes of the index file, once saved or loaded.
    pub size_bytes: Option<u64>,
}

/// A row and its distance to the query (the metric's operator value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub id: u64,
    pub distance: f64,
}

/// pgvector 0.8's `hnsw.iterative_scan`: what a filtered graph search does once its first
/// `ef` candidates hold fewer than k rows that pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IterativeScan {
    /// Stop: fewer than k rows may come back.
    Off,
    /// Search on from where the last round stopped until k rows pass; a row found later may be
    /// nearer than one found before (the rows are re-sorted above the scan).
    #[default]
    RelaxedOrder,
    /// As `RelaxedOrder`, but a row nearer than one already handed on is dropped.
    StrictOrder,
}

impl IterativeScan {
    pub fn name(self) -> &'static str {
        match self {
            IterativeScan::Off => "off",
            IterativeScan::RelaxedOrder => "relaxed_order",
            IterativeScan::StrictOrder => "strict_order",
        }
    }
}

impl std::fmt::Display for IterativeScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for IterativeScan {
    type Err = IndexError;

    /// pgvector's names, case-insensitively.
    fn from_str(s: &str) -> Result<Self, IndexError> {
        [
            IterativeScan::Off,
            IterativeScan::RelaxedOrder,
            IterativeScan::StrictOrder,
        ]
        .into_iter()
        .find(|mode| mode.name().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| {
            IndexError::Parameter(format!(
                "hnsw.iterative_scan must be off, relaxed_order or strict_order, not \"{s}\""
            ))
        })
    }
}

/// How [`HnswIndex::search`] searches: pgvector's `hnsw.ef_search`, `hnsw.iterative_scan` and
/// `hnsw.max_scan_tuples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchOptions {
    /// Candidates kept per round, 1 to 1000; at least k are.
    pub ef_search: usize,
    pub iterative_scan: IterativeScan,
    /// An iterative scan measures about this many rows at most (checked when a round ends,
    /// so the first round is never cut short), 1 to 2^31 - 1.
    pub max_scan_tuples: usize,
}

impl SearchOptions {
    /// `ef_search` with pgvector's other defaults, iterative scans relaxed (audiolake's
    /// default, see [`IterativeScan`]).
    pub fn new(ef_search: usize) -> SearchOptions {
        SearchOptions {
            ef_search,
            iterative_scan: IterativeScan::default(),
            max_scan_tuples: DEFAULT_MAX_SCAN_TUPLES,
        }
    }

    fn validate(&self) -> Result<(), IndexError> {
        if !(1..=EF_SEARCH_MAX).contains(&self.ef_search) {
            return Err(IndexError::Parameter(format!(
                "ef_search must be between 1 and {EF_SEARCH_MAX}, not {}",
                self.ef_search
            )));
        }
        if !(1..=MAX_SCAN_TUPLES_MAX).contains(&self.max_scan_tuples) {
            return Err(IndexError::Parameter(format!(
                "max_scan_tuples must be between 1 and {MAX_SCAN_TUPLES_MAX}, not {}",
                self.max_scan_tuples
            )));
        }
        Ok(())
    }
}

/// Which rows a search may return.
#[derive(Clone, Copy)]
pub struct Filter<'a> {
    pub accepts: &'a dyn Fn(u64) -> bool,
    /// How many indexed rows it accepts, when the caller has counted them; otherwise a sample
    /// estimates it.
    pub passing: Option<usize>,
}

impl<'a> Filter<'a> {
    /// A filter whose rows are not counted.
    pub fn new(accepts: &'a dyn Fn(u64) -> bool) -> Filter<'a> {
        Filter {
            accepts,
            passing: None,
        }
    }
}

/// Why a filtered search chose the exact scan or the graph: the fraction `f` of the `rows`
/// that pass, and each way's cost in distances measured: `f·rows` for the exact scan, about
/// `ef·m/f` for the graph (a graph search measures about `ef·m` rows and a fraction `f` of
/// them pass). The cheaper one is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub passing_fraction: f64,
    /// Counted on every row rather than estimated on a sample.
    pub counted: bool,
    pub rows: usize,
    pub exact_cost: f64,
    pub graph_cost: f64,
}

impl Estimate {
    pub fn prefers_exact(&self) -> bool {
        self.exact_cost <= self.graph_cost
    }

    /// The fraction of `rows` passing at or below which a search of `ef` on a graph of `m`
    /// links chooses the exact scan: where `f·rows = ef·m/f`.
    pub fn exact_at_most(rows: usize, ef: usize, m: usize) -> f64 {
        ((ef * m) as f64 / rows.max(1) as f64).sqrt().min(1.0)
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.counted { "counted" } else { "sampled" };
        let (op, word) = match self.prefers_exact() {
            true => ("<=", "exact"),
            false => (">", "graph"),
        };
        write!(
            f,
            "{:.1}% of {} rows pass ({how}): {word} is cheaper, exact ~{:.0} {op} graph ~{:.0} distances",
            self.passing_fraction * 100.0,
            self.rows,
            self.exact_cost,
            self.graph_cost
        )
    }
}

/// How a search found its rows, for EXPLAIN and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPlan {
    /// A graph search without a filter, with the `ef` it finally used.
    Graph { ef: usize },
    /// A filtered graph search (see [`IterativeScan`]).
    Filtered {
        ef: usize,
        mode: IterativeScan,
        /// Rounds of `ef` candidates.
        rounds: usize,
        /// Rows whose distance was measured.
        visited: usize,
        /// It stopped at `max_scan_tuples`.
        bound_reached: bool,
    },
    /// Every live row that passes compared with the query.
    Exact,
}

impl std::fmt::Display for SearchPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SearchPlan::Graph { ef } => write!(f, "graph (ef {ef})"),
            SearchPlan::Filtered {
                ef,
                mode,
                rounds,
                visited,
                bound_reached,
            } => {
                write!(
                    f,
                    "graph (ef {ef}, iterative_scan {mode}: {rounds} round(s), {visited} rows measured"
                )?;
                if *bound_reached {
                    write!(f, ", stopped at max_scan_tuples")?;
                }
                write!(f, ")")
            }
            SearchPlan::Exact => write!(f, "exact"),
        }
    }
}

/// The nearest rows, nearest first, how they were found and, for a filtered search, why.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    pub neighbors: Vec<Neighbor>,
    pub plan: SearchPlan,
    pub estimate: Option<Estimate>,
}

/// NaN sorts last, and among equal distances the smaller id first.
fn cmp_neighbors(a: &Neighbor, b: &Neighbor) -> Ordering {
    a.distance
        .total_cmp(&b.distance)
        .then_with(|| a.id.cmp(&b.id))
}

/// Max-heap entry: the farthest of the k kept so far is on top.
struct Farthest(Neighbor);

impl PartialEq for Farthest {
    fn eq(&self, other: &Self) -> bool {
        cmp_neighbors(&self.0, &other.0) == Ordering::Equal
    }
}
impl Eq for Farthest {}
impl PartialOrd for Farthest {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Farthest {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_neighbors(&self.0, &other.0)
    }
}

/// An HNSW index over rows `(id, vector)` for one [`Metric`]: search, dead rows, save and load.
pub struct HnswIndex {
    graph: Graph,
    info: BuildInfo,
    /// The row id of each graph node, ascending.
    ids: Vec<u64>,
    /// Cosine only: rows with a zero vector, whose distance to anything is NaN; kept out of the
    /// graph and returned last, as `ORDER BY` puts NaN last.
    unindexed: Vec<u64>,
    dead: HashSet<u64>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("info", &self.info)
            .field("dead", &self.dead.len())
            .finish()
    }
}

/// Rows checked and laid out for the graph: ids ascending, vectors (scaled for cosine) in the
/// same order, and the cosine rows with a zero vector apart.
struct Prepared {
    ids: Vec<u64>,
    unindexed: Vec<u64>,
    vectors: Vec<f32>,
}

/// Checks `rows` (each of `dims` dimensions, finite, distinct ids from `first_id` up) and lays
/// them out for the graph.
fn prepare(
    metric: Metric,
    dims: usize,
    first_id: u64,
    mut rows: Vec<(u64, &[f32])>,
) -> Result<Prepared, IndexError> {
    if rows.len() >= u32::MAX as usize || u32::try_from(dims).is_err() {
        return Err(IndexError::Parameter(format!(
            "{} rows of {dims} dimensions: too many for one index",
            rows.len()
        )));
    }
    for (id, v) in &rows {
        if v.len() != dims {
            return Err(IndexError::Dimensions {
                id: *id,
                expected: dims,
                got: v.len(),
            });
        }
        if !v.iter().all(|x| x.is_finite()) {
            return Err(IndexError::NotFinite { id: *id });
        }
        if *id < first_id {
            return Err(IndexError::Parameter(format!(
                "row id {id} is not above the ids in the index (the next is {first_id})"
            )));
        }
        to_usize(*id)?;
    }
    rows.sort_unstable_by_key(|(id, _)| *id);
    if let Some(w) = rows.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(IndexError::DuplicateId(w[0].0));
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut unindexed = Vec::new();
    let mut vectors = Vec::with_capacity(rows.len() * dims);
    for (id, v) in &rows {
        if metric == Metric::Cosine {
            match normalised(v) {
                Some(unit) => vectors.extend(unit),
                None => {
                    unindexed.push(*id);
                    continue;
                }
            }
        } else {
            vectors.extend_from_slice(v);
        }
        ids.push(*id);
    }
    Ok(Prepared {
        ids,
        unindexed,
        vectors,
    })
}

/// `v` scaled to norm 1, `None` for a zero vector (whose cosine distance is NaN).
fn normalised(v: &[f32]) -> Option<impl Iterator<Item = f32> + '_> {
    let n = f64::from(vector::dot_f32(v, v)).sqrt();
    (n > 0.0).then(|| v.iter().map(move |x| (f64::from(*x) / n) as f32))
}

fn to_usize(id: u64) -> Result<usize, IndexError> {
    usize::try_from(id).map_err(|_| IndexError::Parameter(format!("row id {id} is too large")))
}

/// A fixed pseudo-random sequence (splitmix64), so that estimates do not alias with id
/// patterns such as `id % 10 = 0` and searches are repeatable.
fn sample_positions(n: usize, count: usize) -> impl Iterator<Item = usize> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..count).map(move |_| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    })
}

impl HnswIndex {
    /// Builds an index of `rows`, inserting on every core. All vectors must have the same
    /// number of dimensions (at least one), finite elements and distinct ids. Parameters are
    /// validated first ([`IndexParams::validate`]).
    pub fn build<'a>(
        metric: Metric,
        params: IndexParams,
        rows: impl IntoIterator<Item = (u64, &'a [f32])>,
    ) -> Result<HnswIndex, IndexError> {
        HnswIndex::build_cancellable(metric, params, rows, &|| false, &AtomicU64::new(0))
    }

    /// [`build`](Self::build) on the threads of the current rayon pool (run it inside
    /// `ThreadPool::install` to use fewer), stopping with [`IndexError::Cancelled`] soon after
    /// `cancelled` returns true (it is asked every few dozen inserts per thread). The rows
    /// inserted so far are added to `inserted` as the build goes.
    pub fn build_cancellable<'a>(
        metric: Metric,
        params: IndexParams,
        rows: impl IntoIterator<Item = (u64, &'a [f32])>,
        cancelled: &(dyn Fn() -> bool + Sync),
        inserted: &AtomicU64,
    ) -> Result<HnswIndex, IndexError> {
        params.validate()?;
        let started = Instant::now();
        let rows: Vec<(u64, &[f32])> = rows.into_iter().collect();
        let dims = rows.first().map_or(0, |(_, v)| v.len());
        if !rows.is_empty() && dims == 0 {
            return Err(IndexError::Parameter(
                "vectors must have at least 1 dimension".into(),
            ));
        }
        let Prepared {
            ids,
            unindexed,
            vectors,
        } = prepare(metric, dims, 0, rows)?;
        // Rows kept out of the graph are done already.
        inserted.fetch_add(unindexed.len() as u64, atomic::Ordering::Relaxed);
        let graph = Graph::build(
            metric.kernel(),
            dims,
            params.m,
            params.ef_construction,
            vectors,
            cancelled,
            inserted,
        )
        .map_err(|_| IndexError::Cancelled)?;
        Ok(HnswIndex {
            graph,
            info: BuildInfo {
                metric,
                params,
                rows: ids.len() + unindexed.len(),
                dims,
                build_seconds: started.elapsed().as_secs_f64(),
                size_bytes: None,
            },
            ids,
            unindexed,
            dead: HashSet::new(),
        })
    }

    /// Adds rows to a built index, linked as a build links them (on the threads of the current
    /// rayon pool). Their ids must be above every id already in it; the vectors are checked as
    /// a build checks them, and a refused batch leaves the index as it was.
    pub fn insert<'a>(
        &mut self,
        rows: impl IntoIterator<Item = (u64, &'a [f32])>,
    ) -> Result<(), IndexError> {
        let rows: Vec<(u64, &[f32])> = rows.into_iter().collect();
        if rows.is_empty() {
            return Ok(());
        }
        let dims = self.info.dims;
        if dims == 0 {
            return Err(IndexError::Parameter(
                "an index built over no rows takes no inserts; build it again".into(),
            ));
        }
        let above = match (self.ids.last(), self.unindexed.last()) {
            (None, None) => 0,
            (a, b) => a.max(b).map_or(0, |last| last + 1),
        };
        let Prepared {
            ids,
            unindexed,
            vectors,
        } = prepare(self.info.metric, dims, above, rows)?;
        if u32::try_from(self.ids.len() + ids.len()).is_err() {
            return Err(IndexError::Parameter(format!(
                "{} more rows: too many for one index",
                ids.len()
            )));
        }
        self.graph
            .extend(&vectors, self.info.params.ef_construction);
        self.info.rows += ids.len() + unindexed.len();
        self.ids.extend(ids);
        self.unindexed.extend(unindexed);
        Ok(())
    }

    /// Build parameters, size and timing.
    pub fn info(&self) -> &BuildInfo {
        &self.info
    }

    /// Whether `id` is one of the indexed rows (dead or not).
    pub fn contains(&self, id: u64) -> bool {
        self.ids.binary_search(&id).is_ok() || self.unindexed.binary_search(&id).is_ok()
    }

    /// The vector row `id` was indexed with, read from the graph; `None` under cosine (the graph
    /// holds it scaled to norm 1) and for rows not in the graph.
    pub fn vector(&self, id: u64) -> Option<Vec<f32>> {
        if self.info.metric == Metric::Cosine {
            return None;
        }
        let node = self.ids.binary_search(&id).ok()?;
        Some(self.graph.vector(node as u32).to_vec())
    }

    /// Marks rows as deleted or changed: searches skip them (they stay in the graph, as
    /// stepping stones), so rebuild when [`dead_fraction`](Self::dead_fraction) grows large.
    /// Ids not in the index are ignored.
    pub fn mark_dead(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if self.contains(id) {
                self.dead.insert(id);
            }
        }
    }

    /// Fraction of the indexed rows marked dead, 0 for an empty index.
    pub fn dead_fraction(&self) -> f64 {
        if self.info.rows == 0 {
            0.0
        } else {
            self.dead.len() as f64 / self.info.rows as f64
        }
    }

    /// The `k` live rows nearest to `query` that pass `filter`, nearest first, with the metric's
    /// exact distances.
    ///
    /// Without a filter or dead rows this is a graph search with `ef = max(ef_search, k)`,
    /// which returns `min(k, rows)` rows. Otherwise the rows that pass are counted (or
    /// estimated on a sample) and the cheaper of an exact scan and a graph search is chosen
    /// (see [`Estimate`]). The graph search hands rows on as pgvector's index scan does
    /// (see [`IterativeScan`]); when it has seen every row of the graph and still holds fewer
    /// than k, the exact scan answers. So every mode but `off` returns `min(k, rows passing)`
    /// rows unless `max_scan_tuples` stopped it.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        options: &SearchOptions,
        filter: Option<Filter<'_>>,
    ) -> Result<SearchResult, IndexError> {
        options.validate()?;
        self.check_query(query)?;
        let accepts = filter.map(|f| f.accepts);
        let passes = |id: u64| !self.dead.contains(&id) && accepts.is_none_or(|f| f(id));
        let Some(graph_query) = self.graph_query(query) else {
            // A zero query under cosine: every distance is NaN.
            return Ok(self.exact(None, k, &passes));
        };
        // k and ef come from the query: bound them by the rows before the graph allocates.
        let k = k.min(self.info.rows);
        if k == 0 {
            return Ok(SearchResult {
                neighbors: Vec::new(),
                plan: SearchPlan::Exact,
                estimate: None,
            });
        }
        let n = self.ids.len();
        let mut ef = options.ef_search.max(k).min(n.max(1));
        if filter.is_none() && self.dead.is_empty() {
            loop {
                let found = self.graph.search(&graph_query, ef);
                if found.len() >= k {
                    return Ok(SearchResult {
                        neighbors: self.neighbors(&found[..k]),
                        plan: SearchPlan::Graph { ef },
                        estimate: None,
                    });
                }
                // Short of k: rows kept out of the graph (cosine's zero vectors) are needed.
                if ef >= n {
                    return Ok(self.exact(Some(&graph_query), k, &passes));
                }
                ef = (ef * 4).min(n);
            }
        }
        let estimate = self.estimate(filter.and_then(|f| f.passing), ef, &passes);
        if estimate.prefers_exact() {
            return Ok(SearchResult {
                estimate: Some(estimate),
                ..self.exact(Some(&graph_query), k, &passes)
            });
        }
        let accept = |node: u32| passes(self.ids[node as usize]);
        let mode = options.iterative_scan;
        let (found, stats) =
            self.graph
                .scan(&graph_query, ef, k, &accept, mode, options.max_scan_tuples);
        let ScanStats {
            rounds,
            visited,
            bound_reached,
            exhausted,
        } = stats;
        if found.len() < k && exhausted {
            // Every row of the graph was seen: the exact scan costs no more and also brings the
            // rows kept out of the graph.
            return Ok(SearchResult {
                estimate: Some(estimate),
                ..self.exact(Some(&graph_query), k, &passes)
            });
        }
        Ok(SearchResult {
            neighbors: self.neighbors(&found),
            plan: SearchPlan::Filtered {
                ef,
                mode,
                rounds,
                visited,
                bound_reached,
            },
            estimate: Some(estimate),
        })
    }

    /// The exact answer to [`search`](Self::search): every live row that passes `filter` is
    /// compared with the query.
    pub fn exact_search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<Neighbor>, IndexError> {
        self.check_query(query)?;
        let passes = |id: u64| !self.dead.contains(&id) && filter.is_none_or(|f| f(id));
        let graph_query = self.graph_query(query);
        Ok(self.exact(graph_query.as_deref(), k, &passes).neighbors)
    }

    fn check_query(&self, query: &[f32]) -> Result<(), IndexError> {
        if query.len() != self.info.dims && self.info.rows > 0 {
            return Err(IndexError::QueryDimensions {
                expected: self.info.dims,
                got: query.len(),
            });
        }
        if !query.iter().all(|x| x.is_finite()) {
            return Err(IndexError::QueryNotFinite);
        }
        Ok(())
    }

    /// The query as the graph compares it; `None` for a zero query under cosine.
    fn graph_query(&self, query: &[f32]) -> Option<Vec<f32>> {
        if self.info.metric == Metric::Cosine {
            normalised(query).map(Iterator::collect)
        } else {
            Some(query.to_vec())
        }
    }

    /// Graph results as rows with the metric's distances, in [`cmp_neighbors`] order.
    fn neighbors(&self, found: &[Scored]) -> Vec<Neighbor> {
        let mut out: Vec<Neighbor> = found
            .iter()
            .map(|s| Neighbor {
                id: self.ids[s.node as usize],
                distance: self.info.metric.operator_value(s.dist),
            })
            .collect();
        out.sort_by(cmp_neighbors);
        out
    }

    /// The exact scan's and the graph's costs for a search of `ef` when `passing` rows pass
    /// (counted by the caller), or else the fraction counted on every row when there are few,
    /// on [`FILTER_SAMPLE`] of them otherwise.
    fn estimate(
        &self,
        passing: Option<usize>,
        ef: usize,
        passes: &dyn Fn(u64) -> bool,
    ) -> Estimate {
        let rows = self.info.rows;
        let n = self.ids.len();
        let (fraction, counted) = match passing {
            Some(p) => (p.min(rows) as f64 / rows.max(1) as f64, true),
            None if n <= FILTER_SAMPLE => {
                let passed = self.ids.iter().filter(|id| passes(**id)).count();
                (passed as f64 / n.max(1) as f64, true)
            }
            None => {
                let passed = sample_positions(n, FILTER_SAMPLE)
                    .filter(|i| passes(self.ids[*i]))
                    .count();
                (passed as f64 / FILTER_SAMPLE as f64, false)
            }
        };
        Estimate {
            passing_fraction: fraction,
            counted,
            rows,
            exact_cost: fraction * rows as f64,
            graph_cost: (ef * self.info.params.m) as f64 / fraction,
        }
    }

    /// Scans every row; `graph_query` is `None` when every distance is NaN (zero query under
    /// cosine).
    fn exact(
        &self,
        graph_query: Option<&[f32]>,
        k: usize,
        passes: &dyn Fn(u64) -> bool,
    ) -> SearchResult {
        // k comes from the query (LIMIT, similar()): never more rows than the index holds.
        let k = k.min(self.info.rows);
        let mut heap: BinaryHeap<Farthest> = BinaryHeap::with_capacity(k.saturating_add(1));
        let mut offer = |candidate: Neighbor| {
            if heap.len() < k {
                heap.push(Farthest(candidate));
            } else if let Some(top) = heap.peek() {
                if cmp_neighbors(&candidate, &top.0) == Ordering::Less {
                    heap.pop();
                    heap.push(Farthest(candidate));
                }
            }
        };
        if k > 0 {
            for (node, id) in self.ids.iter().enumerate() {
                if passes(*id) {
                    let distance = graph_query.map_or(f64::NAN, |q| {
                        let d = self.graph.kernel.eval(q, self.graph.vector(node as u32));
                        self.info.metric.operator_value(d)
                    });
                    offer(Neighbor { id: *id, distance });
                }
            }
            for id in &self.unindexed {
                if passes(*id) {
                    offer(Neighbor {
                        id: *id,
                        distance: f64::NAN,
                    });
                }
            }
        }
        let mut neighbors: Vec<Neighbor> = heap.into_iter().map(|f| f.0).collect();
        neighbors.sort_by(cmp_neighbors);
        SearchResult {
            neighbors,
            plan: SearchPlan::Exact,
            estimate: None,
        }
    }

    /// Saves the index into folder `dir` (created if missing) as one file, written under a
    /// temporary name and renamed when complete, so that a folder without it is an unfinished
    /// save that [`load`](Self::load) refuses. Returns the file's size.
    pub fn save(&self, dir: &Path) -> Result<u64, IndexError> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{INDEX_FILE}.tmp"));
        let size = self.write_file(&tmp)?;
        std::fs::rename(&tmp, dir.join(INDEX_FILE))?;
        Ok(size)
    }

    /// Writes the index to a new file at `path` (the bytes of [`to_bytes`](Self::to_bytes)),
    /// streamed through a small buffer and synced to disk. Returns the file's size.
    pub fn write_file(&self, path: &Path) -> Result<u64, IndexError> {
        let mut file = std::fs::File::create(path)?;
        let size = file::write(self, &mut file)?;
        file.sync_all()?;
        Ok(size)
    }

    /// Loads an index saved by [`save`](Self::save), memory-mapped (see [`open`](Self::open)).
    pub fn load(dir: &Path) -> Result<HnswIndex, IndexError> {
        match Self::open(&dir.join(INDEX_FILE)) {
            Err(IndexError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Err(corrupt(
                dir,
                format!("no {INDEX_FILE}: the save did not finish"),
            )),
            other => other,
        }
    }

    /// Opens the index file at `path` (the bytes of [`to_bytes`](Self::to_bytes)) by mapping it
    /// into memory: its links and row ids are read and checked, its vectors are read from disk
    /// as searches reach them, so a large index answers its first query without being read
    /// whole. The file must not be rewritten while the index is in use (new builds get new
    /// names); the index copies what it maps before it grows.
    pub fn open(path: &Path) -> Result<HnswIndex, IndexError> {
        let file = std::fs::File::open(path)?;
        file::map(&file).map_err(|reason| corrupt(path, reason))
    }

    /// Reads the vectors of the index file at `path` and checks their checksum, which
    /// [`open`](Self::open) leaves out so as not to read the whole file.
    pub fn verify_file(path: &Path) -> Result<(), IndexError> {
        let file = std::fs::File::open(path)?;
        file::verify_vectors(&file).map_err(|reason| corrupt(path, reason))
    }

    /// The index as one byte string (the file [`save`](Self::save) writes), for object storage.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let mut bytes = Vec::new();
        file::write(self, &mut bytes)?;
        Ok(bytes)
    }

    /// Loads an index from [`to_bytes`](Self::to_bytes)'s output. Bytes of an index from before
    /// this format give an error whose reason is [`OLD_FORMAT`](file::OLD_FORMAT).
    pub fn from_bytes(bytes: &[u8]) -> Result<HnswIndex, IndexError> {
        file::decode(bytes).map_err(|reason| corrupt(Path::new("<bytes>"), reason))
    }
}

fn corrupt(dir: &Path, reason: String) -> IndexError {
    IndexError::Corrupt {
        dir: dir.display().to_string(),
        reason,
    }
}
