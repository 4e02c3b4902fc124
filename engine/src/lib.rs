//! DataFusion integration of audiolake: the `AUDIO` table format and its scan, the SQL functions
//! on paths, guarded object stores, the persisted catalog, and the [`Engine`] that runs
//! statements over them, and vector indexes ([`index`]).

pub mod audio;
mod cancel;
mod catalog;
mod clock;
#[cfg(feature = "distributed")]
pub mod cluster;
mod durable;
mod engine;
mod error;
mod functions;
mod groups;
pub mod index;
mod jobs;
mod listings;
pub mod location;
mod object_stores;
pub mod problems;
mod progress;
mod secrets;
mod small_inputs;
mod snapshot;
pub mod sql;
mod store;

pub use catalog::{parse_record, TableRecord};
pub use engine::{Engine, EngineConfig};
pub use error::{EngineError, Result};
pub use jobs::AnalyzeReport;
pub use problems::StoreProblem;
pub use progress::ScanProgress;
pub use store::{
    parse_part, CompactReport, FeatureStore, FlushPolicy, StoreStats, DEFAULT_RETENTION,
};
