//! `CREATE INDEX ... USING hnsw`, `DROP INDEX` and `REINDEX INDEX`, read from the parsed
//! statement (DataFusion itself does not plan them and would drop their options).

use datafusion::arrow::datatypes::Schema;
use datafusion::error::{DataFusionError, Result};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CreateIndex, Expr as SqlExpr, IndexType, ObjectName, Statement,
    VacuumStatement, Value,
};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};

use super::registry::{is_vector, key_column, IndexDefinition};
use super::{IndexParams, Metric};

fn plan_error(message: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(message.into())
}

/// The name as written, unquoted parts joined by dots.
pub fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|part| {
            part.as_ident()
                .map_or_else(|| part.to_string(), |i| i.value.clone())
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What `CREATE INDEX` asks for, checked against the table's schema: an index definition
/// without a build yet.
pub fn definition(create: &CreateIndex, schema: &Schema) -> Result<IndexDefinition> {
    let table = object_name(&create.table_name);
    match &create.using {
        Some(IndexType::Custom(m)) if m.value.eq_ignore_ascii_case("hnsw") => {}
        Some(other) => {
            return Err(plan_error(format!(
                "access method \"{}\" is not supported: audiolake indexes are USING hnsw",
                other.to_string().to_lowercase()
            )))
        }
        None => {
            return Err(plan_error(
                "CREATE INDEX needs USING hnsw: audiolake only has vector indexes",
            ))
        }
    }
    if create.unique {
        return Err(plan_error("hnsw indexes cannot be UNIQUE"));
    }
    if create.predicate.is_some() {
        return Err(plan_error(
            "partial hnsw indexes (CREATE INDEX ... WHERE) are not supported",
        ));
    }
    let [column] = create.columns.as_slice() else {
        return Err(plan_error("an hnsw index covers exactly one column"));
    };
    let name_of_column = match &column.column.expr {
        SqlExpr::Identifier(ident) => ident.value.clone(),
        other => {
            return Err(plan_error(format!(
                "hnsw indexes are on a column, not the expression {other}"
            )))
        }
    };
    let field = schema.field_with_name(&name_of_column).map_err(|_| {
        plan_error(format!(
            "column \"{name_of_column}\" does not exist in table {table}"
        ))
    })?;
    if !is_vector(field) {
        return Err(plan_error(format!(
            "column \"{name_of_column}\" is {}, not a vector (a list of numbers such as float4[])",
            field.data_type()
        )));
    }
    let metric = match &column.operator_class {
        None => Metric::L2,
        Some(class) => {
            let class = object_name(class);
            Metric::from_opclass(&class).ok_or_else(|| {
                plan_error(format!(
                    "operator class \"{class}\" does not exist for access method \"hnsw\" \
                     (use vector_l2_ops, vector_cosine_ops, vector_ip_ops or vector_l1_ops)"
                ))
            })?
        }
    };
    let params = parameters(&create.with)?;
    params.validate().map_err(|e| plan_error(e.to_string()))?;
    let key = key_column(schema).ok_or_else(|| {
        plan_error(format!(
            "table {table} has neither a path nor an id column: an hnsw index needs one to \
             identify rows"
        ))
    })?;
    let name = match &create.name {
        Some(n) => object_name(n),
        None => format!("{}_{name_of_column}_idx", table.replace('.', "_")),
    };
    Ok(IndexDefinition {
        name,
        table,
        column: name_of_column,
        key: key.to_string(),
        metric,
        params,
        build: 0,
        rows: 0,
        dims: 0,
        size_bytes: 0,
        version: None,
        fingerprinted: false,
        previous: None,
        build_seconds: 0.0,
    })
}

/// PostgreSQL's `REINDEX INDEX [CONCURRENTLY] name`, the `REINDEX` keyword already read.
/// sqlparser has no statement for it, so it becomes the `VACUUM` statement's `REINDEX` form
/// (Redshift's `VACUUM REINDEX name`), which [`reindexed`] reads back. `CONCURRENTLY` changes
/// nothing: a rebuild never blocks queries, which use the previous build until it is done.
pub fn parse_reindex(parser: &mut Parser<'_>) -> std::result::Result<Statement, ParserError> {
    if !parser.parse_keyword(Keyword::INDEX) {
        return Err(ParserError::ParserError(format!(
            "audiolake rebuilds one index at a time: REINDEX INDEX name, not REINDEX {}",
            parser.peek_token()
        )));
    }
    let _concurrently = parser.parse_keyword(Keyword::CONCURRENTLY);
    let name = parser.parse_object_name(false)?;
    Ok(Statement::Vacuum(VacuumStatement {
        full: false,
        sort_only: false,
        delete_only: false,
        reindex: true,
        recluster: false,
        table_name: Some(name),
        threshold: None,
        boost: false,
    }))
}

/// The index a `REINDEX INDEX name` (as [`parse_reindex`] makes it) rebuilds.
pub fn reindexed(statement: &Statement) -> Option<String> {
    match statement {
        Statement::Vacuum(VacuumStatement {
            reindex: true,
            full: false,
            sort_only: false,
            delete_only: false,
            recluster: false,
            table_name: Some(name),
            threshold: None,
            boost: false,
        }) => Some(object_name(name)),
        _ => None,
    }
}

/// `WITH (m = 16, ef_construction = 64)`; pgvector's defaults for what is not given.
fn parameters(with: &[SqlExpr]) -> Result<IndexParams> {
    let mut params = IndexParams::default();
    for option in with {
        let SqlExpr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = option
        else {
            return Err(plan_error(format!("unrecognized index option {option}")));
        };
        let SqlExpr::Identifier(name) = left.as_ref() else {
            return Err(plan_error(format!("unrecognized index option {option}")));
        };
        let value = match right.as_ref() {
            SqlExpr::Value(v) => match &v.value {
                Value::Number(n, _) => n.parse::<usize>().ok(),
                Value::SingleQuotedString(s) => s.parse::<usize>().ok(),
                _ => None,
            },
            _ => None,
        }
        .ok_or_else(|| {
            plan_error(format!(
                "invalid value for parameter \"{}\": {right}",
                name.value
            ))
        })?;
        match name.value.to_ascii_lowercase().as_str() {
            "m" => params.m = value,
            "ef_construction" => params.ef_construction = value,
            _ => {
                return Err(plan_error(format!(
                    "unrecognized parameter \"{}\" (hnsw takes m and ef_construction)",
                    name.value
                )))
            }
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::AudiolakeDialect;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::parser::Parser;
    use std::sync::Arc;

    fn schema() -> Schema {
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)));
        Schema::new(vec![
            Field::new("path", DataType::Utf8, false),
            Field::new("embedding", list, true),
            Field::new("bpm", DataType::Float64, true),
        ])
    }

    fn create(sql: &str) -> Result<IndexDefinition> {
        let statement = Parser::parse_sql(&AudiolakeDialect::default(), sql).unwrap();
        let Statement::CreateIndex(create) = &statement[0] else {
            panic!("not CREATE INDEX: {sql}");
        };
        definition(create, &schema())
    }

    #[test]
    fn reads_pgvector_index_definitions() {
        let d = create(
            "CREATE INDEX music_sound ON music USING hnsw (embedding vector_cosine_ops) \
             WITH (m = 8, ef_construction = 40)",
        )
        .unwrap();
        assert_eq!(
            (
                d.name.as_str(),
                d.table.as_str(),
                d.column.as_str(),
                d.key.as_str()
            ),
            ("music_sound", "music", "embedding", "path")
        );
        assert_eq!(d.metric, Metric::Cosine);
        assert_eq!(
            d.params,
            IndexParams {
                m: 8,
                ef_construction: 40
            }
        );
        let d = create("CREATE INDEX ON music USING hnsw (embedding)").unwrap();
        assert_eq!(d.name, "music_embedding_idx");
        assert_eq!((d.metric, d.params), (Metric::L2, IndexParams::default()));
        let d = create("CREATE INDEX ON music USING hnsw (embedding vector_l1_ops)").unwrap();
        assert_eq!(d.metric, Metric::L1);
    }

    #[test]
    fn reads_reindex_index() {
        let parse = |sql: &str| {
            Parser::parse_sql(&AudiolakeDialect::default(), sql).map(|mut s| s.remove(0))
        };
        for sql in [
            "REINDEX INDEX music_sound",
            "reindex index concurrently music_sound",
        ] {
            let statement = parse(sql).unwrap();
            assert_eq!(
                reindexed(&statement).as_deref(),
                Some("music_sound"),
                "{sql}"
            );
        }
        let quoted = parse("REINDEX INDEX \"Music Sound\"").unwrap();
        assert_eq!(reindexed(&quoted).as_deref(), Some("Music Sound"));
        assert_eq!(
            parse("REINDEX TABLE music").unwrap_err().to_string(),
            "sql parser error: audiolake rebuilds one index at a time: REINDEX INDEX name, not \
             REINDEX TABLE"
        );
        assert!(parse("REINDEX INDEX").is_err());
        let other = parse("SELECT 1").unwrap();
        assert_eq!(reindexed(&other), None);
    }

    #[test]
    fn refuses_what_it_cannot_build() {
        let err = |sql: &str| create(sql).unwrap_err().to_string();
        assert_eq!(
            err("CREATE INDEX ON music USING hnsw (embedding) WITH (m = 300)"),
            "Error during planning: invalid index parameter: m must be between 2 and 100, not 300"
        );
        assert_eq!(
            err("CREATE INDEX ON music USING hnsw (bpm)"),
            "Error during planning: column \"bpm\" is Float64, not a vector (a list of numbers such as float4[])"
        );
        assert_eq!(
            err("CREATE INDEX ON music USING hnsw (embedding bit_hamming_ops)"),
            "Error during planning: operator class \"bit_hamming_ops\" does not exist for access method \"hnsw\" (use vector_l2_ops, vector_cosine_ops, vector_ip_ops or vector_l1_ops)"
        );
        assert_eq!(
            err("CREATE INDEX ON music USING hnsw (embedding) WITH (lists = 3)"),
            "Error during planning: unrecognized parameter \"lists\" (hnsw takes m and ef_construction)"
        );
        assert_eq!(
            err("CREATE INDEX ON music USING btree (bpm)"),
            "Error during planning: access method \"btree\" is not supported: audiolake indexes are USING hnsw"
        );
        assert_eq!(
            err("CREATE INDEX ON music USING hnsw (nothing)"),
            "Error during planning: column \"nothing\" does not exist in table music"
        );
    }
}
