//! Functions answered from `pg_proc` and `pg_type`, read on first use:
//! `pg_get_function_result(oid)` and `pg_get_function_arguments(oid)`, which psql's `\df`
//! calls (a function's result and argument types as PostgreSQL writes them: `integer`, `SETOF
//! text`, `a double precision, b text`; argument defaults and modes other than `VARIADIC` are
//! left out), and `to_regtype(name)`, a type's oid or NULL, which psycopg's `TypeInfo.fetch`
//! (and so SQLAlchemy's psycopg dialect) calls.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::SchemaProvider;
use datafusion::common::Result;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use tokio::sync::OnceCell;

use super::catalog::{int64_column, missing, scan, string_column};

/// Registers the three functions on `ctx`, whose default catalog has a `pg_catalog` schema.
pub fn register(ctx: &SessionContext) {
    let default_catalog = ctx
        .state()
        .config()
        .options()
        .catalog
        .default_catalog
        .clone();
    let Some(pg_catalog) = ctx
        .catalog(&default_catalog)
        .and_then(|catalog| catalog.schema("pg_catalog"))
    else {
        return;
    };
    let lookups = Arc::new(Lookups {
        pg_catalog,
        by_oid: OnceCell::new(),
        types: OnceCell::new(),
    });
    for part in [Part::Result, Part::Arguments, Part::TypeOid] {
        let argument = match part {
            Part::TypeOid => DataType::Utf8,
            _ => DataType::Int64,
        };
        let function = CatalogFunction {
            part,
            signature: Signature::uniform(1, vec![argument], Volatility::Stable),
            lookups: Arc::clone(&lookups),
        };
        ctx.register_udf(AsyncScalarUDF::new(Arc::new(function)).into_scalar_udf());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Part {
    Result,
    Arguments,
    TypeOid,
}

#[derive(Debug)]
struct Lookups {
    pg_catalog: Arc<dyn SchemaProvider>,
    /// A function's oid to its (result, arguments) texts.
    by_oid: OnceCell<HashMap<i64, (String, String)>>,
    /// `pg_type`'s oids by name.
    types: OnceCell<HashMap<String, i64>>,
}

#[derive(Debug)]
struct CatalogFunction {
    part: Part,
    signature: Signature,
    lookups: Arc<Lookups>,
}

impl PartialEq for CatalogFunction {
    fn eq(&self, other: &Self) -> bool {
        self.part == other.part
    }
}

impl Eq for CatalogFunction {}

impl std::hash::Hash for CatalogFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.part.hash(state);
    }
}

impl ScalarUDFImpl for CatalogFunction {
    fn name(&self) -> &str {
        match self.part {
            Part::Result => "pg_get_function_result",
            Part::Arguments => "pg_get_function_arguments",
            Part::TypeOid => "to_regtype",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.part {
            Part::TypeOid => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        datafusion::common::exec_err!("{} runs only asynchronously", self.name())
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for CatalogFunction {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let input = args.args[0].to_array(args.number_rows)?;
        if self.part == Part::TypeOid {
            let types = self
                .lookups
                .types
                .get_or_try_init(|| self.lookups.load_types())
                .await?;
            let names = cast(&input, &DataType::Utf8)?;
            let oids: Int64Array = names
                .as_string::<i32>()
                .iter()
                .map(|name| types.get(&type_key(name?)?).copied())
                .collect();
            return Ok(ColumnarValue::Array(Arc::new(oids)));
        }
        let texts = self
            .lookups
            .by_oid
            .get_or_try_init(|| self.lookups.load())
            .await?;
        let oids = cast(&input, &DataType::Int64)?;
        let out: StringArray = oids
            .as_primitive::<Int64Type>()
            .iter()
            .map(|oid| {
                let (result, arguments) = texts.get(&oid?)?;
                Some(match self.part {
                    Part::Result => result.clone(),
                    _ => arguments.clone(),
                })
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

impl Lookups {
    async fn scan(&self, name: &'static str) -> Result<Vec<RecordBatch>> {
        let table = self
            .pg_catalog
            .table(name)
            .await?
            .ok_or_else(|| missing(name))?;
        scan(&table).await
    }

    /// `pg_type`'s (oid, typname) pairs.
    async fn type_names(&self) -> Result<Vec<(i64, String)>> {
        let mut types = Vec::new();
        for batch in self.scan("pg_type").await? {
            let oids = int64_column(&batch, "oid")?;
            let names = string_column(&batch, "typname")?;
            for (oid, name) in oids.iter().zip(names.as_string::<i32>()) {
                if let (Some(oid), Some(name)) = (oid, name) {
                    types.push((oid, name.to_owned()));
                }
            }
        }
        Ok(types)
    }

    async fn load_types(&self) -> Result<HashMap<String, i64>> {
        let types = self.type_names().await?;
        Ok(types.into_iter().map(|(oid, name)| (name, oid)).collect())
    }

    async fn load(&self) -> Result<HashMap<i64, (String, String)>> {
        let types: HashMap<i64, String> = self
            .type_names()
            .await?
            .into_iter()
            .map(|(oid, name)| (oid, sql_type_name(&name)))
            .collect();
        let type_name = |oid: i64| types.get(&oid).cloned().unwrap_or_else(|| oid.to_string());
        let mut texts = HashMap::new();
        for batch in self.scan("pg_proc").await? {
            let oids = int64_column(&batch, "oid")?;
            let results = int64_column(&batch, "prorettype")?;
            let variadic = int64_column(&batch, "provariadic")?;
            let sets = cast(
                batch
                    .column_by_name("proretset")
                    .ok_or_else(|| missing("proretset"))?,
                &DataType::Boolean,
            )?;
            let argument_types = string_column(&batch, "proargtypes")?;
            let argument_names = string_column(&batch, "proargnames")?;
            for row in 0..batch.num_rows() {
                let mut result = type_name(results.value(row));
                if sets.as_boolean().value(row) {
                    result = format!("SETOF {result}");
                }
                // Written as `{a,b}` or `['a', 'b']`.
                let names: Vec<&str> = match argument_names.as_string::<i32>().is_valid(row) {
                    true => argument_names
                        .as_string::<i32>()
                        .value(row)
                        .trim_matches(|c| matches!(c, '{' | '}' | '[' | ']'))
                        .split(',')
                        .map(|n| n.trim().trim_matches(|c| c == '\'' || c == '"'))
                        .collect(),
                    false => Vec::new(),
                };
                let types: Vec<i64> = argument_types
                    .as_string::<i32>()
                    .value(row)
                    .split_whitespace()
                    .filter_map(|t| t.parse().ok())
                    .collect();
                let last = types.len().saturating_sub(1);
                let arguments = types
                    .iter()
                    .enumerate()
                    .map(|(i, oid)| {
                        let mut text = String::new();
                        if i == last && variadic.value(row) != 0 {
                            text.push_str("VARIADIC ");
                        }
                        if let Some(name) = names.get(i).filter(|n| !n.is_empty()) {
                            text.push_str(name);
                            text.push(' ');
                        }
                        text.push_str(&type_name(*oid));
                        text
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                texts.insert(oids.value(row), (result, arguments));
            }
        }
        Ok(texts)
    }
}

/// The `pg_type.typname` that `name` (as `to_regtype` takes it: `integer`, `int4`, `text[]`,
/// `pg_catalog."numeric"`) stands for; `None` when it cannot be a type name.
fn type_key(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return None;
    }
    if let Some(element) = name.strip_suffix("[]") {
        return Some(format!("_{}", type_key(element)?));
    }
    // The schema, if any, does not matter: every type lives in pg_catalog.
    let name = name.rsplit_once('.').map_or(name, |(_, name)| name);
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) => quoted.to_owned(),
        None => name.to_lowercase(),
    };
    let typname = match name.as_str() {
        "smallint" => "int2",
        "integer" | "int" => "int4",
        "bigint" => "int8",
        "real" => "float4",
        "double precision" => "float8",
        "boolean" => "bool",
        "character varying" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp without time zone" | "timestamp" => "timestamp",
        "timestamp with time zone" => "timestamptz",
        "time without time zone" | "time" => "time",
        "time with time zone" => "timetz",
        other => other,
    };
    Some(typname.to_owned())
}

/// A type's name as PostgreSQL's `format_type` writes it; arrays as their element's with `[]`.
fn sql_type_name(typname: &str) -> String {
    if let Some(element) = typname.strip_prefix('_') {
        return format!("{}[]", sql_type_name(element));
    }
    match typname {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "bool" => "boolean",
        "varchar" => "character varying",
        "bpchar" => "character",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "time" => "time without time zone",
        "timetz" => "time with time zone",
        other => other,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
    use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;

    #[tokio::test]
    async fn texts_of_builtin_functions_as_postgresql_writes_them() {
        let ctx = SessionContext::new();
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider).unwrap();
        register(&ctx);
        let batches = ctx
            .sql(
                "SELECT pg_get_function_result(oid), pg_get_function_arguments(oid) \
                 FROM pg_catalog.pg_proc WHERE oid IN (1299, 1397, 1067, 3464, 3058) ORDER BY oid",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut rows = Vec::new();
        for batch in &batches {
            let (results, arguments) = (
                batch.column(0).as_string::<i32>(),
                batch.column(1).as_string::<i32>(),
            );
            for row in 0..batch.num_rows() {
                rows.push((
                    results.value(row).to_owned(),
                    arguments.value(row).to_owned(),
                ));
            }
        }
        let rows: Vec<(&str, &str)> = rows.iter().map(|(r, a)| (r.as_str(), a.as_str())).collect();
        assert_eq!(
            rows,
            [
                ("SETOF integer", "integer, integer"),
                ("timestamp with time zone", ""),
                ("integer", "integer"),
                ("text", "VARIADIC any"),
                (
                    "interval",
                    "years integer, months integer, weeks integer, days integer, hours integer, \
                     mins integer, secs double precision"
                ),
            ]
        );
    }

    #[test]
    fn type_names() {
        assert_eq!(sql_type_name("_float4"), "real[]");
        assert_eq!(sql_type_name("text"), "text");
        assert_eq!(type_key("Integer").as_deref(), Some("int4"));
        assert_eq!(
            type_key("pg_catalog.\"numeric\"[]").as_deref(),
            Some("_numeric")
        );
        assert_eq!(type_key("public.hstore").as_deref(), Some("hstore"));
        assert_eq!(type_key(&"x".repeat(201)), None);
    }

    #[tokio::test]
    async fn to_regtype_finds_types_by_any_of_their_names() {
        let ctx = SessionContext::new();
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider).unwrap();
        register(&ctx);
        let batches = ctx
            .sql(
                "SELECT to_regtype(n) FROM (VALUES ('integer'), ('int4'), ('text[]'), \
                 ('hstore'), (NULL)) t(n)",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let oids: Vec<Option<i64>> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_primitive::<Int64Type>()
                    .iter()
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(oids, [Some(23), Some(23), Some(1009), None, None]);
    }
}
