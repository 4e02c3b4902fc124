//! audiolake: an embeddable analytics database for audio collections.
//!
//! ```no_run
//! # async fn demo() -> Result<(), audiolake::EngineError> {
//! let lake = audiolake::AudioLake::builder()
//!     .store("./audiolake-data")
//!     .allow_location("/srv/music")
//!     .build()
//!     .await?;
//! lake.sql("CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION '/srv/music/'").await?;
//! let batches = lake
//!     .sql("SELECT path, duration_s FROM music ORDER BY duration_s DESC")
//!     .await?
//!     .collect()
//!     .await?;
//! # Ok(()) }
//! ```

#[cfg(feature = "distributed")]
pub use audiolake_engine::cluster;
pub use audiolake_engine::{
    audio, index, location, AnalyzeReport, CompactReport, Engine, EngineConfig, EngineError,
    FlushPolicy, Result, ScanProgress, StoreProblem, StoreStats, DEFAULT_RETENTION,
};
pub use audiolake_udf as udf;
pub use datafusion;

use datafusion::dataframe::DataFrame;

/// An opened audiolake: a store, its tables, and the roots it may read.
pub struct AudioLake {
    engine: Engine,
}

impl AudioLake {
    pub fn builder() -> AudioLakeBuilder {
        AudioLakeBuilder::default()
    }

    /// Runs `;`-separated statements in order; returns the last one's result, ready to
    /// `collect()` or stream. Tables created here are recorded in the store.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        self.engine.run(sql).await
    }

    /// Registers (or replaces) an AUDIO table for this session only, not recorded in the store.
    pub async fn register_audio_table(&self, name: &str, location: &str) -> Result<()> {
        self.engine.register_audio_table(name, location).await
    }

    /// Analyses every file of an AUDIO table into the feature store (see
    /// [`Engine::analyze_table`]).
    pub async fn analyze_table(&self, table: &str) -> Result<AnalyzeReport> {
        self.engine.analyze_table(table).await
    }

    /// Analyses every file of an AUDIO table with the feature groups named in `groups` only,
    /// e.g. `&["rhythm", "tonal"]` (see [`Engine::analyze_table_groups`]); the names are those
    /// of [`udf::features::GROUPS`].
    pub async fn analyze_table_groups<S: AsRef<str>>(
        &self,
        table: &str,
        groups: &[S],
    ) -> Result<AnalyzeReport> {
        self.engine.analyze_table_groups(table, groups).await
    }

    /// Publishes analysis results still buffered; call before dropping the lake after queries
    /// that stopped early (`LIMIT`).
    pub async fn flush(&self) -> Result<()> {
        self.engine.flush().await
    }

    /// The engine underneath, for its session, progress counters and warnings.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Settings of an [`AudioLake`]; every one has a default.
#[derive(Debug, Clone, Default)]
pub struct AudioLakeBuilder {
    config: EngineConfig,
}

impl AudioLakeBuilder {
    /// Where the catalog and results are kept: a local directory (default `./audiolake-data`)
    /// or an `s3://bucket/prefix`.
    pub fn store(mut self, location: impl Into<String>) -> Self {
        self.config.store = location.into();
        self
    }

    /// Allows reading and writing under `location` (a directory or bucket prefix). Nothing
    /// outside the allowed locations and the store can be read or written.
    pub fn allow_location(mut self, location: impl Into<String>) -> Self {
        self.config.allowed.push(location.into());
        self
    }

    /// Partitions per scan (default: the number of cores).
    pub fn target_partitions(mut self, n: usize) -> Self {
        self.config.target_partitions = Some(n);
        self
    }

    /// When analysis results are published to the feature store (default: every 64 files or
    /// 10 seconds, and at the end of each scan).
    pub fn flush_policy(mut self, policy: FlushPolicy) -> Self {
        self.config.flush = policy;
        self
    }

    /// How long `compact_store` keeps the parts it replaced (default one hour), so that
    /// readers that listed them a moment before still find them; zero deletes them at once.
    pub fn compact_retention(mut self, retention: std::time::Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// Bytes that query execution may hold at once across all queries (default: no limit); a
    /// query that needs more fails with a "Resources exhausted" error, and the others go on.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.config.memory_limit = Some(bytes);
        self
    }

    /// Where the pretrained networks run: `cpu` (default), `cuda` or `cuda:N` (needs the
    /// `cuda` feature); an unknown or missing device fails `build`.
    pub fn device(mut self, device: &str) -> Self {
        self.config.device = device.to_string();
        self
    }

    /// Patches per forward pass of the networks (default 64), shared by the files analysed
    /// at once.
    pub fn model_batch_size(mut self, patches: usize) -> Self {
        self.config.batch_size = patches.max(1);
        self
    }

    /// The networks run on at most `patches` 3 s patches per track, spread evenly over it
    /// (default 16; 0: every patch); sessions may change it with `SET
    /// audiolake.musicnn_max_patches`. More than 1200 fails `build`.
    pub fn musicnn_max_patches(mut self, patches: usize) -> Self {
        self.config.musicnn_max_patches = patches;
        self
    }

    /// The file where `CREATE SECRET` keeps S3 credentials, outside the store and readable by
    /// its owner only (default `~/.config/audiolake/secrets.json`).
    pub fn secrets_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.secrets_file = Some(path.into());
        self
    }

    /// Runs queries on the Ballista cluster whose scheduler is at `url` (`df://host:50050`):
    /// planned here, executed by its executors; the catalog stays here. The store must be
    /// shared object storage (`s3://...`) that every executor reaches too; a local store
    /// fails `build`. Needs the `distributed` feature.
    pub fn cluster(mut self, url: impl Into<String>) -> Self {
        self.config.cluster = Some(url.into());
        self
    }

    /// How long CSV, JSON and Parquet tables reuse the listing of their location (default one
    /// second): files other processes add or remove are seen once it expires, the lake's own
    /// writes at once. Zero lists at every query.
    pub fn listing_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.config.listing_ttl = ttl;
        self
    }

    /// Where vector index graphs of an `s3://` store are copied to be memory-mapped (default
    /// `$XDG_CACHE_HOME/audiolake/indexes`, else `~/.cache/audiolake/indexes`). A local
    /// store's graphs are mapped where they are.
    pub fn index_cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.index_cache = Some(dir.into());
        self
    }

    pub async fn build(self) -> Result<AudioLake> {
        Ok(AudioLake {
            engine: Engine::open(self.config).await?,
        })
    }
}
