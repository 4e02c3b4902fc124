//! The indexes of an engine: their definitions, builds, persistence in the store and lazy
//! loading.
//!
//! Each index is kept under `<store>/indexes/`: `<name>.json` is its definition and names the
//! current build, whose graph (`<name>/<build>.hnsw`) and row keys (`<name>/<build>.keys.json`)
//! are written first. A rebuild writes new files and then replaces the definition, so a build
//! that dies half-way leaves the previous one in use.
//!
//! Replacing a definition holds a lock, `<name>.lock`, created only if absent (an exclusive
//! create on local disk, `If-None-Match` on S3) and taken over when older than
//! [`STALE_LOCK`] (its holder died). Under it the stored definition is read and the new one
//! names it as `previous`; that previous build is kept for queries that started on it, and the
//! one before it, which no definition names any more, is deleted. Two rebuilds at once thus
//! both publish, one after the other, and the definition always names files that exist.
//!
//! A definition that cannot be read is set aside (left in place, reported, skipped) so that the
//! other indexes still open.
//!
//! Rows are identified by a key column, `path` (every AUDIO table has it) or else `id`, so an
//! index follows its table across restarts, new files and deleted ones. Where each row is a
//! file (AUDIO tables), a build also keeps each row's file fingerprint (`<build>.files.json`),
//! so that a file changed in place is seen as a changed row.
//!
//! Rows added to the table after a build are inserted into the loaded graph (changed rows are
//! a dead row and a new one; deleted rows are marked dead), and each such step is kept beside
//! the build as `<name>/<build>.added-<time>-<n>.json` ([`Additions`]): loading a build replays
//! its additions in order, so the store is appended to, never rewritten, until a rebuild.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::sql::vector::float4_list;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast as cast_array;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::functions::expr_fn::concat;
use datafusion::logical_expr::{cast, lit, Expr};
use datafusion::prelude::{ident, SessionContext};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::files::IndexFiles;
use super::passing::PassingCache;
use super::version::table_version;
use super::{HnswIndex, IndexParams, Metric};
use crate::cancel::CancelOnDrop;
use crate::clock::{now_micros, writer_id};
use crate::jobs::Jobs;
use crate::problems::StoreProblems;
use crate::sql::settings;

/// Key columns, in order of preference.
const KEY_COLUMNS: [&str; 2] = ["path", "id"];
/// Columns of a table whose rows are files (AUDIO tables) that change when a file does.
const FILE_COLUMNS: [&str; 2] = ["size_bytes", "last_modified"];
/// A definition lock older than this was left by a process that died holding it (replacing a
/// definition takes a few store round trips).
const STALE_LOCK: Duration = Duration::from_secs(30);
/// How long to wait for another process's lock before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Definitions larger than this are not read (a real one is well under a kilobyte).
const MAX_DEFINITION_BYTES: u64 = 1 << 20;
/// Additions files larger than this are not read (about 100,000 rows of 200 dimensions).
const MAX_ADDITIONS_BYTES: u64 = 256 << 20;
const ADDITIONS: &str = "added-";

/// What `CREATE INDEX` asked for and what its current build is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexDefinition {
    pub name: String,
    /// The table as written in `CREATE INDEX` (e.g. `music`).
    pub table: String,
    pub column: String,
    /// The column that identifies rows: `path` or `id`.
    pub key: String,
    pub metric: Metric,
    pub params: IndexParams,
    /// The current build (a timestamp in microseconds), naming its files.
    pub build: i64,
    pub rows: usize,
    pub dims: usize,
    pub size_bytes: u64,
    pub build_seconds: f64,
    /// The table's version when the build read it (see [`table_version`]); `None` for tables
    /// not made of files, and for indexes built before versions were kept.
    #[serde(default)]
    pub version: Option<String>,
    /// Whether the build kept each row's file fingerprint (see [`fingerprint`]).
    #[serde(default)]
    pub fingerprinted: bool,
    /// The build this one replaced, kept for queries that started on it.
    #[serde(default)]
    pub previous: Option<i64>,
}

/// Reads one stored index definition, or says what is wrong with it (public so that it can
/// be fuzzed).
pub fn parse_definition(bytes: &[u8]) -> std::result::Result<IndexDefinition, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not an index definition: {e}"))
}

/// A loaded build and the additions made to it: the graph and, for each row id, its key and
/// (when the table's rows are files) its file fingerprint.
pub struct Loaded {
    pub index: HnswIndex,
    /// By row id, every row ever in the graph, dead ones too.
    pub keys: Vec<String>,
    /// The live rows' ids by key.
    pub ids: HashMap<String, u64>,
    /// Empty when the build kept none.
    pub fingerprints: Vec<String>,
    /// The table's version that the rows are those of (see [`table_version`]).
    pub version: Option<String>,
    /// Which rows recent predicates passed at that version.
    pub passing: PassingCache,
}

impl Loaded {
    fn new(
        index: HnswIndex,
        keys: Vec<String>,
        fingerprints: Vec<String>,
        version: Option<String>,
    ) -> Self {
        let ids = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), i as u64))
            .collect();
        Self {
            index,
            keys,
            ids,
            fingerprints,
            version,
            passing: PassingCache::default(),
        }
    }

    /// Applies `additions`: gone rows and the old versions of changed rows are marked dead,
    /// new rows (and new versions) inserted into the graph. Rows already held as they are are
    /// skipped, so replaying additions twice changes nothing. All or nothing: an error (a
    /// vector of another length, a NaN) leaves the rows as they were.
    fn apply(&mut self, additions: &Additions) -> std::result::Result<(), super::IndexError> {
        let mut dead = Vec::new();
        let mut rows: Vec<(u64, &[f32])> = Vec::new();
        let mut new = Vec::new();
        let next = self.keys.len() as u64;
        for row in &additions.rows {
            if let Some(&id) = self.ids.get(&row.key) {
                let file = self.fingerprints.get(id as usize);
                if row.file.is_none() || file == row.file.as_ref() {
                    continue;
                }
                dead.push(id);
            }
            rows.push((next + new.len() as u64, &row.vector));
            new.push(row);
        }
        dead.extend(
            additions
                .gone
                .iter()
                .filter_map(|k| self.ids.get(k).copied()),
        );
        self.index.insert(rows)?;
        self.index.mark_dead(dead.iter().copied());
        for id in dead {
            self.ids.remove(&self.keys[id as usize]);
        }
        for row in new {
            self.ids.insert(row.key.clone(), self.keys.len() as u64);
            self.keys.push(row.key.clone());
            if let Some(file) = &row.file {
                self.fingerprints.push(file.clone());
            }
        }
        self.version = additions.version.clone();
        self.passing.clear();
        Ok(())
    }
}

/// What a table gained and lost since a build, as one step applied to it: kept in the store
/// as `<build>.added-*.json` beside the build's files.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Additions {
    /// The table's version after this step.
    pub version: Option<String>,
    /// Rows added, or changed (same key, another file).
    pub rows: Vec<AddedRow>,
    /// Keys of rows deleted.
    #[serde(default)]
    pub gone: Vec<String>,
}

/// A row added to a table after its index's build.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddedRow {
    pub key: String,
    /// Its file fingerprint, for tables whose rows are files.
    #[serde(default)]
    pub file: Option<String>,
    pub vector: Vec<f32>,
}

/// A loaded build, shared by the queries on it; additions take it for writing.
pub type SharedLoaded = Arc<parking_lot::RwLock<Loaded>>;

/// One index: its definition and, once used, its loaded build.
pub struct Entry {
    pub definition: IndexDefinition,
    loaded: Mutex<Option<SharedLoaded>>,
    /// Set when the check of the mapped file's vectors, made after opening it, failed: the
    /// next query builds the index again.
    damaged: AtomicBool,
}

impl Entry {
    /// Whether the build is in memory (false while it is being loaded).
    pub fn is_loaded(&self) -> bool {
        self.loaded.try_lock().is_ok_and(|slot| slot.is_some())
    }

    /// The live rows of the loaded build, those inserted since included; the build's count
    /// while it is not loaded or is being changed.
    pub fn rows(&self) -> usize {
        let live = self.loaded.try_lock().ok().and_then(|slot| {
            let loaded = slot.as_ref()?.try_read()?;
            Some(loaded.ids.len())
        });
        live.unwrap_or(self.definition.rows)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "index {}", self.definition.name)
    }
}

/// The indexes of an engine, shared by its sessions.
pub struct Indexes {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    /// Where graph files are mapped from.
    files: IndexFiles,
    entries: RwLock<BTreeMap<String, Arc<Entry>>>,
    problems: Arc<StoreProblems>,
    /// Where builds show their progress (`audiolake_progress`).
    jobs: Arc<Jobs>,
}

impl std::fmt::Debug for Indexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexes").field("dir", &self.dir).finish()
    }
}

fn store_error(action: &str, e: object_store::Error) -> DataFusionError {
    DataFusionError::External(format!("index files could not be {action}: {e}").into())
}

fn index_error(e: super::IndexError) -> DataFusionError {
    DataFusionError::Execution(e.to_string())
}

impl Indexes {
    /// `root` is the store's path, `files` where its graph files are mapped from; unreadable
    /// definitions are reported to `problems`, builds to `jobs`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: &Path,
        files: IndexFiles,
        problems: Arc<StoreProblems>,
        jobs: Arc<Jobs>,
    ) -> Self {
        Self {
            store,
            dir: root.clone().join("indexes"),
            files,
            entries: RwLock::new(BTreeMap::new()),
            problems,
            jobs,
        }
    }

    /// The entries; a panic elsewhere while they were held leaves them usable (each change is
    /// one insert or removal).
    fn entries(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.entries.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn entries_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.entries.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn definition_path(&self, name: &str) -> Path {
        self.dir.clone().join(format!("{name}.json"))
    }

    fn build_path(&self, name: &str, build: i64, suffix: &str) -> Path {
        self.dir
            .clone()
            .join(name)
            .join(format!("{build}.{suffix}"))
    }

    /// Reads the definitions kept in the store; builds are loaded at first use. A definition
    /// that cannot be read is reported (see [`Indexes::problems`]) and skipped.
    pub async fn open(&self) -> Result<()> {
        let listing = match self.store.list_with_delimiter(Some(&self.dir)).await {
            Ok(listing) => listing.objects,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(store_error("listed", e)),
        };
        let mut entries = BTreeMap::new();
        for meta in listing {
            if meta.location.extension() != Some("json") {
                continue;
            }
            let Some(definition) = self.read_definition(&meta).await? else {
                continue;
            };
            match check_definition(&meta.location, definition) {
                Ok(definition) => {
                    entries.insert(
                        definition.name.clone(),
                        Arc::new(Entry {
                            definition,
                            loaded: Mutex::new(None),
                            damaged: AtomicBool::new(false),
                        }),
                    );
                }
                Err(reason) => self.problems.skipped(meta.location.as_ref(), reason),
            }
        }
        *self.entries_mut() = entries;
        Ok(())
    }

    /// The definition stored at `meta`; `None` when it is gone or malformed (then reported).
    async fn read_definition(
        &self,
        meta: &object_store::ObjectMeta,
    ) -> Result<Option<IndexDefinition>> {
        if meta.size > MAX_DEFINITION_BYTES {
            self.problems.skipped(
                meta.location.as_ref(),
                format!(
                    "an index definition of {} bytes (at most {MAX_DEFINITION_BYTES} are read)",
                    meta.size
                ),
            );
            return Ok(None);
        }
        let bytes = match self.store.get(&meta.location).await {
            Ok(found) => found.bytes().await,
            Err(e) => Err(e),
        };
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(store_error("read", e)),
        };
        match parse_definition(&bytes) {
            Ok(definition) => Ok(Some(definition)),
            Err(problem) => {
                self.problems.skipped(meta.location.as_ref(), problem);
                Ok(None)
            }
        }
    }

    /// The stored definition of `name`, if there is a readable one.
    async fn stored_definition(&self, name: &str) -> Result<Option<IndexDefinition>> {
        match self.store.head(&self.definition_path(name)).await {
            Ok(meta) => self.read_definition(&meta).await,
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error("read", e)),
        }
    }

    /// Takes the lock on `name`'s definition; `None` when the store cannot create objects
    /// exclusively (an S3-compatible server without conditional writes), where the definition
    /// is replaced unlocked.
    async fn lock(&self, name: &str) -> Result<Option<Path>> {
        let path = self.dir.clone().join(format!("{name}.lock"));
        let started = Instant::now();
        loop {
            let created = self
                .store
                .put_opts(&path, PutPayload::new(), PutMode::Create.into())
                .await;
            match created {
                Ok(_) => return Ok(Some(path)),
                Err(object_store::Error::NotImplemented { .. }) => {
                    log::debug!("{path}: the store has no exclusive create; not locking");
                    return Ok(None);
                }
                Err(object_store::Error::AlreadyExists { .. }) => {}
                Err(e) => return Err(store_error("locked", e)),
            }
            match self.store.head(&path).await {
                Ok(meta) if age(&meta) > STALE_LOCK => {
                    log::warn!("{path} was left by a process that stopped; taking it over");
                    match self.store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_error("unlocked", e)),
                    }
                    continue;
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_error("locked", e)),
            }
            if started.elapsed() > LOCK_WAIT {
                return Err(DataFusionError::Execution(format!(
                    "index {name} is being replaced by another process (lock {path} held for \
                     over {} s); try again later",
                    LOCK_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn unlock(&self, lock: Option<Path>) {
        let Some(path) = lock else { return };
        if let Err(e) = self.store.delete(&path).await {
            log::warn!(
                "index lock {path} was not removed (it expires in {} s): {e}",
                STALE_LOCK.as_secs()
            );
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries().get(name).cloned()
    }

    /// Every index, in name order.
    pub fn list(&self) -> Vec<Arc<Entry>> {
        self.entries().values().cloned().collect()
    }

    /// The index on `table.column` for `metric`, if there is one.
    pub fn find(&self, table: &TableReference, column: &str, metric: Metric) -> Option<Arc<Entry>> {
        self.list().into_iter().find(|e| {
            let d = &e.definition;
            d.column == column
                && d.metric == metric
                && TableReference::from(d.table.as_str()).resolved_eq(table)
        })
    }

    /// The indexes on `table`.
    pub fn on_table(&self, table: &TableReference) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|e| TableReference::from(e.definition.table.as_str()).resolved_eq(table))
            .map(|e| e.definition.name.clone())
            .collect()
    }

    /// Builds the index `template` describes (its build fields are filled in) from the rows
    /// of its table, saves it and makes it current, replacing a previous build of that name.
    /// The build shows in `audiolake_progress`, runs on `audiolake.index_build_threads`
    /// threads, and stops when this future is dropped.
    pub async fn build(
        &self,
        state: &SessionState,
        template: IndexDefinition,
    ) -> Result<Arc<Entry>> {
        template.params.validate().map_err(index_error)?;
        // Taken before the rows are read: a change made during the build leaves a version
        // that no longer matches, so scans read the table to see the change.
        let provider = SessionContext::new_with_state(state.clone())
            .table_provider(template.table.as_str())
            .await?;
        let version = table_version(state, provider.as_ref()).await?;
        let fingerprint = fingerprint(&provider.schema());
        let rows = read_vectors(state, &template, fingerprint.clone()).await?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut vectors = Vec::with_capacity(rows.len());
        let mut fingerprints = Vec::new();
        for row in rows {
            keys.push(row.key);
            vectors.push(row.vector);
            fingerprints.extend(row.file);
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = keys.iter().find(|k| !seen.insert(k.as_str())) {
            return Err(DataFusionError::Execution(format!(
                "index {}: {} '{twice}' appears twice in {}; the key column must identify rows",
                template.name, template.key, template.table
            )));
        }
        let (metric, params) = (template.metric, template.params);
        let threads = settings::index_build_threads(state.config_options())?;
        let (job, inserted) =
            self.jobs
                .start_index_build(&template.name, &template.table, vectors.len() as u64);
        // Dropped with this future (the statement was cancelled, timed out or lost its
        // client): the build stops within a few dozen inserts per thread, and nothing is
        // published, so the previous build stays in use.
        let cancel = CancelOnDrop::default();
        let cancelled = cancel.flag();
        let index = tokio::task::spawn_blocking(move || {
            let rows = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (i as u64, v.as_slice()));
            let stop = || cancelled.load(Ordering::Relaxed);
            let build = || HnswIndex::build_cancellable(metric, params, rows, &stop, &inserted);
            let built = match threads {
                None => build(),
                Some(threads) => match rayon::ThreadPoolBuilder::new().num_threads(threads).build()
                {
                    Ok(pool) => pool.install(build),
                    Err(e) => Err(super::IndexError::Parameter(format!(
                        "a pool of {threads} build threads: {e}"
                    ))),
                },
            };
            // Recorded here, when the build's threads are done.
            job.finish(built.as_ref().map(|_| ()).map_err(ToString::to_string));
            built
        })
        .await
        .map_err(|e| DataFusionError::External(e.into()))?
        .map_err(index_error)?;
        drop(cancel);
        let build = next_build();
        let graph = self.build_path(&template.name, build, "hnsw");
        let file = self.files.start(&graph)?;
        // Streamed to a local file, then (for object storage) uploaded from it: a graph is
        // never held in memory twice.
        let (index, file, written) = tokio::task::spawn_blocking(move || {
            let written = index.write_file(file.path());
            (index, file, written)
        })
        .await
        .map_err(|e| DataFusionError::External(e.into()))?;
        let size_bytes = written.map_err(index_error)?;
        self.files.finish(&self.store, &graph, file).await?;
        let info = index.info();
        let definition = IndexDefinition {
            build,
            rows: info.rows,
            dims: info.dims,
            size_bytes,
            build_seconds: info.build_seconds,
            version,
            fingerprinted: fingerprint.is_some(),
            ..template
        };
        let name = definition.name.clone();
        let mut files = vec![(
            "keys.json",
            serde_json::to_vec(&keys).expect("keys serialise"),
        )];
        if definition.fingerprinted {
            let json = serde_json::to_vec(&fingerprints).expect("fingerprints serialise");
            files.push(("files.json", json));
        }
        for (suffix, payload) in files {
            self.store
                .put(
                    &self.build_path(&name, definition.build, suffix),
                    PutPayload::from(payload),
                )
                .await
                .map_err(|e| store_error("written", e))?;
        }
        let loaded = Loaded::new(index, keys, fingerprints, definition.version.clone());
        self.publish(definition, loaded).await
    }

    /// Makes `definition` (whose files are written) the current build of its index, under the
    /// definition's lock, and deletes the build that no definition names any more.
    async fn publish(&self, mut definition: IndexDefinition, loaded: Loaded) -> Result<Arc<Entry>> {
        let name = definition.name.clone();
        let lock = self.lock(&name).await?;
        let published = async {
            let stored = self.stored_definition(&name).await?;
            definition.previous = stored.as_ref().map(|d| d.build);
            let json = serde_json::to_vec_pretty(&definition)
                .map_err(|e| DataFusionError::External(e.into()))?;
            self.store
                .put(&self.definition_path(&name), PutPayload::from(json))
                .await
                .map_err(|e| store_error("written", e))?;
            let entry = Arc::new(Entry {
                definition,
                loaded: Mutex::new(Some(Arc::new(parking_lot::RwLock::new(loaded)))),
                damaged: AtomicBool::new(false),
            });
            self.entries_mut().insert(name.clone(), Arc::clone(&entry));
            Ok::<_, DataFusionError>((entry, stored))
        }
        .await;
        self.unlock(lock).await;
        let (entry, stored) = published?;
        let unnamed = stored
            .and_then(|d| d.previous)
            .filter(|&b| b != entry.definition.build && Some(b) != entry.definition.previous);
        if let Some(build) = unnamed {
            self.delete_build(&name, build).await;
        }
        Ok(entry)
    }

    /// Removes an index and its files. `Ok(false)` when there is no such index.
    pub async fn drop_index(&self, name: &str) -> Result<bool> {
        let Some(entry) = self.entries_mut().remove(name) else {
            return Ok(false);
        };
        let lock = self.lock(name).await?;
        let dropped = async {
            let stored = self.stored_definition(name).await?;
            match self.store.delete(&self.definition_path(name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(stored),
                Err(e) => Err(store_error("deleted", e)),
            }
        }
        .await;
        self.unlock(lock).await;
        let mut builds = vec![entry.definition.build];
        builds.extend(entry.definition.previous);
        if let Some(stored) = dropped? {
            builds.push(stored.build);
            builds.extend(stored.previous);
        }
        builds.sort_unstable();
        builds.dedup();
        for build in builds {
            self.delete_build(name, build).await;
        }
        Ok(true)
    }

    /// Best effort: a build's files left behind waste space but break nothing.
    async fn delete_build(&self, name: &str, build: i64) {
        let mut paths: Vec<Path> = ["hnsw", "keys.json", "files.json"]
            .into_iter()
            .map(|suffix| self.build_path(name, build, suffix))
            .collect();
        match self.additions_of(name, build).await {
            Ok(additions) => paths.extend(additions),
            Err(e) => {
                log::warn!("the additions of index {name} build {build} were not listed: {e}")
            }
        }
        self.files
            .forget(&self.build_path(name, build, "hnsw"))
            .await;
        for path in paths {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => log::warn!("old index file {path} was not deleted: {e}"),
            }
        }
    }

    /// The additions files of a build, oldest first.
    async fn additions_of(&self, name: &str, build: i64) -> Result<Vec<Path>> {
        let prefix = format!("{build}.{ADDITIONS}");
        let mut paths: Vec<Path> = self
            .store
            .list(Some(&self.dir.clone().join(name)))
            .try_filter_map(|meta| {
                let ours = meta
                    .location
                    .filename()
                    .is_some_and(|f| f.starts_with(&prefix) && f.ends_with(".json"));
                futures::future::ready(Ok(ours.then_some(meta.location)))
            })
            .try_collect()
            .await
            .map_err(|e| store_error("listed", e))?;
        paths.sort();
        Ok(paths)
    }

    /// Applies `additions` to the entry's loaded build and keeps them in the store beside it.
    /// The graph is extended on a blocking thread while queries on this index wait.
    pub async fn add_rows(
        &self,
        entry: &Entry,
        loaded: &SharedLoaded,
        additions: Additions,
    ) -> Result<()> {
        let shared = Arc::clone(loaded);
        let additions = tokio::task::spawn_blocking(move || {
            shared.write().apply(&additions).map(|()| additions)
        })
        .await
        .map_err(|e| DataFusionError::External(e.into()))?
        .map_err(index_error)?;
        let d = &entry.definition;
        let path = self.build_path(
            &d.name,
            d.build,
            &format!(
                "{ADDITIONS}{:016}-{:016x}-{:06}.json",
                now_micros(),
                writer_id(),
                next_addition()
            ),
        );
        let json =
            serde_json::to_vec(&additions).map_err(|e| DataFusionError::External(e.into()))?;
        // Not kept, the rows are found again as added after a restart: nothing is lost.
        if let Err(e) = self.store.put(&path, PutPayload::from(json)).await {
            log::warn!(
                "index {}: rows added since its build were not saved: {e}",
                d.name
            );
        }
        Ok(())
    }

    /// The entry's build, read from the store at first use; a build that cannot be read (an
    /// index file damaged, or written in a format this version no longer reads) is built again
    /// from the table, with a warning in the log rather than an error for the query.
    pub async fn loaded_or_rebuilt(
        &self,
        state: &SessionState,
        mut entry: Arc<Entry>,
    ) -> Result<(Arc<Entry>, SharedLoaded)> {
        if entry.damaged.load(Ordering::Relaxed) {
            // Another query may have built it again already.
            let current = self.entries().get(&entry.definition.name).cloned();
            match current {
                Some(c) if !Arc::ptr_eq(&c, &entry) => entry = c,
                _ => entry = self.build(state, entry.definition.clone()).await?,
            }
        }
        if let Some(loaded) = self.loaded(&entry).await? {
            return Ok((entry, loaded));
        }
        let entry = self.build(state, entry.definition.clone()).await?;
        let loaded = self.loaded(&entry).await?.ok_or_else(|| {
            DataFusionError::Internal("a new build is held in memory".to_string())
        })?;
        Ok((entry, loaded))
    }

    /// The entry's build with its additions, read from the store at first use; `None` when its
    /// index file cannot be read (logged). Additions that cannot be read or applied are set
    /// aside (reported): their rows are found again as added.
    async fn loaded(&self, entry: &Arc<Entry>) -> Result<Option<SharedLoaded>> {
        let mut slot = entry.loaded.lock().await;
        if let Some(loaded) = slot.as_ref() {
            return Ok(Some(Arc::clone(loaded)));
        }
        let d = &entry.definition;
        let read = |suffix: &'static str| {
            let path = self.build_path(&d.name, d.build, suffix);
            async move {
                self.store
                    .get(&path)
                    .await
                    .map_err(|e| store_error("read", e))?
                    .bytes()
                    .await
                    .map_err(|e| store_error("read", e))
            }
        };
        let graph = self
            .files
            .local(
                self.store.as_ref(),
                &self.build_path(&d.name, d.build, "hnsw"),
            )
            .await?;
        let keys = read("keys.json").await?;
        let keys: Vec<String> = serde_json::from_slice(&keys)
            .map_err(|e| DataFusionError::Execution(format!("index {} keys: {e}", d.name)))?;
        let fingerprints: Vec<String> = if d.fingerprinted {
            serde_json::from_slice(&read("files.json").await?).map_err(|e| {
                DataFusionError::Execution(format!("index {} file fingerprints: {e}", d.name))
            })?
        } else {
            Vec::new()
        };
        let opened = graph.clone();
        let index = match tokio::task::spawn_blocking(move || HnswIndex::open(&opened))
            .await
            .map_err(|e| DataFusionError::External(e.into()))?
        {
            Ok(index) => {
                // Opening skipped the vectors, so as not to read the whole file: they are
                // checked now, beside the queries.
                let checked = Arc::clone(entry);
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = HnswIndex::verify_file(&graph) {
                        let d = &checked.definition;
                        log::warn!(
                            "index {}: build {} cannot be used ({e}); it is built again at \
                             its next query",
                            d.name,
                            d.build
                        );
                        checked.damaged.store(true, Ordering::Relaxed);
                    }
                });
                index
            }
            Err(e) => {
                log::warn!(
                    "index {}: build {} cannot be used ({e}); building it again",
                    d.name,
                    d.build
                );
                return Ok(None);
            }
        };
        let mut loaded = Loaded::new(index, keys, fingerprints, d.version.clone());
        for path in self.additions_of(&d.name, d.build).await? {
            let found = match self.store.get(&path).await {
                Ok(found) => found,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(store_error("read", e)),
            };
            let problem = if found.meta.size > MAX_ADDITIONS_BYTES {
                Some(format!(
                    "index additions of {} bytes (at most {MAX_ADDITIONS_BYTES} are read)",
                    found.meta.size
                ))
            } else {
                let bytes = found.bytes().await.map_err(|e| store_error("read", e))?;
                match serde_json::from_slice::<Additions>(&bytes) {
                    Ok(additions) => {
                        // Replayed on a blocking thread: it extends the graph.
                        let (applied, back) =
                            tokio::task::spawn_blocking(move || (loaded.apply(&additions), loaded))
                                .await
                                .map_err(|e| DataFusionError::External(e.into()))?;
                        loaded = back;
                        applied
                            .err()
                            .map(|e| format!("index additions not applied: {e}"))
                    }
                    Err(e) => Some(format!("not index additions: {e}")),
                }
            };
            if let Some(problem) = problem {
                self.problems.skipped(path.as_ref(), problem);
            }
        }
        let loaded = Arc::new(parking_lot::RwLock::new(loaded));
        *slot = Some(Arc::clone(&loaded));
        Ok(Some(loaded))
    }
}

/// A new build's id: the time in microseconds, strictly increasing within the process so that
/// two builds at once never share file names.
fn next_build() -> i64 {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_micros();
    let previous = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(previous + 1)
}

/// A sequence number for additions files, unique within the process.
fn next_addition() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn age(meta: &object_store::ObjectMeta) -> Duration {
    let micros = now_micros().saturating_sub(meta.last_modified.timestamp_micros());
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

/// `definition` as read from `path`, if it is one this engine can use.
fn check_definition(
    path: &Path,
    definition: IndexDefinition,
) -> std::result::Result<IndexDefinition, String> {
    if path.filename() != Some(format!("{}.json", definition.name).as_str()) {
        return Err(format!(
            "it names index \"{}\", not the index its file is named after",
            definition.name
        ));
    }
    definition.params.validate().map_err(|e| e.to_string())?;
    Ok(definition)
}

/// The key column of a table's schema: `path`, else `id`.
pub fn key_column(schema: &Schema) -> Option<&'static str> {
    KEY_COLUMNS
        .into_iter()
        .find(|k| schema.field_with_name(k).is_ok())
}

/// A row's file fingerprint (size and modification time, as text) for tables whose rows are
/// files, which have the columns; `None` for other tables.
pub fn fingerprint(schema: &Schema) -> Option<Expr> {
    if !FILE_COLUMNS
        .iter()
        .all(|c| schema.field_with_name(c).is_ok())
    {
        return None;
    }
    let text = |c: &str| cast(ident(c), DataType::Utf8);
    Some(concat(vec![
        text(FILE_COLUMNS[0]),
        lit(" "),
        text(FILE_COLUMNS[1]),
    ]))
}

/// Whether a column can be indexed: a list of numbers.
pub fn is_vector(field: &Field) -> bool {
    matches!(
        field.data_type(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
            if f.data_type().is_numeric()
    )
}

/// Every row's key, vector and (with `fingerprint`) file fingerprint; rows whose vector is
/// NULL are left out: no distance orders them before another row.
async fn read_vectors(
    state: &SessionState,
    definition: &IndexDefinition,
    fingerprint: Option<Expr>,
) -> Result<Vec<AddedRow>> {
    let ctx = SessionContext::new_with_state(state.clone());
    let mut columns = vec![ident(&definition.key), ident(&definition.column)];
    columns.extend(fingerprint.map(|f| f.alias("fingerprint")));
    let frame = ctx
        .table(definition.table.as_str())
        .await?
        .filter(ident(&definition.column).is_not_null())?
        .select(columns)?;
    let mut stream = frame.execute_stream().await?;
    let mut rows = Vec::new();
    while let Some(batch) = stream.try_next().await? {
        push_vector_rows(&batch, definition, &mut rows)?;
    }
    Ok(rows)
}

/// Appends the rows of a batch of `(key, vector[, file fingerprint])` with a non-NULL vector,
/// as an index takes them: a NULL key or a NULL element is an error.
pub(crate) fn push_vector_rows(
    batch: &RecordBatch,
    definition: &IndexDefinition,
    rows: &mut Vec<AddedRow>,
) -> Result<()> {
    let keys = cast_array(batch.column(0), &DataType::Utf8)?;
    let keys = keys.as_string::<i32>();
    let vectors = cast_array(batch.column(1), &float4_list())?;
    let vectors = vectors.as_list::<i32>();
    let files = batch
        .columns()
        .get(2)
        .map(|c| cast_array(c, &DataType::Utf8))
        .transpose()?;
    let files = files.as_ref().map(|f| f.as_string::<i32>());
    rows.reserve(batch.num_rows());
    for row in (0..batch.num_rows()).filter(|r| vectors.is_valid(*r)) {
        if keys.is_null(row) {
            return Err(DataFusionError::Execution(format!(
                "index {}: a row of {} has a NULL {}; the key column must identify every row",
                definition.name, definition.table, definition.key
            )));
        }
        let values = vectors.value(row);
        let values = values.as_primitive::<Float32Type>();
        if values.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "index {}: the vector of {} has a NULL element",
                definition.name,
                keys.value(row)
            )));
        }
        rows.push(AddedRow {
            key: keys.value(row).to_string(),
            file: files.map(|f| f.value(row).to_string()),
            vector: values.values().to_vec(),
        });
    }
    Ok(())
}
