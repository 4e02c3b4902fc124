//! PostgreSQL behaviour that clients rely on and DataFusion lacks: functions they call while
//! introspecting, catalog corrections, statement rewrites, parameter types, the connected
//! database's name and result columns of one name.

mod catalog;
mod catalog_functions;
mod database;
mod functions;
mod output_names;
mod parameters;
mod rewrite;

pub use catalog::correct_pg_catalog;
pub use database::{connect as connect_database, of as connected_database};
pub use functions::register;
pub use output_names::{
    alias_repeated_names_in, client_fields, client_response, is_repeated_name_error,
};
pub use parameters::infer_parameter_types;
pub use rewrite::rewrite;
