//! PostgreSQL functions that drivers and BI tools call while introspecting, and that neither
//! DataFusion nor datafusion-postgres provides, and `pg_sleep`, which clients test cancellation
//! with.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Int32Array, ListArray, StringBuilder, StructArray,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::arrow::datatypes::{FieldRef, UInt64Type};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    create_udf, Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

/// The PostgreSQL release whose behaviour clients should expect.
const PG_VERSION: &str = "16.6";

/// Registers the functions on `ctx`, replacing DataFusion's `version()`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(version());
    ctx.register_udf(pg_get_serial_sequence());
    ctx.register_udf(ScalarUDF::new_from_impl(ExpandArray::new()));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    ctx.register_udf(like_escape());
    ctx.register_udf(always_visible("pg_collation_is_visible"));
    ctx.register_udf(always_visible("pg_type_is_visible"));
    ctx.register_udf(always_visible("pg_function_is_visible"));
    ctx.register_udf(AsyncScalarUDF::new(Arc::new(PgSleep::new())).into_scalar_udf());
    ctx.register_udf(ScalarUDF::new_from_impl(CurrentSetting::new()));
    ctx.register_udf(pg_get_indexdef());
    ctx.register_udaf(AggregateUDF::new_from_impl(SingleValue::new()));
    super::catalog_functions::register(ctx);
    if let Ok(inner) = ctx.state().udf("format_type") {
        ctx.register_udf(ScalarUDF::new_from_impl(FormatType { inner }));
    }
}

/// datafusion-pg-catalog's `format_type`, plus the record types it formats as `oid(2287)`:
/// list-of-struct columns such as `tags` are `record[]` on the wire, and SQLAlchemy cannot parse
/// `oid(2287)`.
#[derive(Debug)]
struct FormatType {
    inner: Arc<ScalarUDF>,
}

impl PartialEq for FormatType {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for FormatType {}

impl std::hash::Hash for FormatType {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
    }
}

impl ScalarUDFImpl for FormatType {
    fn name(&self) -> &str {
        "format_type"
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = row_count(&args.args);
        let oids = args.args[0].to_array(rows)?;
        let oids = arrow::compute::cast(&oids, &DataType::Int64)?;
        let oids = oids.as_primitive::<arrow::datatypes::Int64Type>();
        let names = self.inner.invoke_with_args(args)?.to_array(rows)?;
        let names = names.as_string::<i32>();
        let mut out = StringBuilder::new();
        for row in 0..rows {
            match (oids.is_null(row), oids.value(row)) {
                (false, 2249) => out.append_value("record"),
                (false, 2287) => out.append_value("record[]"),
                _ if names.is_null(row) => out.append_null(),
                _ => out.append_value(names.value(row)),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// `pg_get_indexdef(index, column, pretty)`, which SQLAlchemy and pgJDBC call only for the
/// expression columns of an index. The catalog has none, so a call means something is missing
/// and says so rather than answering wrongly.
fn pg_get_indexdef() -> ScalarUDF {
    create_udf(
        "pg_get_indexdef",
        vec![DataType::Int64, DataType::Int64, DataType::Boolean],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = row_count(args);
            if rows > 0 {
                return exec_err!(
                    "pg_get_indexdef is not supported: audiolake has no expression indexes"
                );
            }
            Ok(ColumnarValue::Array(Arc::new(
                StringBuilder::new().finish(),
            )))
        }),
    )
}

/// `single_value(x)`: the value of the only row, NULL for none or several. Correlated scalar
/// subqueries on the catalog are rewritten to aggregate with it, because DataFusion runs only
/// aggregated ones. PostgreSQL fails on several rows, but DataFusion aggregates every group
/// before joining, including groups no outer row asks for, so failing here would fail queries
/// that PostgreSQL answers.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SingleValue {
    signature: Signature,
}

impl SingleValue {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SingleValue {
    fn name(&self) -> &str {
        "single_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Single {
            value: ScalarValue::try_from(args.return_field.data_type())?,
            rows: 0,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Arc::new(Field::new("value", args.return_type().clone(), true)),
            Arc::new(Field::new("rows", DataType::UInt64, false)),
        ])
    }
}

#[derive(Debug)]
struct Single {
    value: ScalarValue,
    rows: u64,
}

impl Accumulator for Single {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let rows = values[0].len();
        if rows > 0 {
            self.rows += rows as u64;
            self.value = ScalarValue::try_from_array(&values[0], rows - 1)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let counts = states[1].as_primitive::<UInt64Type>();
        for (i, count) in counts.values().iter().enumerate() {
            if *count > 0 {
                self.rows += count;
                self.value = ScalarValue::try_from_array(&states[0], i)?;
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            self.value.clone(),
            ScalarValue::UInt64(Some(self.rows)),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.rows > 1 {
            return ScalarValue::try_from(self.value.data_type());
        }
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.value.size()
    }
}

/// `pg_collation_is_visible(oid)`, `pg_type_is_visible(oid)`: true, since every collation and
/// type lives in pg_catalog, which is always on the search path.
fn always_visible(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
}

/// `pg_sleep(seconds)`: waits without holding a thread, so a cancel, `statement_timeout` or a
/// client that goes away ends it at once; clients use it to test exactly that. Over several
/// rows it waits for their sum, as PostgreSQL does row by row. Negative and NULL waits are
/// none; PostgreSQL's `void` result is a NULL text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: Signature,
}

impl PgSleep {
    /// No wait is longer than this (about 31 years), so that no number overflows a deadline.
    const LONGEST_S: f64 = 1e9;

    fn new() -> Self {
        Self {
            signature: Signature::uniform(1, vec![DataType::Float64], Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("pg_sleep runs only asynchronously")
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for PgSleep {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let seconds = args.args[0].to_array(rows)?;
        let seconds = arrow::compute::cast(&seconds, &DataType::Float64)?;
        let total: f64 = seconds
            .as_primitive::<arrow::datatypes::Float64Type>()
            .iter()
            .flatten()
            .filter(|s| *s > 0.0)
            .sum();
        // NaN fails every comparison: no wait.
        if total > 0.0 {
            let wait = std::time::Duration::from_secs_f64(total.min(Self::LONGEST_S));
            tokio::time::sleep(wait).await;
        }
        Ok(ColumnarValue::Array(new_null_array(&DataType::Utf8, rows)))
    }
}

/// `version()` in PostgreSQL's form: SQLAlchemy and others parse the release out of it.
fn version() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {PG_VERSION} (audiolake {}) on {}-{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// `pg_get_serial_sequence(table, column)`: NULL, as for any column without a sequence; audiolake
/// has no sequences.
fn pg_get_serial_sequence() -> ScalarUDF {
    create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    )
}

/// Settings `current_setting` knows besides the fixed ones of `pg_settings`, with the values a
/// PostgreSQL 16 server reports; SQLAlchemy's `reflect_table` asks for the access method.
const REPORTED_SETTINGS: &[(&str, &str)] = &[
    ("default_table_access_method", "heap"),
    ("server_version", PG_VERSION),
    ("server_version_num", "160006"),
    ("server_encoding", "UTF8"),
    ("client_encoding", "UTF8"),
    ("standard_conforming_strings", "on"),
];

/// `current_setting(name [, missing_ok])` for the settings above; another name is PostgreSQL's
/// error, or NULL with `missing_ok`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    signature: Signature,
}

impl CurrentSetting {
    fn new() -> Self {
        Self {
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8, DataType::Boolean]),
                ],
                Volatility::Stable,
            ),
        }
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = row_count(&args.args);
        let names = args.args[0].to_array(rows)?;
        let names = names.as_string::<i32>();
        let missing_ok = match args.args.get(1) {
            Some(flag) => Some(flag.to_array(rows)?),
            None => None,
        };
        let mut out = StringBuilder::new();
        for row in 0..rows {
            if names.is_null(row) {
                out.append_null();
                continue;
            }
            let name = names.value(row);
            let value = REPORTED_SETTINGS
                .iter()
                .chain(super::catalog::FIXED_SETTINGS)
                .find(|(n, _)| n.eq_ignore_ascii_case(name));
            match value {
                Some((_, v)) => out.append_value(v),
                None if missing_ok
                    .as_ref()
                    .is_some_and(|m| m.as_boolean().value(row)) =>
                {
                    out.append_null()
                }
                None => return exec_err!("unrecognized configuration parameter \"{name}\""),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The rows a call of a plain UDF covers: an array argument's length, or one for constants.
fn row_count(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// `like_escape(pattern, escape)`: `pattern` written for the escape character `escape` (or for
/// none, when empty), rewritten for the backslash, which is all DataFusion's LIKE knows.
fn like_escape() -> ScalarUDF {
    create_udf(
        "like_escape",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = row_count(args);
            let patterns = args[0].to_array(rows)?;
            let escapes = args[1].to_array(rows)?;
            let patterns = patterns.as_string::<i32>();
            let escapes = escapes.as_string::<i32>();
            let mut out = StringBuilder::new();
            for row in 0..rows {
                if patterns.is_null(row) || escapes.is_null(row) {
                    out.append_null();
                    continue;
                }
                out.append_value(backslash_pattern(patterns.value(row), escapes.value(row))?);
            }
            let out: ArrayRef = Arc::new(out.finish());
            Ok(
                if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                    ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
                } else {
                    ColumnarValue::Array(out)
                },
            )
        }),
    )
}

fn backslash_pattern(pattern: &str, escape: &str) -> Result<String> {
    let mut chars = escape.chars();
    let escape = match (chars.next(), chars.next()) {
        (None, _) => None,
        (Some(c), None) => Some(c),
        _ => return exec_err!("invalid escape string: it must be empty or one character"),
    };
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => return exec_err!("LIKE pattern must not end with escape character"),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// `json_build_object(key, value, ...)`, which SQLAlchemy's column reflection calls, as JSON text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args.len().is_multiple_of(2) {
            return plan_err!("json_build_object: argument list must have even number of elements");
        }
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let mut out = StringBuilder::new();
        for row in 0..rows {
            // Written by hand to keep the arguments' order, as PostgreSQL does.
            let mut object = String::from("{");
            for (i, pair) in arrays.chunks(2).enumerate() {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                if key.is_null() {
                    return exec_err!("json_build_object: null value not allowed for object key");
                }
                if i > 0 {
                    object.push(',');
                }
                object.push_str(&serde_json::Value::String(scalar_text(&key)).to_string());
                object.push(':');
                object
                    .push_str(&json_value(ScalarValue::try_from_array(&pair[1], row)?).to_string());
            }
            object.push('}');
            out.append_value(object);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn json_value(value: ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    if value.is_null() {
        return J::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => J::Bool(b),
        ScalarValue::Int8(Some(v)) => J::from(v),
        ScalarValue::Int16(Some(v)) => J::from(v),
        ScalarValue::Int32(Some(v)) => J::from(v),
        ScalarValue::Int64(Some(v)) => J::from(v),
        ScalarValue::UInt8(Some(v)) => J::from(v),
        ScalarValue::UInt16(Some(v)) => J::from(v),
        ScalarValue::UInt32(Some(v)) => J::from(v),
        ScalarValue::UInt64(Some(v)) => J::from(v),
        ScalarValue::Float32(Some(v)) => J::from(v),
        ScalarValue::Float64(Some(v)) => J::from(v),
        other => J::String(scalar_text(&other)),
    }
}

fn scalar_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => other.to_string(),
    }
}

/// `information_schema._pg_expandarray(array)`, which pgJDBC's `getPrimaryKeys` calls: in
/// PostgreSQL a set-returning function of one `(x, n)` row per element. Here it returns the list
/// of those rows, and the statement rewrite wraps each call in `unnest`, which DataFusion runs
/// in lockstep with other `unnest`s of the select list, as PostgreSQL runs its SRFs.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ExpandArray {
    signature: Signature,
}

impl ExpandArray {
    fn new() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    fn fields(element: &DataType) -> Fields {
        Fields::from(vec![
            Field::new("x", element.clone(), true),
            Field::new("n", DataType::Int32, true),
        ])
    }
}

impl ScalarUDFImpl for ExpandArray {
    fn name(&self) -> &str {
        "_pg_expandarray"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::List(element)] => Ok(DataType::new_list(
                DataType::Struct(Self::fields(element.data_type())),
                true,
            )),
            _ => plan_err!("_pg_expandarray takes an array, not {args:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        let lists = array.as_list::<i32>();
        // Element positions, 1-based within each list, beside the list's own values.
        let mut positions = Vec::with_capacity(lists.values().len());
        for row in 0..lists.len() {
            positions.extend(1..=lists.value_length(row));
        }
        let offsets = lists.value_offsets();
        let (start, end) = (offsets[0] as usize, offsets[lists.len()] as usize);
        let x = lists.values().slice(start, end - start);
        let n: ArrayRef = Arc::new(Int32Array::from(positions));
        let element = lists.values().data_type();
        let rows = StructArray::try_new(Self::fields(element), vec![x, n], None)?;
        let shifted = offsets.iter().map(|o| o - offsets[0]).collect::<Vec<_>>();
        let result = ListArray::try_new(
            Arc::new(Field::new_list_field(rows.data_type().clone(), true)),
            OffsetBuffer::new(shifted.into()),
            Arc::new(rows),
            lists.nulls().cloned(),
        )?;
        Ok(ColumnarValue::Array(Arc::new(result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    async fn run(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn version_reads_as_postgresql() {
        let out = run("SELECT version() AS v").await.unwrap();
        assert!(
            out.contains(&format!("PostgreSQL {PG_VERSION} (audiolake ")),
            "{out}"
        );
    }

    #[tokio::test]
    async fn pg_sleep_waits_for_the_sum_of_its_rows() {
        let started = std::time::Instant::now();
        let out = run("SELECT pg_sleep(s) AS p FROM (VALUES (0.1), (0.15), (-5), (NULL)) t(s)")
            .await
            .unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        assert_eq!(out.matches("|   |").count(), 4, "{out}");
        let started = std::time::Instant::now();
        run("SELECT pg_sleep(-1), pg_sleep(NULL), pg_sleep('NaN'::double precision)")
            .await
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[tokio::test]
    async fn pg_sleep_of_a_huge_number_waits_without_overflowing() {
        let sleeping = run("SELECT pg_sleep(1e300)");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), sleeping).await;
        assert!(waited.is_err(), "returned {waited:?}");
    }

    #[tokio::test]
    async fn json_build_object_writes_json_text() {
        let out =
            run("SELECT json_build_object('b', 1, 'a', 'x', 'c', true, 'd', NULL, 'e', 1.5) AS j")
                .await
                .unwrap();
        assert!(
            out.contains(r#"{"b":1,"a":"x","c":true,"d":null,"e":1.5}"#),
            "{out}"
        );
    }

    #[test]
    fn like_escape_rewrites_for_the_backslash() {
        assert_eq!(backslash_pattern("pg/_%", "/").unwrap(), "pg\\_%");
        assert_eq!(backslash_pattern("a\\b//", "/").unwrap(), "a\\\\b\\/");
        assert_eq!(backslash_pattern("a\\b", "").unwrap(), "a\\\\b");
        assert_eq!(
            backslash_pattern("ab/", "/").unwrap_err().to_string(),
            "Execution error: LIKE pattern must not end with escape character"
        );
    }

    #[tokio::test]
    async fn like_escape_matches_as_postgresql() {
        let out = run("SELECT 'pg_x' LIKE like_escape('pg/_%', '/') AS a, \
             'pgax' LIKE like_escape('pg/_%', '/') AS b")
        .await
        .unwrap();
        assert!(out.contains("| true | false |"), "{out}");
    }

    #[tokio::test]
    async fn single_value_takes_the_only_row() {
        let out = run(
            "SELECT k, (SELECT single_value(v.b) FROM (VALUES (1, 'one'), (1, 'uno'), (2, 'two')) \
             AS v(a, b) WHERE v.a = t.k) AS b FROM (VALUES (2), (3)) AS t(k) ORDER BY k",
        )
        .await
        .unwrap();
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .collect();
        assert_eq!(rows, ["| 2 | two |", "| 3 |     |"], "{out}");
        let out = run(
            "SELECT k, (SELECT single_value(v.b) FROM (VALUES (1, 'one'), (1, 'uno')) \
             AS v(a, b) WHERE v.a = t.k) AS b FROM (VALUES (1)) AS t(k)",
        )
        .await
        .unwrap();
        assert!(out.contains("| 1 |   |"), "{out}");
    }

    #[tokio::test]
    async fn expandarray_gives_one_row_per_element() {
        let out = run("SELECT get_field(unnest(_pg_expandarray(a)), 'x') AS x, \
             get_field(unnest(_pg_expandarray(a)), 'n') AS n \
             FROM (VALUES (make_array(7, 9)), (make_array(4))) AS t(a)")
        .await
        .unwrap();
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("| "))
            .skip(1)
            .collect();
        assert_eq!(rows, ["| 7 | 1 |", "| 9 | 2 |", "| 4 | 1 |"], "{out}");
    }
}
