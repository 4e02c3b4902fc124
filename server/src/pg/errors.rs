//! Errors as PostgreSQL reports them: a SQLSTATE that clients and drivers can act on, and the
//! engine's message.

use audiolake::EngineError;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
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
        DataFusionError::Plan(message) if message.contains("not found") => {
            if message.starts_with("table") || message.contains("table '") {
                "42P01"
            } else {
                "42883"
            }
        }
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
