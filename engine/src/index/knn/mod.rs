//! Index kNN scans: the analyzer rule that finds `ORDER BY <distance>(column, <constant or
//! scalar subquery>) LIMIT k` over an indexed column, and the scan that answers it from the
//! index ([`HnswScanExec`], shown in `EXPLAIN`).
//!
//! The rule swaps the table under the query for a [`KnnTable`] and leaves the filter, sort and
//! limit in place, so the rows it lets through are re-ranked exactly. The scan returns the k
//! nearest rows that satisfy the query's `WHERE`. While the table's files are those of the
//! build (its [version](super::version)) and there is no `WHERE`, every indexed row exists as
//! it was; otherwise the scan reads which rows exist and qualify (the key column and the
//! predicate), compares rows added since the build exactly and skips rows gone since. It then
//! searches the graph with that filter. The k rows come from the index itself when the query
//! needs only the key and a float4 vector the index holds exactly, and from the table
//! otherwise; when fewer than k are found every qualifying row is let through, so the result
//! is never short, unless a filtered graph search was cut short on purpose
//! (`hnsw.iterative_scan = off`, `hnsw.max_scan_tuples`), as pgvector's would be. The metric `table_reads` (`EXPLAIN ANALYZE`) counts the table reads.
//!
//! [`rule`] finds the query shape and swaps the table for a [`table::KnnTable`], whose scan is
//! [`exec::HnswScanExec`]; [`search`] answers one [`KnnQuery`] from the index and the table;
//! [`query_vector`] evaluates the query's constant vector; [`session`] runs the plans the scan
//! needs of its own.

mod exec;
mod query_vector;
mod rule;
mod search;
mod session;
mod table;

pub use query_vector::{evaluate_vector, vector_of};
pub use rule::{calls_distance, KnnRule};
pub use search::{nearest, KnnQuery};
pub use session::session_state;
