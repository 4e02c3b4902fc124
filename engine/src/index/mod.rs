//! Vector indexes over embedding columns: [`HnswIndex`], an HNSW graph (Malkov & Yashunin) with pgvector's
//! parameters and metrics, filtered k-nearest-neighbour search that never returns fewer rows than
//! qualify, dead rows, and persistence to a folder or bytes; and their SQL side: `CREATE INDEX
//! ... USING hnsw` and `DROP INDEX` ([`ddl`]), the indexes kept in the store ([`registry`]), the
//! kNN rewrite ([`knn`]), `similar()` and the `audiolake_indexes` table; graph files are
//! memory-mapped from local disk ([`files`]).

pub(crate) mod ddl;
pub(crate) mod files;
mod hnsw;
pub(crate) mod knn;
mod passing;
pub(crate) mod registry;
pub(crate) mod similar;
pub(crate) mod system_table;
mod version;

pub use hnsw::{
    BuildInfo, Estimate, Filter, HnswIndex, IndexParams, IterativeScan, Metric, Neighbor,
    SearchOptions, SearchPlan, SearchResult,
};
pub use knn::calls_distance;
pub use registry::{parse_definition, IndexDefinition};

/// What went wrong building, searching, saving or loading an index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("invalid index parameter: {0}")]
    Parameter(String),

    #[error("row {id} has {got} dimensions, the index has {expected}")]
    Dimensions {
        id: u64,
        expected: usize,
        got: usize,
    },

    #[error("query vector has {got} dimensions, the index has {expected}")]
    QueryDimensions { expected: usize, got: usize },

    #[error("row {id} has a NaN or infinite element: vectors in an index must be finite")]
    NotFinite { id: u64 },

    #[error("query vector has a NaN or infinite element")]
    QueryNotFinite,

    #[error("row id {0} appears twice: each row of an index needs its own id")]
    DuplicateId(u64),

    #[error("index files in {dir}: {reason}")]
    Corrupt { dir: String, reason: String },

    #[error("index build cancelled")]
    Cancelled,

    #[error("index files: {0}")]
    Io(#[from] std::io::Error),
}
