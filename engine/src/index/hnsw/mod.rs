//! [`HnswIndex`]: an HNSW graph (hnsw_rs) over `(row id, f32 vector)` pairs.
//!
//! The graph always measures Euclidean distance, on a stored form of each vector chosen so that
//! Euclidean order is the metric's order: the vector itself for L2, the vector scaled to norm 1
//! for cosine (|a - b|² = 2 - 2 cos), and for inner product the vector with one more element,
//! `sqrt(M² - |x|²)` where M is the largest norm at build time, searched with the query plus a
//! 0 (|q - x|² = |q|² + M² - 2 q·x). Results are re-ranked with the metric's exact distance.

use super::IndexError;
use crate::sql::settings::EF_SEARCH_MAX;
use audiolake_udf::vector::{self, DimensionMismatch};
use hnsw_rs::prelude::{AnnT, Distance, FilterT, Hnsw, HnswIo, Neighbour, PointId};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

// pgvector's limits for m, ef_construction and ef_search.
const M_MIN: usize = 2;
const M_MAX: usize = 100;
const EF_CONSTRUCTION_MIN: usize = 4;
const EF_CONSTRUCTION_MAX: usize = 1000;
/// hnsw_rs's own cap on layers.
const MAX_LAYERS: usize = 16;
/// Rows whose filter result estimates the fraction of rows a filter passes.
const FILTER_SAMPLE: usize = 512;

const META_FILE: &str = "meta.json";
const GRAPH_BASENAME: &str = "graph";
const FORMAT_VERSION: u32 = 1;
const BYTES_MAGIC: &[u8; 8] = b"ALHNSW1\0";

/// The distance an index orders by, named after pgvector's operator classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// `vector_l2_ops`, operator `<->`.
    L2,
    /// `vector_cosine_ops`, operator `<=>`.
    Cosine,
    /// `vector_ip_ops`, operator `<#>` (negative inner product).
    InnerProduct,
}

impl Metric {
    /// The metric of a pgvector operator class name (`vector_l2_ops`, `vector_cosine_ops`,
    /// `vector_ip_ops`), case-insensitively.
    pub fn from_opclass(name: &str) -> Option<Metric> {
        match name.to_ascii_lowercase().as_str() {
            "vector_l2_ops" => Some(Metric::L2),
            "vector_cosine_ops" => Some(Metric::Cosine),
            "vector_ip_ops" => Some(Metric::InnerProduct),
            _ => None,
        }
    }

    /// pgvector's operator class name.
    pub fn opclass(self) -> &'static str {
        match self {
            Metric::L2 => "vector_l2_ops",
            Metric::Cosine => "vector_cosine_ops",
            Metric::InnerProduct => "vector_ip_ops",
        }
    }

    /// The value of the metric's operator (`<->`, `<=>`, `<#>`) on two vectors, as pgvector.
    pub fn distance(self, a: &[f32], b: &[f32]) -> Result<f64, DimensionMismatch> {
        match self {
            Metric::L2 => vector::l2_distance(a, b),
            Metric::Cosine => vector::cosine_distance(a, b),
            Metric::InnerProduct => vector::negative_inner_product(a, b),
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
    /// Checks pgvector's limits. hnsw_rs exits the process for `m > 256`, so this runs before
    /// anything reaches it.
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
    /// Bytes of the graph and vector files, once saved or loaded.
    pub size_bytes: Option<u64>,
}

/// A row and its distance to the query (the metric's operator value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    pub id: u64,
    pub distance: f64,
}

/// How a search found its rows, for EXPLAIN and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchPlan {
    /// A graph search, with the `ef` it finally used (widened past `ef_search` when too few
    /// rows passed the filter).
    Graph { ef: usize },
    /// Every live row compared with the query.
    Exact,
}

/// The nearest rows, nearest first, and how they were found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    pub neighbors: Vec<Neighbor>,
    pub plan: SearchPlan,
}

/// Euclidean distance on stored forms; its type name is written in hnsw_rs's files and checked
/// when they are loaded.
#[derive(Default, Clone, Copy)]
struct StoredL2;

impl Distance<f32> for StoredL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        vector::l2_squared_f32(a, b).sqrt()
    }
}

type Graph = Hnsw<'static, f32, StoredL2>;

/// An HNSW index over rows `(id, vector)` for one [`Metric`]: search, dead rows, save and load.
pub struct HnswIndex {
    graph: Graph,
    info: BuildInfo,
    /// Ids in the graph, sorted.
    ids: Vec<u64>,
    /// The graph's point of each id in `ids`, at the same position.
    points: Vec<PointId>,
    /// Cosine only: rows with a zero vector, whose distance to anything is NaN; kept out of the
    /// graph and returned last, as `ORDER BY` puts NaN last.
    unindexed: Vec<u64>,
    /// Inner product only: the largest norm at build time (M of the stored form).
    max_norm: f32,
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

fn norm(v: &[f32]) -> f64 {
    f64::from(vector::dot_f32(v, v)).sqrt()
}

/// The stored form of a vector (see the module docs); `None` for a zero vector under cosine.
fn stored_form(metric: Metric, v: &[f32], max_norm: f32) -> Option<Vec<f32>> {
    match metric {
        Metric::L2 => Some(v.to_vec()),
        Metric::Cosine => {
            let n = norm(v);
            (n > 0.0).then(|| v.iter().map(|x| (f64::from(*x) / n) as f32).collect())
        }
        Metric::InnerProduct => {
            let extra = (f64::from(max_norm).powi(2) - norm(v).powi(2))
                .max(0.0)
                .sqrt();
            Some(v.iter().copied().chain([extra as f32]).collect())
        }
    }
}

/// The query's counterpart of [`stored_form`]; `None` for a zero query under cosine.
fn query_form(metric: Metric, q: &[f32]) -> Option<Vec<f32>> {
    match metric {
        Metric::InnerProduct => Some(q.iter().copied().chain([0.0]).collect()),
        _ => stored_form(metric, q, 0.0),
    }
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

/// The graph's ids, sorted, and the point of each.
fn indexed_points(graph: &Graph) -> (Vec<u64>, Vec<PointId>) {
    let mut points: Vec<(u64, PointId)> = graph
        .get_point_indexation()
        .into_iter()
        .map(|p| (p.get_origin_id() as u64, p.get_point_id()))
        .collect();
    points.sort_unstable_by_key(|(id, _)| *id);
    points.into_iter().unzip()
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
    /// Builds an index of `rows` with hnsw_rs, inserting in parallel. All vectors must have the
    /// same number of dimensions (at least one), finite elements and distinct ids. Parameters
    /// are validated first ([`IndexParams::validate`]).
    pub fn build<'a>(
        metric: Metric,
        params: IndexParams,
        rows: impl IntoIterator<Item = (u64, &'a [f32])>,
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
            to_usize(*id)?;
        }
        let mut sorted: Vec<u64> = rows.iter().map(|(id, _)| *id).collect();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(IndexError::DuplicateId(w[0]));
        }

        let max_norm = match metric {
            Metric::InnerProduct => rows.iter().map(|(_, v)| norm(v)).fold(0.0, f64::max) as f32,
            _ => 0.0,
        };
        // L2 inserts the caller's slices; the other metrics insert their stored forms.
        let mut unindexed = Vec::new();
        let mut owned: Vec<(u64, Vec<f32>)> = Vec::new();
        if metric != Metric::L2 {
            for (id, v) in &rows {
                match stored_form(metric, v, max_norm) {
                    Some(s) => owned.push((*id, s)),
                    None => unindexed.push(*id),
                }
            }
        }
        let batch: Vec<(&[f32], usize)> = if metric == Metric::L2 {
            rows.iter().map(|(id, v)| (*v, *id as usize)).collect()
        } else {
            owned
                .iter()
                .map(|(id, v)| (v.as_slice(), *id as usize))
                .collect()
        };
        let mut graph: Graph = Hnsw::new(
            params.m,
            batch.len().max(1),
            MAX_LAYERS,
            params.ef_construction,
            StoredL2,
        );
        graph.parallel_insert_slice(&batch);
        graph.set_searching_mode(true);
        // hnsw_rs cannot iterate a graph with no points.
        let (ids, points) = if batch.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            indexed_points(&graph)
        };
        unindexed.sort_unstable();

        Ok(HnswIndex {
            graph,
            info: BuildInfo {
                metric,
                params,
                rows: rows.len(),
                dims,
                build_seconds: started.elapsed().as_secs_f64(),
                size_bytes: None,
            },
            ids,
            points,
            unindexed,
            max_norm,
            dead: HashSet::new(),
        })
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
        let at = self.ids.binary_search(&id).ok()?;
        let mut stored = self
            .graph
            .get_point_indexation()
            .get_point_data(&self.points[at])?;
        stored.truncate(self.info.dims);
        Some(stored)
    }

    /// Marks rows as deleted or changed: searches skip them. hnsw_rs cannot remove points, so
    /// rebuild when [`dead_fraction`](Self::dead_fraction) grows large. Ids not in the index are
    /// ignored.
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
    /// exact distances: exactly `min(k, rows passing)` of them.
    ///
    /// Without a filter or dead rows this is a graph search with `ef = max(ef_search, k)`.
    /// Otherwise the fraction `f` of rows that pass is estimated on a sample; an exact scan
    /// costs about `f·n` distances and a filtered graph search about `ef·m / f`, so the scan is
    /// chosen when `f²·n ≤ ef·m` (below about 2.5% of a million rows at ef 40, m 16). A graph
    /// search that returns fewer than `k` rows is repeated with `ef` four times larger, and
    /// once `ef` reaches the row count the exact scan answers.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef_search: usize,
        filter: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<SearchResult, IndexError> {
        if !(1..=EF_SEARCH_MAX).contains(&ef_search) {
            return Err(IndexError::Parameter(format!(
                "ef_search must be between 1 and {EF_SEARCH_MAX}, not {ef_search}"
            )));
        }
        self.check_query(query)?;
        let passes = |id: u64| !self.dead.contains(&id) && filter.is_none_or(|f| f(id));
        let Some(stored_query) = query_form(self.info.metric, query) else {
            // A zero query under cosine: every distance is NaN.
            return Ok(self.exact(None, query, k, &passes));
        };
        // k and ef come from the query: bound them by the rows before the graph allocates.
        let k = k.min(self.info.rows);
        if k == 0 {
            return Ok(SearchResult {
                neighbors: Vec::new(),
                plan: SearchPlan::Exact,
            });
        }
        let n = self.ids.len();
        let filtered = filter.is_some() || !self.dead.is_empty();
        if filtered {
            let f = self.estimate_pass_fraction(&passes);
            let ef = ef_search.max(k) as f64;
            if f * f * n as f64 <= ef * self.info.params.m as f64 {
                return Ok(self.exact(Some(&stored_query), query, k, &passes));
            }
        }
        let graph_filter = |id: &usize| passes(*id as u64);
        let mut ef = ef_search.max(k).min(n.max(1));
        loop {
            let found = if filtered {
                self.graph
                    .search_filter(&stored_query, k, ef, Some(&graph_filter as &dyn FilterT))
            } else {
                self.graph.search(&stored_query, k, ef)
            };
            if found.len() >= k {
                return Ok(SearchResult {
                    neighbors: self.rerank(&stored_query, query, &found[..k]),
                    plan: SearchPlan::Graph { ef },
                });
            }
            if ef >= n {
                return Ok(self.exact(Some(&stored_query), query, k, &passes));
            }
            ef = (ef * 4).min(n);
        }
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
        let stored_query = query_form(self.info.metric, query);
        Ok(self
            .exact(stored_query.as_deref(), query, k, &passes)
            .neighbors)
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

    /// The metric's distance between the query and a stored form.
    fn stored_distance(&self, stored_query: &[f32], query: &[f32], stored: &[f32]) -> f64 {
        match self.info.metric {
            Metric::L2 => f64::from(vector::l2_squared_f32(query, stored)).sqrt(),
            // Both sides have norm 1: the distance is 1 - their dot product.
            Metric::Cosine => {
                1.0 - f64::from(vector::dot_f32(stored_query, stored)).clamp(-1.0, 1.0)
            }
            Metric::InnerProduct => -f64::from(vector::dot_f32(query, &stored[..self.info.dims])),
        }
    }

    fn rerank(&self, stored_query: &[f32], query: &[f32], found: &[Neighbour]) -> Vec<Neighbor> {
        let points = self.graph.get_point_indexation();
        let mut out: Vec<Neighbor> = found
            .iter()
            .map(|nb| {
                let distance = points
                    .get_point_data(&nb.p_id)
                    .map_or(f64::NAN, |v| self.stored_distance(stored_query, query, &v));
                Neighbor {
                    id: nb.d_id as u64,
                    distance,
                }
            })
            .collect();
        out.sort_by(cmp_neighbors);
        out
    }

    /// Fraction of the graph's rows that pass, counted on all rows when there are few, else on
    /// [`FILTER_SAMPLE`] of them.
    fn estimate_pass_fraction(&self, passes: &dyn Fn(u64) -> bool) -> f64 {
        let n = self.ids.len();
        if n == 0 {
            return 0.0;
        }
        let passed = if n <= FILTER_SAMPLE {
            self.ids.iter().filter(|id| passes(**id)).count()
        } else {
            sample_positions(n, FILTER_SAMPLE)
                .filter(|i| passes(self.ids[*i]))
                .count()
        };
        passed as f64 / n.min(FILTER_SAMPLE) as f64
    }

    /// Scans every row; `stored_query` is `None` when every distance is NaN (zero query under
    /// cosine).
    fn exact(
        &self,
        stored_query: Option<&[f32]>,
        query: &[f32],
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
        if k > 0 && !self.ids.is_empty() {
            for point in self.graph.get_point_indexation() {
                let id = point.get_origin_id() as u64;
                if passes(id) {
                    let distance = stored_query.map_or(f64::NAN, |sq| {
                        self.stored_distance(sq, query, point.get_v())
                    });
                    offer(Neighbor { id, distance });
                }
            }
        }
        for id in &self.unindexed {
            if k > 0 && passes(*id) {
                offer(Neighbor {
                    id: *id,
                    distance: f64::NAN,
                });
            }
        }
        let mut neighbors: Vec<Neighbor> = heap.into_iter().map(|f| f.0).collect();
        neighbors.sort_by(cmp_neighbors);
        SearchResult {
            neighbors,
            plan: SearchPlan::Exact,
        }
    }

    /// Saves the index into folder `dir` (created if missing; it should be new or empty): the
    /// graph and vectors in hnsw_rs's files, then `meta.json` last, so that a folder without it
    /// is an unfinished save that [`load`](Self::load) refuses. Publish the folder (or the
    /// [`to_bytes`](Self::to_bytes) object) only after this returns; an earlier index stays valid
    /// until then. Returns the size of the graph and vector files.
    pub fn save(&self, dir: &Path) -> Result<u64, IndexError> {
        std::fs::create_dir_all(dir)?;
        let basename = if self.ids.is_empty() {
            None
        } else {
            let name = self
                .graph
                .file_dump(dir, GRAPH_BASENAME)
                .map_err(|e| corrupt(dir, format!("hnsw_rs could not write its files: {e}")))?;
            Some(name)
        };
        let size_bytes = match &basename {
            Some(b) => graph_files(b)
                .iter()
                .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()))
                .sum::<std::io::Result<u64>>()?,
            None => 0,
        };
        let mut dead: Vec<u64> = self.dead.iter().copied().collect();
        dead.sort_unstable();
        let meta = Meta {
            format: FORMAT_VERSION,
            info: BuildInfo {
                size_bytes: Some(size_bytes),
                ..self.info.clone()
            },
            graph_basename: basename,
            max_norm: self.max_norm,
            unindexed: self.unindexed.clone(),
            dead,
        };
        let tmp = dir.join(format!("{META_FILE}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&meta).expect("meta serialises"))?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(META_FILE))?;
        Ok(size_bytes)
    }

    /// Loads an index saved by [`save`](Self::save), reading every file into memory.
    pub fn load(dir: &Path) -> Result<HnswIndex, IndexError> {
        let meta_bytes = match std::fs::read(dir.join(META_FILE)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(corrupt(dir, "no meta.json: the save did not finish".into()))
            }
            Err(e) => return Err(e.into()),
        };
        let meta: Meta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| corrupt(dir, format!("meta.json: {e}")))?;
        if meta.format != FORMAT_VERSION {
            return Err(corrupt(
                dir,
                format!("format {} (this build reads {FORMAT_VERSION})", meta.format),
            ));
        }
        meta.info.params.validate()?;
        let graph: Graph = match &meta.graph_basename {
            Some(basename) => load_graph(dir, basename)?,
            None => Hnsw::new(
                meta.info.params.m,
                1,
                MAX_LAYERS,
                meta.info.params.ef_construction,
                StoredL2,
            ),
        };
        let (ids, points) = if meta.graph_basename.is_some() {
            indexed_points(&graph)
        } else {
            (Vec::new(), Vec::new())
        };
        if ids.len() + meta.unindexed.len() != meta.info.rows {
            return Err(corrupt(
                dir,
                format!(
                    "the graph has {} rows, meta.json says {}",
                    ids.len() + meta.unindexed.len(),
                    meta.info.rows
                ),
            ));
        }
        Ok(HnswIndex {
            graph,
            info: meta.info,
            ids,
            points,
            unindexed: meta.unindexed,
            max_norm: meta.max_norm,
            dead: meta.dead.into_iter().collect(),
        })
    }

    /// The saved index as one byte string (the files of [`save`](Self::save), concatenated with
    /// their names and lengths), for object storage.
    pub fn to_bytes(&self) -> Result<Vec<u8>, IndexError> {
        let dir = tempfile::tempdir()?;
        self.save(dir.path())?;
        let mut names: Vec<String> = std::fs::read_dir(dir.path())?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        let mut out = BYTES_MAGIC.to_vec();
        for name in names {
            let data = std::fs::read(dir.path().join(&name))?;
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// Loads an index from [`to_bytes`](Self::to_bytes)'s output.
    pub fn from_bytes(bytes: &[u8]) -> Result<HnswIndex, IndexError> {
        let bad = |reason: &str| corrupt(Path::new("<bytes>"), reason.to_string());
        let mut rest = bytes
            .strip_prefix(BYTES_MAGIC.as_slice())
            .ok_or_else(|| bad("not an audiolake HNSW index"))?;
        let dir = tempfile::tempdir()?;
        while !rest.is_empty() {
            let name_len = u32::from_le_bytes(split(&mut rest, 4)?.try_into().unwrap()) as usize;
            let name = std::str::from_utf8(split(&mut rest, name_len)?)
                .map_err(|_| bad("file name"))?
                .to_string();
            if name.contains('/') || name.contains("..") {
                return Err(bad("file name"));
            }
            let data_len = u64::from_le_bytes(split(&mut rest, 8)?.try_into().unwrap());
            let data = split(&mut rest, usize::try_from(data_len).unwrap_or(usize::MAX))?;
            std::fs::write(dir.path().join(name), data)?;
        }
        HnswIndex::load(dir.path())
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    info: BuildInfo,
    graph_basename: Option<String>,
    max_norm: f32,
    unindexed: Vec<u64>,
    dead: Vec<u64>,
}

/// The first `n` bytes of `rest`, which moves past them.
fn split<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], IndexError> {
    if rest.len() < n {
        return Err(corrupt(Path::new("<bytes>"), "truncated".into()));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn corrupt(dir: &Path, reason: String) -> IndexError {
    IndexError::Corrupt {
        dir: dir.display().to_string(),
        reason,
    }
}

fn graph_files(basename: &str) -> [String; 2] {
    [
        format!("{basename}.hnsw.graph"),
        format!("{basename}.hnsw.data"),
    ]
}

/// Reads hnsw_rs's files. Its loader borrows the `HnswIo` for the graph's lifetime (for memory
/// maps, which we do not use), so the small `HnswIo` is leaked to give the graph `'static`. It
/// also asserts on malformed files, so panics become errors.
fn load_graph(dir: &Path, basename: &str) -> Result<Graph, IndexError> {
    for f in graph_files(basename) {
        if !dir.join(&f).is_file() {
            return Err(corrupt(dir, format!("{f} is missing")));
        }
    }
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        // Moving the reference in makes the closure FnOnce, so the graph may keep it.
        let io = io;
        io.load_hnsw::<f32, StoredL2>()
    }));
    match loaded {
        Ok(Ok(mut graph)) => {
            graph.set_searching_mode(true);
            Ok(graph)
        }
        Ok(Err(e)) => Err(corrupt(
            dir,
            format!("hnsw_rs could not read its files: {e}"),
        )),
        Err(_) => Err(corrupt(dir, "hnsw_rs found its files malformed".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic clustered data: `clusters` centres in [-1, 1]^dims, points spread around
    /// them with a standard deviation of 0.1.
    fn clustered(n: usize, dims: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let centres: Vec<Vec<f64>> = (0..clusters)
            .map(|_| (0..dims).map(|_| next() * 2.0 - 1.0).collect())
            .collect();
        (0..n)
            .map(|i| {
                centres[i % clusters]
                    .iter()
                    .map(|c| {
                        // Sum of uniforms: roughly normal, mean 0, sd 0.1.
                        let noise: f64 = (0..12).map(|_| next()).sum::<f64>() - 6.0;
                        (c + 0.1 * noise) as f32
                    })
                    .collect()
            })
            .collect()
    }

    fn build(metric: Metric, data: &[Vec<f32>], params: IndexParams) -> HnswIndex {
        HnswIndex::build(
            metric,
            params,
            data.iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice())),
        )
        .unwrap()
    }

    fn brute_force(
        metric: Metric,
        data: &[Vec<f32>],
        q: &[f32],
        k: usize,
        keep: impl Fn(u64) -> bool,
    ) -> Vec<Neighbor> {
        let mut all: Vec<Neighbor> = data
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i as u64))
            .map(|(i, v)| Neighbor {
                id: i as u64,
                distance: metric.distance(q, v).unwrap(),
            })
            .collect();
        all.sort_by(cmp_neighbors);
        all.truncate(k);
        all
    }

    fn ids(n: &[Neighbor]) -> Vec<u64> {
        n.iter().map(|x| x.id).collect()
    }

    const N: usize = 3000;
    const DIMS: usize = 24;

    #[test]
    fn high_ef_equals_brute_force_for_every_metric() {
        let data = clustered(N, DIMS, 30, 7);
        let queries = clustered(20, DIMS, 30, 99);
        for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
            let index = build(metric, &data, IndexParams::default());
            let (mut hits, mut total) = (0, 0);
            for q in &queries {
                let got = index.search(q, 10, 400, None).unwrap();
                assert!(matches!(got.plan, SearchPlan::Graph { .. }));
                let want = brute_force(metric, &data, q, 10, |_| true);
                assert_eq!(got.neighbors.len(), 10);
                // Distances are the metric's, in order.
                for nb in &got.neighbors {
                    let d = metric.distance(q, &data[nb.id as usize]).unwrap();
                    assert!((nb.distance - d).abs() < 1e-5, "{metric:?}: {nb:?} vs {d}");
                }
                assert!(got
                    .neighbors
                    .windows(2)
                    .all(|w| w[0].distance <= w[1].distance));
                let want_ids: HashSet<u64> = ids(&want).into_iter().collect();
                hits += got
                    .neighbors
                    .iter()
                    .filter(|n| want_ids.contains(&n.id))
                    .count();
                total += 10;
            }
            // At ef 400 over 3000 clustered rows the graph finds the true neighbours; allow
            // one miss in 200 for ties at float rounding.
            let recall = hits as f64 / total as f64;
            assert!(recall >= 0.995, "{metric:?}: recall {recall}");
            // And the exact helper is exactly brute force.
            let q = &queries[0];
            assert_eq!(
                ids(&index.exact_search(q, 10, None).unwrap()),
                ids(&brute_force(metric, &data, q, 10, |_| true))
            );
        }
    }

    #[test]
    fn filtered_search_returns_k_whenever_k_qualify() {
        let data = clustered(N, DIMS, 30, 11);
        let index = build(Metric::L2, &data, IndexParams::default());
        let q = &clustered(1, DIMS, 30, 5)[0];

        // Most rows pass: a graph search.
        let most = |id: u64| !id.is_multiple_of(5);
        let got = index.search(q, 10, 40, Some(&most)).unwrap();
        assert!(
            matches!(got.plan, SearchPlan::Graph { .. }),
            "{:?}",
            got.plan
        );
        assert_eq!(got.neighbors.len(), 10);
        assert!(got.neighbors.iter().all(|n| most(n.id)));

        // Five rows pass, far from the query's cluster or not: all five come back, exactly.
        let five = |id: u64| [3, 700, 1501, 2222, 2999].contains(&id);
        let got = index.search(q, 10, 40, Some(&five)).unwrap();
        assert_eq!(got.plan, SearchPlan::Exact);
        assert_eq!(
            ids(&got.neighbors),
            ids(&brute_force(Metric::L2, &data, q, 10, five))
        );
        assert_eq!(got.neighbors.len(), 5);

        // k of them when k < 5.
        let got = index.search(q, 3, 40, Some(&five)).unwrap();
        assert_eq!(
            ids(&got.neighbors),
            ids(&brute_force(Metric::L2, &data, q, 3, five))
        );

        // Nothing passes: nothing comes back.
        let none = |_: u64| false;
        assert!(index
            .search(q, 10, 40, Some(&none))
            .unwrap()
            .neighbors
            .is_empty());

        // k larger than the table: every row.
        let small = build(Metric::L2, &data[..7], IndexParams::default());
        assert_eq!(small.search(q, 10, 40, None).unwrap().neighbors.len(), 7);
        // A crafted k (similar(..., 10000000000), LIMIT) allocates for the rows, not for k.
        let huge = 10_000_000_000;
        assert_eq!(small.search(q, huge, 40, None).unwrap().neighbors.len(), 7);
        let even = |id: u64| id.is_multiple_of(2);
        assert_eq!(
            small
                .search(q, huge, 40, Some(&even))
                .unwrap()
                .neighbors
                .len(),
            4
        );
        assert_eq!(small.exact_search(q, usize::MAX, None).unwrap().len(), 7);
    }

    #[test]
    fn dead_rows_are_skipped_and_counted() {
        let data = clustered(N, DIMS, 30, 13);
        let mut index = build(Metric::Cosine, &data, IndexParams::default());
        let q = &data[42];
        let before = index.search(q, 5, 100, None).unwrap();
        assert_eq!(before.neighbors[0].id, 42);
        index.mark_dead([42, 1_000_000]);
        assert_eq!(index.dead_fraction(), 1.0 / N as f64);
        let after = index.search(q, 5, 100, None).unwrap();
        assert_eq!(after.neighbors.len(), 5);
        assert!(after.neighbors.iter().all(|n| n.id != 42));
        // Dead rows hide from the exact path too.
        let want = brute_force(Metric::Cosine, &data, q, 5, |id| id != 42);
        assert_eq!(ids(&index.exact_search(q, 5, None).unwrap()), ids(&want));
    }

    #[test]
    fn zero_vectors_under_cosine_come_last_with_nan() {
        let mut data = clustered(50, 4, 5, 17);
        data[10] = vec![0.0; 4];
        let index = build(Metric::Cosine, &data, IndexParams::default());
        let all = index.search(&data[0], 60, 40, None).unwrap().neighbors;
        assert_eq!(all.len(), 50);
        assert_eq!(all[49].id, 10);
        assert!(all[49].distance.is_nan());
        // A zero query: every distance is NaN, rows still come back.
        let zero = index.search(&[0.0; 4], 3, 40, None).unwrap();
        assert_eq!(ids(&zero.neighbors), [0, 1, 2]);
        assert!(zero.neighbors.iter().all(|n| n.distance.is_nan()));
    }

    #[test]
    fn save_and_load_give_the_same_answers() {
        let data = clustered(N, DIMS, 30, 19);
        let queries = clustered(10, DIMS, 30, 23);
        for metric in [Metric::L2, Metric::InnerProduct] {
            let mut index = build(
                metric,
                &data,
                IndexParams {
                    m: 8,
                    ef_construction: 32,
                },
            );
            index.mark_dead([5, 6]);
            let dir = tempfile::tempdir().unwrap();
            let size = index.save(&dir.path().join("idx")).unwrap();
            assert!(size > (N * DIMS * 4) as u64, "size {size}");
            let loaded = HnswIndex::load(&dir.path().join("idx")).unwrap();
            let from_bytes = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
            assert_eq!(loaded.info().rows, N);
            assert_eq!(loaded.info().size_bytes, Some(size));
            assert_eq!(loaded.dead_fraction(), 2.0 / N as f64);
            let odd = |id: u64| id % 2 == 1;
            for q in &queries {
                let want = index.search(q, 10, 40, None).unwrap();
                assert_eq!(loaded.search(q, 10, 40, None).unwrap(), want);
                assert_eq!(from_bytes.search(q, 10, 40, None).unwrap(), want);
                assert_eq!(
                    loaded.search(q, 10, 40, Some(&odd)).unwrap(),
                    index.search(q, 10, 40, Some(&odd)).unwrap()
                );
            }
        }
    }

    #[test]
    fn vectors_are_read_back_as_indexed() {
        let data = clustered(200, 16, 5, 29);
        let params = IndexParams {
            m: 8,
            ef_construction: 32,
        };
        for metric in [Metric::L2, Metric::InnerProduct] {
            let index = build(metric, &data, params);
            let loaded = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
            for id in [0u64, 17, 199] {
                assert_eq!(index.vector(id).as_ref(), Some(&data[id as usize]));
                assert_eq!(loaded.vector(id).as_ref(), Some(&data[id as usize]));
            }
            assert_eq!(index.vector(200), None);
        }
        assert_eq!(build(Metric::Cosine, &data, params).vector(0), None);
    }

    #[test]
    fn unfinished_or_damaged_saves_are_errors() {
        let data = clustered(200, 8, 4, 29);
        let index = build(Metric::L2, &data, IndexParams::default());
        let dir = tempfile::tempdir().unwrap();
        index.save(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(META_FILE)).unwrap();
        let err = HnswIndex::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(HnswIndex::from_bytes(b"nonsense").is_err());
        let mut bytes = index.to_bytes().unwrap();
        bytes.truncate(bytes.len() / 2);
        assert!(HnswIndex::from_bytes(&bytes).is_err());
    }

    #[test]
    fn parameters_are_checked_before_hnsw_rs() {
        let data = clustered(10, 4, 2, 31);
        let rows = || {
            data.iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice()))
        };
        let err = |p: IndexParams| {
            HnswIndex::build(Metric::L2, p, rows())
                .unwrap_err()
                .to_string()
        };
        // hnsw_rs would exit the process for m = 300.
        assert_eq!(
            err(IndexParams {
                m: 300,
                ef_construction: 1000
            }),
            "invalid index parameter: m must be between 2 and 100, not 300"
        );
        assert!(err(IndexParams {
            m: 1,
            ef_construction: 64
        })
        .contains("m must be"));
        assert!(err(IndexParams {
            m: 16,
            ef_construction: 2000
        })
        .contains("ef_construction"));
        assert!(err(IndexParams {
            m: 16,
            ef_construction: 20
        })
        .contains("2 * m (32)"));

        let bad_dims = [(0u64, &[1.0f32, 2.0][..]), (1, &[1.0][..])];
        assert!(matches!(
            HnswIndex::build(Metric::L2, IndexParams::default(), bad_dims),
            Err(IndexError::Dimensions {
                id: 1,
                expected: 2,
                got: 1
            })
        ));
        let nan = [(4u64, &[f32::NAN][..])];
        assert!(matches!(
            HnswIndex::build(Metric::L2, IndexParams::default(), nan),
            Err(IndexError::NotFinite { id: 4 })
        ));
        let dup = [(4u64, &[1.0f32][..]), (4, &[2.0][..])];
        assert!(matches!(
            HnswIndex::build(Metric::L2, IndexParams::default(), dup),
            Err(IndexError::DuplicateId(4))
        ));
        let index = HnswIndex::build(Metric::L2, IndexParams::default(), rows()).unwrap();
        assert!(matches!(
            index.search(&[1.0], 3, 40, None),
            Err(IndexError::QueryDimensions {
                expected: 4,
                got: 1
            })
        ));
        assert!(index.search(&data[0], 3, 0, None).is_err());
        assert!(index.search(&data[0], 3, 1001, None).is_err());
    }

    #[test]
    fn empty_index_answers_nothing_and_round_trips() {
        let index =
            HnswIndex::build(Metric::L2, IndexParams::default(), std::iter::empty()).unwrap();
        assert!(index
            .search(&[1.0, 2.0], 5, 40, None)
            .unwrap()
            .neighbors
            .is_empty());
        let loaded = HnswIndex::from_bytes(&index.to_bytes().unwrap()).unwrap();
        assert_eq!(loaded.info().rows, 0);
    }

    #[test]
    fn opclass_names_round_trip() {
        for m in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
            assert_eq!(Metric::from_opclass(m.opclass()), Some(m));
        }
        assert_eq!(
            Metric::from_opclass("VECTOR_IP_OPS"),
            Some(Metric::InnerProduct)
        );
        assert_eq!(Metric::from_opclass("gin_trgm_ops"), None);
    }

    #[test]
    fn index_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<HnswIndex>();
    }
}
