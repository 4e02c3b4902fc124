//! PostgreSQL behaviour that clients rely on and DataFusion lacks: functions they call while
//! introspecting, catalog corrections, and statement rewrites.

mod catalog;
mod functions;
mod rewrite;

pub use catalog::correct_pg_catalog;
pub use functions::register;
pub use rewrite::rewrite;
