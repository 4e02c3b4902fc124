//! The feature store: every group's results as Parquet parts under
//! `<store>/features/<group>/v<version>/`, so that nothing is computed twice. Besides the
//! feature groups it keeps two pseudo-groups: `decode` (what decoding measured, for scans that
//! ask for nothing else) and `header` (a file's header and tags, so that header columns are
//! answered without opening the file).
//!
//! A part is published by one atomic put (a rename on local disk, a single PUT on S3): a
//! reader sees all of it or none, and the listing of a version's folder is its manifest. Part
//! names are unique per writer, so concurrent writers never overwrite each other; when two
//! rows describe the same path, the newest analysis wins. Results are read through (looked up
//! before any decode, by the AUDIO scan's read-through, which sits above the store and the
//! audio readers) and written behind (buffered, then published every few files, every few
//! seconds and at the end of each scan). The store knows nothing of audio files.
//!
//! Parts are bucketed by a hash of each file's URL (see [`buckets`]): a task of a distributed
//! scan reads only the parts that can hold its files.
//!
//! Compaction leaves the parts it replaced in place for a while, named in a record beside them
//! (see [`compact`]): readers take the live parts only. A part that cannot be read as one of its
//! group's parts is set aside (see [`crate::problems`]), never deleted.

mod buckets;
mod compact;
mod part;
mod tables;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use audiolake_udf::features::{self, GroupSchema, DECODE_GROUP, DECODE_VERSION};
use audiolake_udf::stored_header::{header_fields, HEADER_GROUP, HEADER_VERSION};
use datafusion::error::{DataFusionError, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

pub use buckets::{bucket_of, Buckets, BUCKETS};
use compact::RecordRead;
pub use compact::{CompactReport, DEFAULT_RETENTION};
pub use part::parse_part;
pub(crate) use part::{Decoded, Fingerprint, StoredRow};
pub(crate) use tables::register_feature_tables;

use crate::clock::{now_micros, writer_id};
use crate::problems::StoreProblems;

/// Stored parts fetched at once when reading a group's results.
const PARTS_IN_FLIGHT: usize = 8;

/// When buffered results are published.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// After this many files' results.
    pub files: usize,
    /// Or when the oldest buffered result is this old.
    pub interval: Duration,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self {
            files: 64,
            interval: Duration::from_secs(10),
        }
    }
}

/// Counters of the store's work since the engine opened.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Files answered from stored results.
    pub hits: AtomicU64,
    /// Files that had to be decoded.
    pub analyzed: AtomicU64,
    /// Files whose results were taken from another file with the same content.
    pub reused: AtomicU64,
    /// Parts published.
    pub parts_written: AtomicU64,
    /// Parts read into the in-memory lookup.
    pub parts_read: AtomicU64,
}

impl StoreStats {
    /// Files decoded and analysed.
    pub fn analyzed(&self) -> u64 {
        self.analyzed.load(Ordering::Relaxed)
    }

    /// Files answered from stored results, directly or through a copy with the same content.
    pub fn from_store(&self) -> u64 {
        self.hits.load(Ordering::Relaxed) + self.reused.load(Ordering::Relaxed)
    }
}

/// What is known of one group version: the parts read so far, the parts that compactions
/// replaced, and the newest row per path.
#[derive(Default)]
struct GroupIndex {
    parts: HashSet<Path>,
    /// Compaction records read so far, and the parts they name: older copies of rows that a
    /// merged part holds, kept a while for readers that listed them.
    records: HashSet<Path>,
    replaced: HashSet<Path>,
    /// Parts that could not be read as parts of the group (quarantined).
    bad: HashSet<Path>,
    by_path: HashMap<String, Arc<StoredRow>>,
    by_hash: HashMap<String, Arc<StoredRow>>,
    /// Stored paths by size: a file whose size matches none of the candidates cannot be a
    /// renamed or touched file, so it is not hashed before decoding.
    by_size: HashMap<u64, HashSet<String>>,
}

impl GroupIndex {
    fn insert(&mut self, row: StoredRow) {
        let row = Arc::new(row);
        if let Some(hash) = &row.content_hash {
            if row.outcome.is_ok() {
                self.by_hash.insert(hash.clone(), Arc::clone(&row));
            }
        }
        match self.by_path.get(&row.fingerprint.path) {
            Some(old) if old.analyzed_at > row.analyzed_at => {}
            old => {
                if let Some(old) = old {
                    let size = old.fingerprint.size;
                    if let Some(paths) = self.by_size.get_mut(&size) {
                        paths.remove(&row.fingerprint.path);
                        if paths.is_empty() {
                            self.by_size.remove(&size);
                        }
                    }
                }
                self.by_size
                    .entry(row.fingerprint.size)
                    .or_default()
                    .insert(row.fingerprint.path.clone());
                self.by_path.insert(row.fingerprint.path.clone(), row);
            }
        }
    }
}

#[derive(Default)]
struct Pending {
    /// Rows by group and by the buckets of the scan that made them, so that a part holds the
    /// files of one class and tasks of other classes skip it.
    rows: HashMap<(&'static str, Buckets), Vec<StoredRow>>,
    files: usize,
    since: Option<Instant>,
}

/// Every analysis result, kept as Parquet parts in the store and indexed in memory.
///
/// # Execution overview
///
/// A scan first calls [`FeatureStore::refresh`] for the groups it needs: the live parts of
/// each group's version folder are listed, new ones that can hold its [`Buckets`] read, and
/// their rows indexed by file
/// fingerprint (path, size, modification time, e-tag) and by content hash. A file is then
/// looked up ([`FeatureStore::lookup`], or [`FeatureStore::by_hash`] for a renamed or copied
/// file); what is missing is decoded once and handed back with [`FeatureStore::add`], which
/// buffers rows and says when the [`FlushPolicy`] wants them published. [`FeatureStore::flush`]
/// writes each group's buffered rows as one new part (atomic put, unique name per writer).
/// Compaction ([`compact`]) merges parts and keeps the replaced ones for the retention period.
pub struct FeatureStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    writer: String,
    sequence: AtomicU64,
    policy: FlushPolicy,
    /// How long compaction keeps the parts it replaced.
    retention: Duration,
    /// Rows per merged part (see [`compact`]).
    merged_part_rows: usize,
    indexes: RwLock<HashMap<&'static str, GroupIndex>>,
    /// One refresh at a time; the others wait and then find it done.
    refreshing: tokio::sync::Mutex<()>,
    pending: Mutex<Pending>,
    stats: StoreStats,
    problems: Arc<StoreProblems>,
}

impl std::fmt::Debug for FeatureStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FeatureStore({})", self.root)
    }
}

/// The schema of a stored group: a feature group, the decode columns alone, or the header.
pub(crate) fn group_schema(name: &str) -> Option<GroupSchema> {
    if name == DECODE_GROUP {
        return Some(GroupSchema {
            name: DECODE_GROUP,
            version: DECODE_VERSION,
            fields: Vec::new(),
        });
    }
    if name == HEADER_GROUP {
        return Some(GroupSchema {
            name: HEADER_GROUP,
            version: HEADER_VERSION,
            fields: header_fields(),
        });
    }
    features::group_schemas()
        .iter()
        .find(|g| g.name == name)
        .cloned()
}

/// Every stored group: the feature groups, then the decode columns and the header.
pub(crate) fn stored_groups() -> Vec<GroupSchema> {
    let mut groups = features::group_schemas().to_vec();
    groups.extend(group_schema(DECODE_GROUP));
    groups.extend(group_schema(HEADER_GROUP));
    groups
}

/// The stored groups an analysis of `groups` reads and writes: the groups, or the decode
/// columns alone when no group is asked for.
pub(crate) fn stored_for(groups: &[&'static str]) -> Vec<&'static str> {
    if groups.is_empty() {
        vec![DECODE_GROUP]
    } else {
        groups.to_vec()
    }
}

impl FeatureStore {
    /// A store under `prefix` (the engine's store location) of `store`; compaction keeps the
    /// parts it replaces for `retention`; malformed parts are reported to `problems`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &Path,
        policy: FlushPolicy,
        retention: Duration,
        problems: Arc<StoreProblems>,
    ) -> Self {
        let root = prefix.clone().join("features");
        Self {
            store,
            root,
            writer: format!("{:016x}", writer_id()),
            sequence: AtomicU64::new(0),
            policy,
            retention,
            merged_part_rows: compact::MERGED_PART_ROWS,
            indexes: RwLock::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
            pending: Mutex::new(Pending::default()),
            stats: StoreStats::default(),
            problems,
        }
    }

    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// The in-memory indexes; a panic elsewhere while one was held leaves them usable (every
    /// change to them is a whole insert or removal).
    fn indexes(&self) -> RwLockReadGuard<'_, HashMap<&'static str, GroupIndex>> {
        self.indexes.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn indexes_mut(&self) -> RwLockWriteGuard<'_, HashMap<&'static str, GroupIndex>> {
        self.indexes.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The folder of one group version.
    fn version_dir(&self, group: &GroupSchema) -> Path {
        self.root
            .clone()
            .join(group.name)
            .join(format!("v{}", group.version))
    }

    /// Reads the parts that can hold files of `buckets`, published since the last refresh, of
    /// the stored groups named in `stored` (see [`stored_for`] for what an analysis looks up).
    pub async fn refresh(&self, stored: &[&'static str], buckets: Buckets) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().await;
        for &name in stored {
            let group = group_schema(name).ok_or_else(|| {
                DataFusionError::Internal(format!("no stored group called {name}"))
            })?;
            self.refresh_group(&group, buckets).await?;
        }
        Ok(())
    }

    /// Reads the parts and compaction records of `group` published since the last refresh,
    /// the parts only where they can hold files of `buckets`, and returns the group's live
    /// parts read so far: listed, readable, and replaced by no compaction.
    async fn refresh_group(&self, group: &GroupSchema, buckets: Buckets) -> Result<Vec<Path>> {
        let dir = self.version_dir(group);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (records, parts): (Vec<Path>, Vec<Path>) = self
                .store
                .list(Some(&dir))
                .map_ok(|meta| meta.location)
                .try_collect::<Vec<_>>()
                .await?
                .into_iter()
                .filter(|p| compact::is_record(p) || p.extension() == Some("parquet"))
                .partition(compact::is_record);
            // A part or record listed but gone was removed by a compaction after its retention
            // (records go last): listing again settles it.
            let mut vanished = false;
            let new_records: Vec<Path> = {
                let indexes = self.indexes();
                let known = indexes.get(group.name);
                records
                    .into_iter()
                    .filter(|p| known.is_none_or(|k| !k.records.contains(p)))
                    .collect()
            };
            for path in new_records {
                let replaced = match self.read_record(&dir, &path).await? {
                    RecordRead::Replaced(parts) => parts,
                    RecordRead::Malformed => Vec::new(),
                    RecordRead::Gone => {
                        vanished = true;
                        continue;
                    }
                };
                let mut indexes = self.indexes_mut();
                let index = indexes.entry(group.name).or_default();
                index.records.insert(path);
                index.replaced.extend(replaced);
            }
            let new: Vec<Path> = {
                let indexes = self.indexes();
                let known = indexes.get(group.name);
                parts
                    .iter()
                    .filter(|p| {
                        known.is_none_or(|k| {
                            !k.parts.contains(*p) && !k.replaced.contains(*p) && !k.bad.contains(*p)
                        })
                    })
                    .filter(|p| {
                        buckets.overlaps(Buckets::of_part_name(p.filename().unwrap_or_default()))
                    })
                    .cloned()
                    .collect()
            };
            // Parts are fetched a few at a time: on S3 each is a round trip.
            let mut fetched = futures::stream::iter(new)
                .map(|path| async move {
                    match self.store.get(&path).await {
                        Ok(found) => Ok((path, Some(found.bytes().await?))),
                        Err(object_store::Error::NotFound { .. }) => Ok((path, None)),
                        Err(e) => Err(e),
                    }
                })
                .buffered(PARTS_IN_FLIGHT);
            while let Some((path, bytes)) = fetched.try_next().await? {
                let Some(bytes) = bytes else {
                    vanished = true;
                    continue;
                };
                let decoded = part::decode(group, bytes);
                let mut indexes = self.indexes_mut();
                let index = indexes.entry(group.name).or_default();
                match decoded {
                    Ok(rows) => {
                        self.stats.parts_read.fetch_add(1, Ordering::Relaxed);
                        index.parts.insert(path);
                        for row in rows {
                            index.insert(row);
                        }
                    }
                    Err(e) => {
                        self.problems.skipped(
                            path.as_ref(),
                            format!(
                                "not a readable part of feature group {} v{}: {e}",
                                group.name, group.version
                            ),
                        );
                        index.bad.insert(path);
                    }
                }
            }
            if !vanished || attempt == 3 {
                let indexes = self.indexes();
                let Some(known) = indexes.get(group.name) else {
                    return Ok(Vec::new());
                };
                let mut live: Vec<Path> = parts
                    .into_iter()
                    .filter(|p| known.parts.contains(p) && !known.replaced.contains(p))
                    .collect();
                live.sort();
                return Ok(live);
            }
        }
    }

    /// Every live part of `group` (see [`FeatureStore::refresh_group`]), read through.
    pub(crate) async fn live_parts(&self, group: &GroupSchema) -> Result<Vec<Path>> {
        let _one_at_a_time = self.refreshing.lock().await;
        self.refresh_group(group, Buckets::ALL).await
    }

    /// The stored result of `group` for this exact file version, if any.
    pub fn lookup(&self, group: &str, file: &Fingerprint) -> Option<Arc<StoredRow>> {
        let indexes = self.indexes();
        let row = indexes.get(group)?.by_path.get(&file.path)?;
        row.fingerprint.matches(file).then(|| Arc::clone(row))
    }

    /// Whether `file` (which missed its lookup) may be a stored file renamed or touched, so
    /// that hashing it might find its results: some stored file of its size is either at its
    /// path or, when the scan's `listed` paths are known, no longer listed. (A copy whose
    /// original is still listed is analysed, not hashed: hashing every file of a folder of
    /// equally long WAVs would read each twice.)
    pub fn may_be_copy(
        &self,
        group: &str,
        file: &Fingerprint,
        listed: Option<&HashSet<String>>,
    ) -> bool {
        let indexes = self.indexes();
        let Some(paths) = indexes.get(group).and_then(|i| i.by_size.get(&file.size)) else {
            return false;
        };
        paths
            .iter()
            .any(|p| *p == file.path || listed.is_none_or(|l| !l.contains(p)))
    }

    /// A stored successful result of `group` for content with this hash.
    pub fn by_hash(&self, group: &str, hash: &str) -> Option<Arc<StoredRow>> {
        let indexes = self.indexes();
        indexes.get(group)?.by_hash.get(hash).cloned()
    }

    /// Files with a stored result (or stored error) of `group` in the parts read so far.
    pub fn stored_files(&self, group: &str) -> usize {
        self.indexes().get(group).map_or(0, |g| g.by_path.len())
    }

    /// Buffers one file's rows (one per group) for the next parts, beside the rows of other
    /// files of the same scan `buckets`; true when a flush is due.
    pub fn add(&self, rows: Vec<(&'static str, StoredRow)>, buckets: Buckets) -> bool {
        {
            let mut indexes = self.indexes_mut();
            for (group, row) in &rows {
                indexes.entry(group).or_default().insert(row.clone());
            }
        }
        let mut pending = self.pending();
        for (group, row) in rows {
            pending.rows.entry((group, buckets)).or_default().push(row);
        }
        pending.files += 1;
        let since = *pending.since.get_or_insert_with(Instant::now);
        pending.files >= self.policy.files || since.elapsed() >= self.policy.interval
    }

    /// Publishes everything buffered, one part per group and scan buckets.
    pub async fn flush(&self) -> Result<()> {
        let rows = {
            let mut pending = self.pending();
            let rows = std::mem::take(&mut pending.rows);
            *pending = Pending::default();
            rows
        };
        for ((name, _), rows) in rows {
            if rows.is_empty() {
                continue;
            }
            let group = group_schema(name).expect("buffered groups are stored groups");
            let bytes = part::encode(&group, &rows)?;
            let path = self.part_path(&group, &rows);
            self.store.put(&path, PutPayload::from(bytes)).await?;
            self.stats.parts_written.fetch_add(1, Ordering::Relaxed);
            let mut indexes = self.indexes_mut();
            indexes.entry(group.name).or_default().parts.insert(path);
        }
        Ok(())
    }

    /// A new part's name for `rows`: time first (so listings read in publication order), then
    /// the writer and its sequence number, unique across processes, then the buckets of the
    /// rows' files.
    fn part_path(&self, group: &GroupSchema, rows: &[StoredRow]) -> Path {
        let seq = self.sequence.fetch_add(1, Ordering::Relaxed);
        let buckets = Buckets::holding(rows.iter().map(|r| bucket_of(&r.fingerprint.path)));
        self.version_dir(group).join(format!(
            "part-{:016}-{}-{seq:06}{}.parquet",
            now_micros(),
            self.writer,
            buckets.part_name_tag()
        ))
    }
}

#[cfg(test)]
mod tests;
