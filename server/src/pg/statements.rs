//! What a client's statement is: where it runs (the connection's session, or the engine, which
//! checks locations and records tables in the store), whether it writes, and the options of a
//! `COPY ... TO STDOUT`.

use std::sync::LazyLock;

use audiolake::Engine;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Expr as SqlExpr,
    Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectType, Set, Statement,
    Value,
};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

use super::compat;

/// Where a statement runs.
#[derive(Debug)]
pub enum Route {
    /// The connection's own DataFusion session (through datafusion-postgres).
    Session,
    /// The shared engine: `CREATE EXTERNAL TABLE`, `DROP TABLE`, `CREATE INDEX`, `DROP INDEX`,
    /// `COPY ... TO 'location'`.
    Engine(DfStatement),
    /// `COPY (query) TO STDOUT`, answered by this server.
    CopyOut(CopyOut),
    /// `CALL analyze_table('t')` or `CALL stop_analysis('t')`, or why the call is not one.
    Call(Result<Call, CallError>),
    /// `SAVEPOINT`, `RELEASE SAVEPOINT` or `ROLLBACK TO SAVEPOINT`, answered by this server.
    Savepoint(Savepoint),
}

/// A savepoint statement, with the savepoint's name as PostgreSQL folds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Savepoint {
    Create(String),
    Release(String),
    RollbackTo(String),
}

/// A background analysis job started or stopped by `CALL` (see `background.rs`).
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Analyze(String),
    Stop(String),
}

/// A `CALL` of something else, or with the wrong arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    UnknownProcedure(String),
    Arguments(String),
}

#[derive(Debug)]
pub struct Classified {
    pub route: Route,
    /// Whether a read-only user is refused this statement.
    pub writes: bool,
    /// The statement's text, for running it on its own.
    pub text: String,
    /// Whether `text` was rewritten for PostgreSQL compatibility (see `compat::rewrite`).
    pub rewritten: bool,
    /// Whether the statement is a query (`SELECT`, `VALUES`, ...), which the session runs on
    /// its query path.
    pub query: bool,
    /// For statements the session runs, what DataFusion will plan for it: the statement, or a
    /// `DECLARE`d cursor's query (planned at `FETCH`). A read-only user's is judged on its plan.
    pub runs: Option<DfStatement>,
}

/// `COPY (query) TO STDOUT` with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyOut {
    pub query: String,
    pub csv: bool,
    pub header: bool,
    pub delimiter: char,
    pub null: String,
}

/// Classifies `sql`, statement by statement. DataFusion's parser is tried first (it knows
/// `CREATE EXTERNAL TABLE` and `COPY ... TO 'location'`), then the PostgreSQL-compatibility
/// parser of datafusion-postgres (catalog queries of clients, `COPY ... TO STDOUT`). `None`
/// when neither understands it: the session then reports the syntax error.
pub fn classify(engine: &Engine, sql: &str) -> Option<Result<Vec<Classified>, String>> {
    if let Ok(statements) = engine.parse(sql) {
        return Some(Ok(statements
            .into_iter()
            .map(
                |statement| match show_extension_setting(engine, &statement) {
                    Some(query) => Classified {
                        rewritten: true,
                        ..classify_df(engine, query)
                    },
                    None => classify_df(engine, statement),
                },
            )
            .collect()));
    }
    let statements = pg_parser().parse(sql).ok()?;
    Some(
        statements
            .into_iter()
            .map(|mut statement| {
                let writes = !is_read(&statement) || !read_only_may_set(engine, &statement);
                let rewritten = compat::rewrite(&mut statement);
                let text = statement.to_string();
                let query = matches!(statement, Statement::Query(_));
                let (route, runs) = match copy_out(&statement) {
                    Some(copy) => (Route::CopyOut(copy?), None),
                    None => (Route::Session, Some(what_runs(statement))),
                };
                Ok(Classified {
                    route,
                    writes,
                    text,
                    rewritten,
                    query,
                    runs,
                })
            })
            .collect(),
    )
}

/// datafusion-postgres's parser, made once: making one parses the client queries it replaces.
pub fn pg_parser() -> &'static PostgresCompatibilityParser {
    static PARSER: LazyLock<PostgresCompatibilityParser> =
        LazyLock::new(PostgresCompatibilityParser::new);
    &PARSER
}

fn rewrite_df(statement: &mut DfStatement) -> bool {
    match statement {
        DfStatement::Statement(inner) => compat::rewrite(inner),
        DfStatement::Explain(explain) => rewrite_df(&mut explain.statement),
        _ => false,
    }
}

fn classify_df(engine: &Engine, mut statement: DfStatement) -> Classified {
    let rewritten = rewrite_df(&mut statement);
    let text = statement.to_string();
    let query = matches!(&statement, DfStatement::Statement(inner)
        if matches!(inner.as_ref(), Statement::Query(_)));
    if let DfStatement::Statement(inner) = &statement {
        if let Statement::Call(function) = inner.as_ref() {
            return Classified {
                route: Route::Call(call(function)),
                writes: true,
                text,
                rewritten,
                query,
                runs: None,
            };
        }
        if let Some(savepoint) = savepoint(inner) {
            return Classified {
                route: Route::Savepoint(savepoint),
                writes: false,
                text,
                rewritten,
                query,
                runs: None,
            };
        }
    }
    let (writes, engine) = match &statement {
        DfStatement::CreateExternalTable(_) | DfStatement::CopyTo(_) => (true, true),
        DfStatement::Statement(inner) => (
            !is_read(inner) || !read_only_may_set(engine, inner),
            matches!(
                inner.as_ref(),
                Statement::Drop {
                    object_type: ObjectType::Table | ObjectType::Index,
                    ..
                } | Statement::CreateIndex(_)
                    | Statement::CreateSecret { .. }
                    | Statement::DropSecret { .. }
            ) || sets_engine_setting(inner)
                || reindexes(inner),
        ),
        // EXPLAIN ANALYZE runs its statement: the engine checks its locations the same way.
        DfStatement::Explain(explain) => {
            let inner = classify_df(engine, *explain.statement.clone());
            (inner.writes, matches!(inner.route, Route::Engine(_)))
        }
        DfStatement::Reset(_) => (false, false),
    };
    let (route, runs) = match (engine, statement) {
        (true, statement) => (Route::Engine(statement), None),
        (false, DfStatement::Statement(inner)) => (Route::Session, Some(what_runs(*inner))),
        (false, statement) => (Route::Session, Some(statement)),
    };
    Classified {
        route,
        writes,
        text,
        rewritten,
        query,
        runs,
    }
}

/// What DataFusion plans when the session runs `statement`: a cursor's query for `DECLARE`.
fn what_runs(statement: Statement) -> DfStatement {
    let query = match &statement {
        Statement::Declare { stmts } => stmts.iter().find_map(|d| d.for_query.clone()),
        _ => None,
    };
    DfStatement::Statement(Box::new(query.map_or(statement, Statement::Query)))
}

/// `SHOW hnsw.ef_search` and the engine's other extension settings (`pg_trgm.*`,
/// `audiolake.*`) as a query of `information_schema.df_settings`, answered like PostgreSQL's
/// `SHOW`: one row, one column named after the setting. datafusion-postgres answers `SHOW`
/// itself and knows only its own settings. `None` for every other statement.
fn show_extension_setting(engine: &Engine, statement: &DfStatement) -> Option<DfStatement> {
    let DfStatement::Statement(inner) = statement else {
        return None;
    };
    let Statement::ShowVariable { variable } = inner.as_ref() else {
        return None;
    };
    let name = variable
        .iter()
        .map(|part| part.value.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".");
    let known = !name.starts_with("datafusion.")
        && engine
            .session()
            .state()
            .config_options()
            .entries()
            .iter()
            .any(|entry| entry.key == name);
    if !known {
        return None;
    }
    let query = format!(
        "SELECT value AS \"{name}\" FROM information_schema.df_settings WHERE name = '{name}'"
    );
    engine.parse(&query).ok()?.pop_front()
}

/// Settings of the engine's own session, not a connection's: `audiolake.device` (applied to
/// the process) and `audiolake.index_build_threads` (read by the index statements, which run in
/// the engine's session).
const ENGINE_SETTINGS: [&str; 2] = ["audiolake.device", "audiolake.index_build_threads"];

/// A `SET` of one of [`ENGINE_SETTINGS`], which the engine applies (and whose errors must reach
/// the client: datafusion-postgres ignores failed `SET`s).
fn sets_engine_setting(statement: &Statement) -> bool {
    matches!(statement, Statement::Set(Set::SingleAssignment { variable, .. })
        if ENGINE_SETTINGS.iter().any(|name| variable.to_string().eq_ignore_ascii_case(name)))
}

/// `REINDEX INDEX name`, which the engine's dialect reads as the `VACUUM` statement's `REINDEX`
/// form; not a read, so a read-only user is refused it.
fn reindexes(statement: &Statement) -> bool {
    matches!(statement, Statement::Vacuum(vacuum) if vacuum.reindex)
}

/// Whether a read-only user may run `statement`, if it is a `SET`: settings of the session's
/// own behaviour, not of the server's resources or the process. Refused are the
/// [`ENGINE_SETTINGS`] (every session's), `datafusion.runtime.*` (memory pool, spill directory
/// and limits) and a `datafusion.execution.target_partitions` above the server's.
fn read_only_may_set(engine: &Engine, statement: &Statement) -> bool {
    let Statement::Set(set) = statement else {
        return true;
    };
    let assignments: Vec<(String, Option<&SqlExpr>)> = match set {
        Set::SingleAssignment {
            variable, values, ..
        } => vec![(variable.to_string(), values.first())],
        Set::ParenthesizedAssignments { variables, values } => variables
            .iter()
            .enumerate()
            .map(|(i, variable)| (variable.to_string(), values.get(i)))
            .collect(),
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .map(|a| (a.name.to_string(), Some(&a.value)))
            .collect(),
        _ => Vec::new(),
    };
    let partitions = engine.session().state().config().target_partitions();
    assignments.into_iter().all(|(name, value)| {
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            name if ENGINE_SETTINGS.contains(&name) => false,
            "datafusion.execution.target_partitions" => {
                let asked = value.map(|v| v.to_string().trim_matches('\'').to_owned());
                matches!(asked.and_then(|v| v.parse::<usize>().ok()), Some(n) if (1..=partitions).contains(&n))
            }
            name => !name.starts_with("datafusion.runtime."),
        }
    })
}

/// The savepoint statement `statement` is, if it is one.
fn savepoint(statement: &Statement) -> Option<Savepoint> {
    // Unquoted names fold to lower case, as every PostgreSQL identifier does.
    let name = |ident: &Ident| match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    };
    match statement {
        Statement::Savepoint { name: n } => Some(Savepoint::Create(name(n))),
        Statement::ReleaseSavepoint { name: n } => Some(Savepoint::Release(name(n))),
        Statement::Rollback {
            savepoint: Some(n), ..
        } => Some(Savepoint::RollbackTo(name(n))),
        _ => None,
    }
}

/// The background job a `CALL` names: `analyze_table('t')` or `stop_analysis('t')`, the table
/// name as one string.
fn call(function: &Function) -> Result<Call, CallError> {
    let name = function.name.to_string().to_lowercase();
    let job: fn(String) -> Call = match name.as_str() {
        "analyze_table" => Call::Analyze,
        "stop_analysis" => Call::Stop,
        _ => {
            return Err(CallError::UnknownProcedure(format!(
                "procedure {name} does not exist; the procedures are analyze_table('table') and \
                 stop_analysis('table')"
            )))
        }
    };
    let table = match &function.args {
        FunctionArguments::List(list) => match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(SqlExpr::Value(value)))] => {
                match &value.value {
                    Value::SingleQuotedString(table) => Some(table.clone()),
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    };
    table.map(job).ok_or_else(|| {
        CallError::Arguments(format!(
            "{name} takes one table name as a string, e.g. CALL {name}('music')"
        ))
    })
}

/// Statements a read-only user may run: queries, settings, transactions, cursors, prepared
/// statements of those, and `COPY ... TO STDOUT`.
fn is_read(statement: &Statement) -> bool {
    match statement {
        Statement::Query(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowViews { .. }
        | Statement::Set(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. }
        | Statement::Discard { .. } => true,
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            is_read(statement)
        }
        Statement::Copy {
            to: true,
            target: CopyTarget::Stdout,
            ..
        } => true,
        _ => false,
    }
}

/// The `COPY ... TO STDOUT` in `statement`, if it is one; an error for options it cannot honour.
fn copy_out(statement: &Statement) -> Option<Result<CopyOut, String>> {
    let Statement::Copy {
        source,
        to: true,
        target: CopyTarget::Stdout,
        options,
        legacy_options,
        ..
    } = statement
    else {
        return None;
    };
    let query = match source {
        CopySource::Query(query) => query.to_string(),
        CopySource::Table {
            table_name,
            columns,
        } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table {
            table_name,
            columns,
        } => {
            let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
            format!("SELECT {} FROM {table_name}", columns.join(", "))
        }
    };
    let mut copy = CopyOut {
        query,
        csv: false,
        header: false,
        delimiter: '\t',
        null: "\\N".to_owned(),
    };
    let mut delimiter = None;
    let mut null = None;
    for option in options {
        match option {
            CopyOption::Format(name) => match name.value.to_ascii_lowercase().as_str() {
                "csv" => copy.csv = true,
                "text" => copy.csv = false,
                other => {
                    return Some(Err(format!(
                        "COPY format {other} is not supported (text or csv)"
                    )))
                }
            },
            CopyOption::Header(on) => copy.header = *on,
            CopyOption::Delimiter(c) => delimiter = Some(*c),
            CopyOption::Null(s) => null = Some(s.clone()),
            other => return Some(Err(format!("COPY option {other} is not supported"))),
        }
    }
    for option in legacy_options {
        match option {
            CopyLegacyOption::Csv(csv_options) => {
                copy.csv = true;
                for csv_option in csv_options {
                    match csv_option {
                        CopyLegacyCsvOption::Header => copy.header = true,
                        other => return Some(Err(format!("COPY option {other} is not supported"))),
                    }
                }
            }
            CopyLegacyOption::Header => copy.header = true,
            CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
            CopyLegacyOption::Null(s) => null = Some(s.clone()),
            other => return Some(Err(format!("COPY option {other} is not supported"))),
        }
    }
    if copy.csv {
        copy.delimiter = ',';
        copy.null = String::new();
    }
    if copy.header && !copy.csv {
        return Some(Err("COPY HEADER is available only in CSV mode".to_owned()));
    }
    copy.delimiter = delimiter.unwrap_or(copy.delimiter);
    copy.null = null.unwrap_or(copy.null);
    Some(Ok(copy))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn copy_to_stdout_options() {
        let copy = copy_out(&parse(
            "COPY (SELECT 1 AS a) TO STDOUT WITH (FORMAT csv, HEADER)",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            copy,
            CopyOut {
                query: "SELECT 1 AS a".into(),
                csv: true,
                header: true,
                delimiter: ',',
                null: String::new(),
            }
        );
        // psql's \copy sends the pre-9.0 spelling.
        let copy = copy_out(&parse("COPY ( SELECT 1 ) TO STDOUT csv header"))
            .unwrap()
            .unwrap();
        assert!(copy.csv && copy.header);
        let copy = copy_out(&parse("COPY music (path, bpm) TO STDOUT"))
            .unwrap()
            .unwrap();
        assert_eq!(copy.query, "SELECT path, bpm FROM music");
        assert_eq!((copy.delimiter, copy.null.as_str()), ('\t', "\\N"));
        let err = copy_out(&parse("COPY music TO STDOUT WITH (FORMAT binary)"))
            .unwrap()
            .unwrap_err();
        assert_eq!(err, "COPY format binary is not supported (text or csv)");
        assert!(copy_out(&parse("SELECT 1")).is_none());
    }

    fn call_of(sql: &str) -> Result<Call, CallError> {
        match parse(sql) {
            Statement::Call(function) => call(&function),
            other => panic!("{sql} parsed as {other:?}"),
        }
    }

    #[test]
    fn calls_name_a_job_and_one_table() {
        assert_eq!(
            call_of("CALL analyze_table('music')"),
            Ok(Call::Analyze("music".into()))
        );
        assert_eq!(
            call_of("call Stop_Analysis('Music')"),
            Ok(Call::Stop("Music".into()))
        );
        assert_eq!(
            call_of("CALL analyze_table(music)"),
            Err(CallError::Arguments(
                "analyze_table takes one table name as a string, e.g. CALL \
                 analyze_table('music')"
                    .into()
            ))
        );
        assert!(matches!(
            call_of("CALL analyze_table('a', 'b')"),
            Err(CallError::Arguments(_))
        ));
        assert_eq!(
            call_of("CALL drop_everything('music')"),
            Err(CallError::UnknownProcedure(
                "procedure drop_everything does not exist; the procedures are \
                 analyze_table('table') and stop_analysis('table')"
                    .into()
            ))
        );
    }

    #[test]
    fn savepoints_fold_their_names() {
        let of = |sql: &str| savepoint(&parse(sql));
        assert_eq!(of("SAVEPOINT Sa_1"), Some(Savepoint::Create("sa_1".into())));
        assert_eq!(
            of("RELEASE SAVEPOINT \"Sa 1\""),
            Some(Savepoint::Release("Sa 1".into()))
        );
        assert_eq!(of("RELEASE sa_1"), Some(Savepoint::Release("sa_1".into())));
        assert_eq!(
            of("ROLLBACK TO SAVEPOINT sa_1"),
            Some(Savepoint::RollbackTo("sa_1".into()))
        );
        assert_eq!(
            of("ROLLBACK TO sa_1"),
            Some(Savepoint::RollbackTo("sa_1".into()))
        );
        assert_eq!(of("ROLLBACK"), None);
        assert!(is_read(&parse("SAVEPOINT a")) && is_read(&parse("RELEASE a")));
    }

    #[test]
    fn reads_and_writes() {
        for sql in [
            "SELECT 1",
            "SET statement_timeout = 100",
            "BEGIN",
            "COMMIT",
            "EXPLAIN SELECT 1",
            "SHOW search_path",
            "COPY (SELECT 1) TO STDOUT",
        ] {
            assert!(is_read(&parse(sql)), "{sql}");
        }
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "DROP TABLE t",
            "INSERT INTO t VALUES (1)",
            "CREATE VIEW v AS SELECT 1",
            "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        ] {
            assert!(!is_read(&parse(sql)), "{sql}");
        }
    }
}
