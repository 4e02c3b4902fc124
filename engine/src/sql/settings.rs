//! Settings that `SET` and `SHOW` know besides DataFusion's own: `hnsw.ef_search` (pgvector),
//! `pg_trgm.similarity_threshold` and `pg_trgm.word_similarity_threshold` (pg_trgm), and
//! `audiolake.device` (where the pretrained networks run). Each is per session except
//! `audiolake.device`, which the engine applies to the whole process.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::SessionConfig;

extensions_options! {
    /// pgvector's HNSW search setting.
    pub struct HnswSettings {
        /// Candidates kept while searching an HNSW index (1 to 1000); at least k are used.
        pub ef_search: usize, default = crate::index::DEFAULT_EF_SEARCH
    }
}

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
    }
}

impl ConfigExtension for AudiolakeSettings {
    const PREFIX: &'static str = "audiolake";
}

/// `config` with every setting of this module at its default.
pub fn with_settings(config: SessionConfig) -> SessionConfig {
    config
        .with_option_extension(HnswSettings::default())
        .with_option_extension(TrgmSettings::default())
        .with_option_extension(AudiolakeSettings::default())
}

/// `hnsw.ef_search`, checked against pgvector's range.
pub fn ef_search(options: &ConfigOptions) -> Result<usize> {
    let ef = options
        .extensions
        .get::<HnswSettings>()
        .map_or(crate::index::DEFAULT_EF_SEARCH, |s| s.ef_search);
    if (1..=1000).contains(&ef) {
        Ok(ef)
    } else {
        Err(DataFusionError::Configuration(format!(
            "hnsw.ef_search must be between 1 and 1000, not {ef}"
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
