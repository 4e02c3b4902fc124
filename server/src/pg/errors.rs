//! Errors as PostgreSQL reports them: a SQLSTATE that clients and drivers can act on, and the
//! engine's message.

use std::ops::ControlFlow;

use audiolake::EngineError;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{visit_expressions, Expr, ObjectNamePart};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};

pub fn error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

pub const QUERY_CANCELED: &str = "57014";
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const SYNTAX_ERROR: &str = "42601";
pub const UNDEFINED_FUNCTION: &str = "42883";
pub const UNDEFINED_TABLE: &str = "42P01";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
pub const INVALID_SAVEPOINT_SPECIFICATION: &str = "3B001";

/// Gives an error of DataFusion or the engine (which pgwire would report as XX000, internal
/// error) the SQLSTATE PostgreSQL would use.
pub fn with_sqlstate(error: PgWireError) -> PgWireError {
    match error {
        PgWireError::ApiError(source) => {
            let code = if let Some(e) = source.downcast_ref::<DataFusionError>() {
                datafusion_code(e)
            } else if let Some(e) = source.downcast_ref::<EngineError>() {
                engine_code(e)
            } else if source.downcast_ref::<ParserError>().is_some() {
                SYNTAX_ERROR
            } else {
                "XX000"
            };
            self::error(code, source.to_string())
        }
        other => other,
    }
}

/// [`with_sqlstate`] for an error of planning `sql` in `state`: a planning error that names
/// a table or function the session does not have gets 42P01 or 42883, judged on the catalog
/// and the functions. (DataFusion reports both as plain planning errors, told apart only by
/// their text; `sql` is parsed again here, on the error path only.)
pub fn with_sqlstate_in(state: &SessionState, sql: &str, error: PgWireError) -> PgWireError {
    let PgWireError::ApiError(source) = &error else {
        return error;
    };
    let planning = source
        .downcast_ref::<DataFusionError>()
        .is_some_and(|e| matches!(e.find_root(), DataFusionError::Plan(_)));
    let code = planning
        .then(|| DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).ok())
        .flatten()
        .and_then(|statements| statements.iter().find_map(|s| missing_object(state, s)));
    match code {
        Some(code) => self::error(code, source.to_string()),
        None => with_sqlstate(error),
    }
}

/// 42P01 when `statement` reads a table the catalog does not have, 42883 when it calls a
/// function the session does not have, else `None`.
fn missing_object(state: &SessionState, statement: &DfStatement) -> Option<&'static str> {
    let tables = state.resolve_table_references(statement).ok()?;
    let missing_table = tables.iter().any(|table| {
        // A table function in FROM is listed among the relations too.
        let function =
            table.schema().is_none() && state.table_functions().contains_key(table.table());
        !function
            && !state
                .schema_for_ref(table.clone())
                .is_ok_and(|schema| schema.table_exist(table.table()))
    });
    if missing_table {
        return Some(UNDEFINED_TABLE);
    }
    let DfStatement::Statement(inner) = statement else {
        return None;
    };
    let known = |name: &str| {
        state.scalar_functions().contains_key(name)
            || state.aggregate_functions().contains_key(name)
            || state.window_functions().contains_key(name)
            || state.table_functions().contains_key(name)
    };
    let unknown = visit_expressions(inner.as_ref(), |expr| match expr {
        Expr::Function(function) => match function.name.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] => {
                let name = match ident.quote_style {
                    Some(_) => ident.value.clone(),
                    None => ident.value.to_lowercase(),
                };
                if known(&name) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            }
            // pg_catalog.f and the like: resolved elsewhere, so not judged here.
            _ => ControlFlow::Continue(()),
        },
        _ => ControlFlow::Continue(()),
    });
    unknown.is_break().then_some(UNDEFINED_FUNCTION)
}

/// An error of datafusion-postgres for a statement sent in a failed transaction block: it
/// refuses them with 25P01 (no active transaction), where PostgreSQL's code is 25P02.
pub fn in_failed_block(error: PgWireError) -> PgWireError {
    match error {
        PgWireError::UserError(mut info) if info.code == NO_ACTIVE_SQL_TRANSACTION => {
            info.code = IN_FAILED_SQL_TRANSACTION.to_owned();
            PgWireError::UserError(info)
        }
        other => other,
    }
}

pub fn from_engine(e: EngineError) -> PgWireError {
    error(engine_code(&e), e.to_string())
}

pub fn from_datafusion(e: DataFusionError) -> PgWireError {
    error(datafusion_code(&e), e.to_string())
}

fn engine_code(e: &EngineError) -> &'static str {
    match e {
        EngineError::LocationNotAllowed { .. } | EngineError::StoreInternals { .. } => {
            INSUFFICIENT_PRIVILEGE
        }
        EngineError::InvalidLocation { .. }
        | EngineError::InvalidOption(_)
        | EngineError::CredentialsInOptions { .. }
        | EngineError::Secret(_)
        | EngineError::Setting(_)
        | EngineError::UnknownGroup { .. }
        | EngineError::NoGroups
        | EngineError::GroupListTooLong { .. } => "22023",
        EngineError::Catalog { .. } => "58030",
        EngineError::Cluster(_) => "58000",
        EngineError::DataFusion(e) => datafusion_code(e),
    }
}

fn datafusion_code(e: &DataFusionError) -> &'static str {
    match e.find_root() {
        DataFusionError::SQL(..) => SYNTAX_ERROR,
        DataFusionError::NotImplemented(_) => FEATURE_NOT_SUPPORTED,
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::SchemaError(..) => "42703",
        // A missing table or function: see `from_planning`, which has the statement.
        DataFusionError::Plan(_) => "42000",
        DataFusionError::Configuration(_) => "22023",
        DataFusionError::ArrowError(e, _) => match e.as_ref() {
            ArrowError::DivideByZero => "22012",
            ArrowError::CastError(_) | ArrowError::ParseError(_) => "22P02",
            _ => "XX000",
        },
        DataFusionError::External(source) => match source.downcast_ref::<EngineError>() {
            Some(e) => engine_code(e),
            None => "XX000",
        },
        // The engine's guarded stores refuse a path outside the allowed locations with
        // PermissionDenied, during execution as at planning.
        DataFusionError::ObjectStore(e) => match e.as_ref() {
            datafusion::object_store::Error::PermissionDenied { .. }
            | datafusion::object_store::Error::Unauthenticated { .. } => INSUFFICIENT_PRIVILEGE,
            datafusion::object_store::Error::NotFound { .. } => "58P01",
            _ => "58030",
        },
        DataFusionError::IoError(_) => "58030",
        _ => "XX000",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::object_store::Error as StoreError;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn missing_tables_and_functions_are_found_in_the_catalog_not_the_message() {
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_information_schema(true),
        );
        ctx.sql("CREATE TABLE t AS VALUES (1)").await.unwrap();
        let state = ctx.state();
        let code = |sql: &str| {
            // The message says nothing: only the catalog can tell.
            let e = DataFusionError::Plan("something went wrong".into());
            match with_sqlstate_in(&state, sql, PgWireError::ApiError(Box::new(e))) {
                PgWireError::UserError(info) => info.code,
                other => panic!("{other}"),
            }
        };
        assert_eq!(code("SELECT * FROM nope"), UNDEFINED_TABLE);
        assert_eq!(
            code("SELECT * FROM t JOIN public.nope ON true"),
            UNDEFINED_TABLE
        );
        assert_eq!(
            code("WITH nope AS (SELECT 1) SELECT * FROM nope, t"),
            "42000"
        );
        assert_eq!(
            code("SELECT no_such_fn(column1) FROM t"),
            UNDEFINED_FUNCTION
        );
        assert_eq!(code("SELECT \"Abs\"(column1) FROM t"), UNDEFINED_FUNCTION);
        assert_eq!(code("SELECT ABS(column1), count(*) FROM t"), "42000");
        assert_eq!(code("SELECT * FROM generate_series(1, 3)"), "42000");
        assert_eq!(code("SELECT * FROM information_schema.tables"), "42000");
        assert_eq!(code("SELECT 1; SELECT * FROM nope"), UNDEFINED_TABLE);
        assert_eq!(code("not sql at all"), "42000");
    }

    #[test]
    fn store_errors_take_their_kind_s_sqlstate() {
        let refused = || {
            DataFusionError::ObjectStore(Box::new(StoreError::PermissionDenied {
                path: "file:///etc/passwd".into(),
                source: "outside the allowed locations".into(),
            }))
        };
        assert_eq!(datafusion_code(&refused()), INSUFFICIENT_PRIVILEGE);
        let in_context = DataFusionError::Context("reading".into(), Box::new(refused()));
        assert_eq!(datafusion_code(&in_context), INSUFFICIENT_PRIVILEGE);
        let missing = DataFusionError::ObjectStore(Box::new(StoreError::NotFound {
            path: "a.csv".into(),
            source: "gone".into(),
        }));
        assert_eq!(datafusion_code(&missing), "58P01");
    }
}
