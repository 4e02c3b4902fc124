//! Compaction: each group's current version merged into one part holding the newest row per
//! path, and the parts of versions no longer in use removed. Safe while readers run: the
//! merged part is published before the parts it replaces are deleted, and a reader that finds
//! a listed part gone lists again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use datafusion::error::Result;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::{part, stored_groups, FeatureStore, StoredRow};

/// What a compaction did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Parts replaced by merged ones.
    pub parts_merged: usize,
    /// Rows kept (the newest per path and group).
    pub rows_kept: usize,
    /// Rows dropped because a newer analysis of the same path exists.
    pub rows_superseded: usize,
    /// Objects removed because their group version is no longer in use.
    pub stale_objects_removed: usize,
}

impl FeatureStore {
    /// Merges small parts and drops results of versions no longer in use.
    pub async fn compact(&self) -> Result<CompactReport> {
        self.flush().await?;
        let mut report = CompactReport::default();
        let groups = stored_groups();
        for group in &groups {
            let dir = self.version_dir(group);
            let parts: Vec<Path> = self
                .store
                .list(Some(&dir))
                .map_ok(|m| m.location)
                .try_collect::<Vec<_>>()
                .await?
                .into_iter()
                .filter(|p| p.extension() == Some("parquet"))
                .collect();
            if parts.len() < 2 {
                continue;
            }
            let mut newest: HashMap<String, StoredRow> = HashMap::new();
            let mut total = 0;
            for path in &parts {
                let bytes = self.store.get(path).await?.bytes().await?;
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
            let mut rows: Vec<StoredRow> = newest.into_values().collect();
            rows.sort_by(|a, b| a.fingerprint.path.cmp(&b.fingerprint.path));
            let merged = self.part_path(group);
            self.store
                .put(&merged, PutPayload::from(part::encode(group, &rows)?))
                .await?;
            self.stats.parts_written.fetch_add(1, Ordering::Relaxed);
            for path in &parts {
                self.store.delete(path).await?;
            }
            {
                let mut indexes = self.indexes.write().expect("index lock");
                let index = indexes.entry(group.name).or_default();
                for path in &parts {
                    index.parts.remove(path);
                }
                index.parts.insert(merged);
            }
            report.parts_merged += parts.len();
            report.rows_kept += rows.len();
            report.rows_superseded += total - rows.len();
        }

        let in_use: Vec<Path> = groups.iter().map(|g| self.version_dir(g)).collect();
        let all: Vec<Path> = self
            .store
            .list(Some(&self.root))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for path in all {
            if !in_use.iter().any(|dir| path.prefix_matches(dir)) {
                self.store.delete(&path).await?;
                report.stale_objects_removed += 1;
            }
        }
        Ok(report)
    }
}
