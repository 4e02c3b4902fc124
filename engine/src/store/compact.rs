//! Compaction: each group's live parts merged into one holding the newest row per path (or,
//! past [`MERGED_PART_ROWS`] rows, into several by bucket), and results of older versions of
//! known groups removed.
//!
//! Replaced parts are not deleted at once, because a reader (this process, another engine, a
//! `features_*` scan) may have listed them a moment before. Instead, after publishing the merged
//! part, compaction publishes a *record* beside it, `replaced-<time>-<writer>-<n>.json`, naming
//! the parts it replaced. Readers list a version's folder, read the records they have not read
//! yet, and take only the parts no record names: a part is either live or replaced, by one
//! listing, with no object ever renamed. A later compaction (the same one, when the retention
//! is zero) deletes the parts of every record older than the retention, then the record itself.
//!
//! Concurrent compactions need no lock: each merges the live parts it found and names only
//! those. Two that merge the same parts leave two merged parts with the same rows (the newest
//! row per path is the same in both), and one that finds a part already removed by the other
//! leaves that group to it. Every row always lives in a part no record names, or in the merged
//! part that replaced it, which is published before the record.
//!
//! Only what this binary knows is removed: older versions of its own groups. A newer version's
//! folder (`v99`) or a group it does not know belongs to a newer binary sharing the store.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use audiolake_udf::features::GroupSchema;
use datafusion::error::Result;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{bucket_of, part, stored_groups, FeatureStore, StoredRow, BUCKETS};
use crate::clock::now_micros;

/// How long compaction keeps the parts it replaced, unless told otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);

/// Rows a merged part holds, about: a larger merge is split into a power of two of parts by
/// bucket, so that a task of a distributed scan reads its share of a large store, not all of
/// it, and no part is too large to read at once.
pub(super) const MERGED_PART_ROWS: usize = 65_536;

/// Records larger than this are not read (one names a few thousand parts at most).
const MAX_RECORD_BYTES: u64 = 16 << 20;

const RECORD_PREFIX: &str = "replaced-";

/// What a compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Parts replaced by merged ones (kept for the retention period, then removed).
    pub parts_merged: usize,
    /// Rows kept (the newest per path and group).
    pub rows_kept: usize,
    /// Rows dropped because a newer analysis of the same path exists.
    pub rows_superseded: usize,
    /// Replaced parts removed because their retention period was over.
    pub replaced_parts_removed: usize,
    /// Objects removed because their group version is no longer in use.
    pub stale_objects_removed: usize,
}

/// A compaction record: the parts (file names in the same folder) that merged parts replaced.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The first merged part; the others, when the merge was split, in `merged_also` (a field
    /// older binaries ignore, so they still read the record).
    merged: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    merged_also: Vec<String>,
    replaced: Vec<String>,
}

/// What reading a compaction record found.
pub(super) enum RecordRead {
    /// The parts it names.
    Replaced(Vec<Path>),
    /// Removed since it was listed.
    Gone,
    /// Not a record (quarantined).
    Malformed,
}

/// Whether `path` is a compaction record.
pub(super) fn is_record(path: &Path) -> bool {
    path.filename()
        .is_some_and(|name| name.starts_with(RECORD_PREFIX) && name.ends_with(".json"))
}

fn file_name(path: &Path) -> String {
    path.filename().unwrap_or_default().to_owned()
}

fn age_exceeds(meta: &ObjectMeta, retention: Duration) -> bool {
    let age = now_micros().saturating_sub(meta.last_modified.timestamp_micros());
    retention.is_zero() || u128::try_from(age).is_ok_and(|age| age >= retention.as_micros())
}

fn gone(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl FeatureStore {
    /// Reads the compaction record at `path` in the version folder `dir`.
    pub(super) async fn read_record(&self, dir: &Path, path: &Path) -> Result<RecordRead> {
        let found = match self.store.get(path).await {
            Ok(found) => found,
            Err(e) if gone(&e) => return Ok(RecordRead::Gone),
            Err(e) => return Err(e.into()),
        };
        if found.meta.size > MAX_RECORD_BYTES {
            self.problems.skipped(
                path.as_ref(),
                format!(
                    "a compaction record of {} bytes (at most {MAX_RECORD_BYTES} are read)",
                    found.meta.size
                ),
            );
            return Ok(RecordRead::Malformed);
        }
        let bytes = match found.bytes().await {
            Ok(bytes) => bytes,
            Err(e) if gone(&e) => return Ok(RecordRead::Gone),
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(record) => Ok(RecordRead::Replaced(
                record
                    .replaced
                    .iter()
                    .map(|name| dir.clone().join(name.as_str()))
                    .collect(),
            )),
            Err(e) => {
                self.problems
                    .skipped(path.as_ref(), format!("not a compaction record: {e}"));
                Ok(RecordRead::Malformed)
            }
        }
    }

    /// Merges each group's live parts into one, removes the parts replaced longer than the
    /// retention ago, and removes results of older versions of the groups this binary knows.
    pub async fn compact(&self) -> Result<CompactReport> {
        self.flush().await?;
        let mut report = CompactReport::default();
        for group in &stored_groups() {
            let live = self.live_parts(group).await?;
            if live.len() >= 2 {
                self.merge(group, &live, &mut report).await?;
            }
            self.remove_replaced(group, &mut report).await?;
            self.remove_old_versions(group, &mut report).await?;
        }
        Ok(report)
    }

    async fn merge(
        &self,
        group: &GroupSchema,
        parts: &[Path],
        report: &mut CompactReport,
    ) -> Result<()> {
        let mut newest: HashMap<String, StoredRow> = HashMap::new();
        let mut total = 0;
        for path in parts {
            let bytes = match self.store.get(path).await {
                Ok(found) => found.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match bytes {
                Ok(bytes) => bytes,
                // Replaced and removed by a compaction running beside this one: its merged
                // part holds these rows, and this group is left to it.
                Err(e) if gone(&e) => {
                    log::info!("{path} was compacted by another process meanwhile");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            for row in part::decode(group, bytes)? {
                total += 1;
                match newest.get(&row.fingerprint.path) {
                    Some(kept) if kept.analyzed_at >= row.analyzed_at => {}
                    _ => {
                        newest.insert(row.fingerprint.path.clone(), row);
                    }
                }
            }
        }
        let kept = newest.len();
        let classes = kept
            .div_ceil(self.merged_part_rows)
            .next_power_of_two()
            .min(BUCKETS as usize);
        let mut split: Vec<Vec<StoredRow>> = vec![Vec::new(); classes];
        for row in newest.into_values() {
            split[bucket_of(&row.fingerprint.path) as usize % classes].push(row);
        }
        split.retain(|rows| !rows.is_empty());
        if split.is_empty() {
            split.push(Vec::new());
        }
        let mut merged = Vec::with_capacity(split.len());
        for mut rows in split {
            rows.sort_by(|a, b| a.fingerprint.path.cmp(&b.fingerprint.path));
            let path = self.part_path(group, &rows);
            self.store
                .put(&path, PutPayload::from(part::encode(group, &rows)?))
                .await?;
            self.stats.parts_written.fetch_add(1, Ordering::Relaxed);
            merged.push(path);
        }
        let record = Record {
            merged: file_name(&merged[0]),
            merged_also: merged[1..].iter().map(file_name).collect(),
            replaced: parts.iter().map(file_name).collect(),
        };
        let json = serde_json::to_vec(&record)
            .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
        let record_path = self.version_dir(group).join(format!(
            "{RECORD_PREFIX}{:016}-{}-{:06}.json",
            now_micros(),
            self.writer,
            self.sequence.fetch_add(1, Ordering::Relaxed)
        ));
        self.store.put(&record_path, PutPayload::from(json)).await?;
        {
            let mut indexes = self.indexes_mut();
            let index = indexes.entry(group.name).or_default();
            index.parts.extend(merged);
            index.records.insert(record_path);
            index.replaced.extend(parts.iter().cloned());
        }
        report.parts_merged += parts.len();
        report.rows_kept += kept;
        report.rows_superseded += total - kept;
        Ok(())
    }

    /// Deletes the parts named by records older than the retention, then the records.
    async fn remove_replaced(&self, group: &GroupSchema, report: &mut CompactReport) -> Result<()> {
        let dir = self.version_dir(group);
        let records: Vec<ObjectMeta> = self
            .store
            .list(Some(&dir))
            .try_filter(|meta| futures::future::ready(is_record(&meta.location)))
            .try_collect()
            .await?;
        for meta in records {
            if !age_exceeds(&meta, self.retention) {
                continue;
            }
            let RecordRead::Replaced(parts) = self.read_record(&dir, &meta.location).await? else {
                continue;
            };
            for path in parts {
                match self.store.delete(&path).await {
                    Ok(()) => report.replaced_parts_removed += 1,
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.store.delete(&meta.location).await {
                Ok(()) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes the objects of `group`'s versions older than the current one, once they are
    /// older than the retention; other folders are left alone.
    async fn remove_old_versions(
        &self,
        group: &GroupSchema,
        report: &mut CompactReport,
    ) -> Result<()> {
        let folder = self.root.clone().join(group.name);
        let listing = match self.store.list_with_delimiter(Some(&folder)).await {
            Ok(listing) => listing,
            Err(e) if gone(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for dir in listing.common_prefixes {
            let older = dir
                .filename()
                .and_then(|name| name.strip_prefix('v'))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|v| v < group.version);
            if !older {
                continue;
            }
            let objects: Vec<ObjectMeta> = self.store.list(Some(&dir)).try_collect().await?;
            for meta in objects {
                if !age_exceeds(&meta, self.retention) {
                    continue;
                }
                match self.store.delete(&meta.location).await {
                    Ok(()) => report.stale_objects_removed += 1,
                    Err(e) if gone(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}
