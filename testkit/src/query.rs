//! Queries through the embedded API, and their results as plain values: the rows as one batch,
//! a column as a vector, a plan as text.

use std::sync::Arc;

use audiolake::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use audiolake::datafusion::arrow::compute::{cast, concat_batches};
use audiolake::datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type};
use audiolake::datafusion::arrow::util::pretty::pretty_format_batches;
use audiolake::datafusion::physical_plan::ExecutionPlan;
use audiolake::AudioLake;

/// Runs `sql` (one statement or several) and returns its rows as one batch; panics with the
/// SQL and the error when it fails.
pub async fn query(lake: &AudioLake, sql: &str) -> RecordBatch {
    let frame = lake.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    concat_batches(&schema, &batches).unwrap()
}

/// The first column of `sql`'s rows, a text column without NULLs.
pub async fn query_strings(lake: &AudioLake, sql: &str) -> Vec<String> {
    let batches = lake.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `EXPLAIN sql` as a table of text.
pub async fn explain(lake: &AudioLake, sql: &str) -> String {
    let batches = lake
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// Text column `col`, `None` for NULL.
pub fn strings(batch: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let array = batch.column_by_name(col).unwrap().as_string::<i32>();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i).to_string()))
        .collect()
}

/// 32-bit integer column `col`, `None` for NULL.
pub fn ints(batch: &RecordBatch, col: &str) -> Vec<Option<i32>> {
    let array = batch
        .column_by_name(col)
        .unwrap()
        .as_primitive::<Int32Type>();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i)))
        .collect()
}

/// Double column `col`, `None` for NULL.
pub fn floats(batch: &RecordBatch, col: &str) -> Vec<Option<f64>> {
    let array = batch
        .column_by_name(col)
        .unwrap()
        .as_primitive::<Float64Type>();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i)))
        .collect()
}

/// Every value of column `col`, of any type, as text; `NULL` for nulls.
pub fn texts(batch: &RecordBatch, col: &str) -> Vec<String> {
    let array = batch.column_by_name(col).unwrap();
    let array = cast(array, &DataType::Utf8).unwrap();
    let array = array.as_string::<i32>();
    (0..array.len())
        .map(|i| match array.is_valid(i) {
            true => array.value(i).to_string(),
            false => "NULL".to_string(),
        })
        .collect()
}

/// The value of a one-row `count(*)` batch.
pub fn count(batch: &RecordBatch) -> i64 {
    assert_eq!(batch.num_rows(), 1);
    batch.column(0).as_primitive::<Int64Type>().value(0)
}

/// Bytes the plan's audio scans read from audio files, from their `bytes_read` metric (after
/// the plan ran).
pub fn bytes_read(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("bytes_read"))
        .map_or(0, |v| v.as_usize());
    own + plan.children().into_iter().map(bytes_read).sum::<usize>()
}
