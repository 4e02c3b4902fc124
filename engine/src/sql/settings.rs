//! Settings that `SET` and `SHOW` know besides DataFusion's own: `hnsw.ef_search`,
//! `hnsw.iterative_scan` and `hnsw.max_scan_tuples` (pgvector),
//! `pg_trgm.similarity_threshold` and `pg_trgm.word_similarity_threshold` (pg_trgm),
//! `audiolake.device` (where the pretrained networks run), `audiolake.decode_max_seconds`
//! (the most audio one `decode(path)` returns), `audiolake.musicnn_max_patches` (the
//! patches the networks run on per track) and `audiolake.index_build_threads` (the threads an
//! index build runs on). Each is per session except `audiolake.device`, which the engine
//! applies to the whole process (and, through the server, `audiolake.index_build_threads`,
//! since index statements run in the engine's own session there).

use std::any::Any;

use audiolake_udf::features::{musicnn, AnalysisOptions};
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::common::extensions_options;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

use crate::index::{IterativeScan, SearchOptions};

extensions_options! {
    /// pgvector's HNSW search settings.
    pub struct HnswSettings {
        /// Candidates kept while searching an HNSW index (1 to 1000); at least k are used.
        pub ef_search: usize, default = DEFAULT_EF_SEARCH
        /// What a filtered index scan does when too few of its candidates pass: `off`,
        /// `relaxed_order` (the default) or `strict_order`.
        pub iterative_scan: IterativeScan, default = IterativeScan::default()
        /// Rows an iterative index scan measures at most (1 to 2147483647).
        pub max_scan_tuples: usize, default = DEFAULT_MAX_SCAN_TUPLES
    }
}

/// pgvector's default `hnsw.ef_search`.
pub const DEFAULT_EF_SEARCH: usize = 40;
/// pgvector's largest `hnsw.ef_search`; the index refuses more too.
pub const EF_SEARCH_MAX: usize = 1000;
/// pgvector's default `hnsw.max_scan_tuples`.
pub const DEFAULT_MAX_SCAN_TUPLES: usize = 20_000;
/// pgvector's largest `hnsw.max_scan_tuples` (a PostgreSQL int).
pub const MAX_SCAN_TUPLES_MAX: usize = i32::MAX as usize;

// Checked when set: an unknown mode is an error at `SET`, not at the next query.
datafusion::common::config_field!(
    IterativeScan,
    value => value
        .parse::<IterativeScan>()
        .map_err(|e| DataFusionError::Configuration(e.to_string()))?
);

impl ConfigExtension for HnswSettings {
    const PREFIX: &'static str = "hnsw";
}

extensions_options! {
    /// pg_trgm's thresholds.
    pub struct TrgmSettings {
        /// `a % b` is true when `similarity(a, b)` reaches this (0 to 1).
        pub similarity_threshold: f64, default = audiolake_udf::trgm::DEFAULT_SIMILARITY_THRESHOLD
        /// `a <% b` is true when `word_similarity(a, b)` reaches this (0 to 1).
        pub word_similarity_threshold: f64, default = audiolake_udf::trgm::DEFAULT_WORD_SIMILARITY_THRESHOLD
    }
}

impl ConfigExtension for TrgmSettings {
    const PREFIX: &'static str = "pg_trgm";
}

extensions_options! {
    /// audiolake's own settings.
    pub struct AudiolakeSettings {
        /// Where the pretrained networks run: `cpu`, `cuda` or `cuda:N` (for every session:
        /// the engine applies it when the statement runs). Empty: the configured device.
        pub device: String, default = String::new()
        /// The most audio one `decode(path)` call returns, in seconds (per row; up to a day).
        pub decode_max_seconds: f64, default = DEFAULT_DECODE_MAX_SECONDS
        /// The networks of the musicnn group run on at most this many 3 s patches per track,
        /// spread evenly over it; 0: every patch.
        pub musicnn_max_patches: usize, default = musicnn::DEFAULT_MAX_PATCHES
        /// Threads an index build inserts rows on (like PostgreSQL's
        /// `max_parallel_maintenance_workers`); 0: every core.
        pub index_build_threads: usize, default = 0
    }
}

/// The most threads `audiolake.index_build_threads` may ask for.
pub const INDEX_BUILD_THREADS_MAX: usize = 1024;

/// `audiolake.index_build_threads`: `None` for every core, else the threads asked for (at
/// most [`INDEX_BUILD_THREADS_MAX`]).
pub fn index_build_threads(options: &ConfigOptions) -> Result<Option<usize>> {
    let threads = options
        .extensions
        .get::<AudiolakeSettings>()
        .map_or(0, |s| s.index_build_threads);
    match threads {
        0 => Ok(None),
        1..=INDEX_BUILD_THREADS_MAX => Ok(Some(threads)),
        _ => Err(DataFusionError::Configuration(format!(
            "audiolake.index_build_threads must be between 0 (every core) and \
             {INDEX_BUILD_THREADS_MAX}, not {threads}"
        ))),
    }
}

/// Ten minutes: a 44.1 kHz track is then at most about 100 MB of samples.
pub const DEFAULT_DECODE_MAX_SECONDS: f64 = 600.0;

/// `audiolake.decode_max_seconds`, checked to be more than 0 and at most a day.
pub fn decode_max_seconds(options: &ConfigOptions) -> Result<f64> {
    let seconds = options
        .extensions
        .get::<AudiolakeSettings>()
        .map_or(DEFAULT_DECODE_MAX_SECONDS, |s| s.decode_max_seconds);
    if seconds > 0.0 && seconds <= 86_400.0 {
        Ok(seconds)
    } else {
        Err(DataFusionError::Configuration(format!(
            "audiolake.decode_max_seconds must be more than 0 and at most 86400, not {seconds}"
        )))
    }
}

/// `audiolake.musicnn_max_patches`, checked to be at most the patches a track keeps.
pub fn musicnn_max_patches(options: &ConfigOptions) -> Result<usize> {
    let max = options
        .extensions
        .get::<AudiolakeSettings>()
        .map_or(musicnn::DEFAULT_MAX_PATCHES, |s| s.musicnn_max_patches);
    check_musicnn_max_patches(max).map_err(DataFusionError::Configuration)
}

/// The range of `audiolake.musicnn_max_patches`, with the message for a value outside it.
pub fn check_musicnn_max_patches(max: usize) -> std::result::Result<usize, String> {
    match max <= musicnn::MAX_PATCHES {
        true => Ok(max),
        false => Err(format!(
            "audiolake.musicnn_max_patches must be between 0 (every patch) and {}, not {max}",
            musicnn::MAX_PATCHES
        )),
    }
}

/// The analysis options of a session's settings.
pub fn analysis_options(options: &ConfigOptions) -> Result<AnalysisOptions> {
    Ok(AnalysisOptions {
        musicnn_max_patches: musicnn_max_patches(options)?,
    })
}

impl ConfigExtension for AudiolakeSettings {
    const PREFIX: &'static str = "audiolake";
}

/// An extension's settings listed under their full names (`hnsw.ef_search`). DataFusion lists
/// an extension's entries without its prefix, so `SHOW hnsw.ef_search` and
/// `information_schema.df_settings` would not find them. It is transparent otherwise:
/// `extensions.get::<T>()` still finds `T`.
#[derive(Debug, Clone, Default)]
struct Named<T>(T);

impl<T: ConfigExtension + Clone> ExtensionOptions for Named<T> {
    fn as_any(&self) -> &dyn Any {
        self.0.as_any()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self.0.as_any_mut()
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.0.set(key, value)
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.0
            .entries()
            .into_iter()
            .map(|entry| ConfigEntry {
                key: format!("{}.{}", T::PREFIX, entry.key.trim_start_matches('.')),
                ..entry
            })
            .collect()
    }
}

impl<T: ConfigExtension + Clone> ConfigExtension for Named<T> {
    const PREFIX: &'static str = T::PREFIX;
}

/// `config` with every setting of this module at its default.
pub fn with_settings(config: SessionConfig) -> SessionConfig {
    config
        .with_option_extension(Named(HnswSettings::default()))
        .with_option_extension(Named(TrgmSettings::default()))
        .with_option_extension(Named(AudiolakeSettings::default()))
}

/// The session's index search settings, checked against pgvector's ranges.
pub fn search_options(options: &ConfigOptions) -> Result<SearchOptions> {
    let max_scan_tuples = options
        .extensions
        .get::<HnswSettings>()
        .map_or(DEFAULT_MAX_SCAN_TUPLES, |s| s.max_scan_tuples);
    if !(1..=MAX_SCAN_TUPLES_MAX).contains(&max_scan_tuples) {
        return Err(DataFusionError::Configuration(format!(
            "hnsw.max_scan_tuples must be between 1 and {MAX_SCAN_TUPLES_MAX}, not {max_scan_tuples}"
        )));
    }
    Ok(SearchOptions {
        ef_search: ef_search(options)?,
        iterative_scan: options
            .extensions
            .get::<HnswSettings>()
            .map_or_else(IterativeScan::default, |s| s.iterative_scan),
        max_scan_tuples,
    })
}

/// `hnsw.ef_search`, checked against pgvector's range.
fn ef_search(options: &ConfigOptions) -> Result<usize> {
    let ef = options
        .extensions
        .get::<HnswSettings>()
        .map_or(DEFAULT_EF_SEARCH, |s| s.ef_search);
    let max = EF_SEARCH_MAX;
    if (1..=max).contains(&ef) {
        Ok(ef)
    } else {
        Err(DataFusionError::Configuration(format!(
            "hnsw.ef_search must be between 1 and {max}, not {ef}"
        )))
    }
}

/// A pg_trgm threshold, checked to lie in 0..=1 as PostgreSQL does.
pub fn trgm_threshold(options: &ConfigOptions, word: bool) -> Result<f64> {
    let settings = options.extensions.get::<TrgmSettings>();
    let (name, value) = match (word, settings) {
        (false, Some(s)) => ("similarity_threshold", s.similarity_threshold),
        (true, Some(s)) => ("word_similarity_threshold", s.word_similarity_threshold),
        (false, None) => (
            "similarity_threshold",
            audiolake_udf::trgm::DEFAULT_SIMILARITY_THRESHOLD,
        ),
        (true, None) => (
            "word_similarity_threshold",
            audiolake_udf::trgm::DEFAULT_WORD_SIMILARITY_THRESHOLD,
        ),
    };
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(DataFusionError::Configuration(format!(
            "pg_trgm.{name} must be between 0 and 1, not {value}"
        )))
    }
}
