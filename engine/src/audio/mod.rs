//! Audio files as rows: the AUDIO table format (listing, header probing, the scan, and the rule
//! that analyses only the rows a query keeps).

pub mod columns;
mod file_source;
mod late;
mod opener;
pub(crate) mod read;
pub(crate) mod read_through;
pub(crate) mod source;
mod table;

#[cfg(feature = "distributed")]
pub(crate) use file_source::{AudioSource, ScanSpec};
pub use late::LateAnalysis;
pub use table::{AudioTable, AudioTableFactory, LocalFolder, TableSpec, DEFAULT_EXTENSIONS};
