//! The cache of table listings that CSV, JSON and Parquet tables read instead of listing their
//! location at every query. An entry lives a short while (files other processes add or remove
//! show up once it expires) and every write the engine makes empties the cache, so the engine's
//! own `INSERT`, `COPY ... TO` and published results are seen by the next query at once.

use std::sync::Arc;
use std::time::Duration;

use datafusion::common::{HashMap, Result, TableReference};
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, CachedFileList, ListFilesCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::cache::{Cache, CacheEntryInfo, TableScopedPath};

/// How long a listing is reused unless the engine writes meanwhile.
pub const DEFAULT_LISTING_TTL: Duration = Duration::from_secs(1);

/// The longest lifetime: DataFusion adds it to the clock, which panics on overflow (inside the
/// cache's lock, which every later query would then find poisoned).
pub const MAX_LISTING_TTL: Duration = Duration::from_secs(24 * 3600);

/// Bytes of listings kept (about 300,000 files' metadata); a larger listing is not cached.
const LISTINGS_BYTES: usize = 64 * 1024 * 1024;

pub struct Listings {
    entries: DefaultCache<TableScopedPath, CachedFileList>,
}

impl std::fmt::Debug for Listings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listings({} entries)", self.entries.len())
    }
}

impl Listings {
    /// Listings kept for `ttl`, which must be at most [`MAX_LISTING_TTL`].
    pub fn new(ttl: Duration) -> Result<Arc<Self>, String> {
        if ttl > MAX_LISTING_TTL {
            return Err(format!(
                "the listing lifetime must be at most {} s, not {} s",
                MAX_LISTING_TTL.as_secs(),
                ttl.as_secs()
            ));
        }
        Ok(Arc::new(Self {
            entries: DefaultCache::new_with_ttl(LISTINGS_BYTES, Some(ttl)),
        }))
    }

    /// Forgets every listing: the engine wrote, created or dropped something.
    pub fn forget(&self) {
        self.entries.clear();
    }

    /// The runtime's cache settings with this cache for listings; none when the lifetime is
    /// zero (every query lists).
    pub fn runtime_caches(self: &Arc<Self>) -> CacheManagerConfig {
        let caches = CacheManagerConfig::default();
        match self.entries.cache_ttl() {
            Some(ttl) if !ttl.is_zero() => caches
                .with_list_files_cache(Some(Arc::clone(self) as Arc<ListFilesCache>))
                .with_list_files_cache_limit(LISTINGS_BYTES),
            _ => caches.with_list_files_cache_limit(0),
        }
    }
}

impl Cache<TableScopedPath, CachedFileList> for Listings {
    fn get(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        self.entries.get(key)
    }

    /// A listing made for no named table is not kept: its key has the path but not the store,
    /// so the same path in another bucket would read it.
    fn put(&self, key: &TableScopedPath, value: CachedFileList) -> Option<CachedFileList> {
        key.table.as_ref()?;
        self.entries.put(key, value)
    }

    fn remove(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        self.entries.remove(key)
    }

    fn contains_key(&self, key: &TableScopedPath) -> bool {
        self.entries.contains_key(key)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&self) {
        self.entries.clear()
    }

    fn name(&self) -> String {
        "audiolake listings".to_string()
    }

    fn cache_limit(&self) -> usize {
        self.entries.cache_limit()
    }

    fn update_cache_limit(&self, limit: usize) {
        self.entries.update_cache_limit(limit)
    }

    fn cache_ttl(&self) -> Option<Duration> {
        self.entries.cache_ttl()
    }

    /// `SET datafusion.runtime.list_files_cache_ttl` lands here, unchecked: bounded, since
    /// this trait cannot refuse it.
    fn update_cache_ttl(&self, ttl: Option<Duration>) {
        self.entries
            .update_cache_ttl(Some(ttl.unwrap_or(MAX_LISTING_TTL).min(MAX_LISTING_TTL)))
    }

    fn drop_table_entries(&self, table: &TableReference) -> Result<()> {
        self.entries.drop_table_entries(table)
    }

    fn list_entries(&self) -> HashMap<TableScopedPath, CacheEntryInfo<CachedFileList>> {
        self.entries.list_entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;
    use object_store::ObjectMeta;

    fn key(table: Option<&str>) -> TableScopedPath {
        TableScopedPath {
            table: table.map(TableReference::from),
            path: Path::from("data/t"),
        }
    }

    /// A listing of one file (an empty one has size 0, which the cache refuses).
    fn one_file() -> CachedFileList {
        CachedFileList::new(vec![ObjectMeta {
            location: Path::from("data/t/a.parquet"),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        }])
    }

    #[test]
    fn only_named_tables_listings_are_kept_and_forget_empties_them() {
        let listings = Listings::new(Duration::from_secs(60)).unwrap();
        listings.put(&key(None), one_file());
        assert!(listings.get(&key(None)).is_none());
        listings.put(&key(Some("t")), one_file());
        assert!(listings.get(&key(Some("t"))).is_some());
        listings.forget();
        assert!(listings.get(&key(Some("t"))).is_none());
    }

    #[test]
    fn a_lifetime_past_the_clock_is_refused_or_bounded() {
        let huge = Duration::from_secs(u64::MAX);
        assert_eq!(
            Listings::new(huge).unwrap_err(),
            format!(
                "the listing lifetime must be at most 86400 s, not {} s",
                u64::MAX
            )
        );
        let listings = Listings::new(Duration::from_secs(60)).unwrap();
        listings.update_cache_ttl(Some(huge));
        assert_eq!(listings.cache_ttl(), Some(MAX_LISTING_TTL));
        listings.put(&key(Some("t")), one_file());
        assert!(listings.get(&key(Some("t"))).is_some());
    }
}
