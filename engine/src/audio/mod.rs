//! Audio files as rows: the AUDIO table format (listing, header probing, the scan).

pub mod columns;
pub(crate) mod read;
pub(crate) mod read_through;
mod scan;
pub(crate) mod source;
mod table;

pub use table::{AudioTable, AudioTableFactory, DEFAULT_EXTENSIONS};
