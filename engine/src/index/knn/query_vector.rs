//! The query's vector: a constant expression evaluated once per scan.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::Float32Type;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder};

use super::session::run;
use crate::sql::vector::float4_list;

/// The value of a constant vector expression (a literal, `'[1,2]'` or a scalar subquery);
/// `None` when it is NULL.
pub async fn evaluate_vector(state: &SessionState, expr: &Expr) -> Result<Option<Vec<f32>>> {
    let plan = LogicalPlanBuilder::empty(true)
        .project(vec![expr.clone().alias("query")])?
        .build()?;
    let batches = run(state, plan).await?;
    let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(None);
    };
    let value = ScalarValue::try_from_array(batch.column(0), 0)?;
    vector_of(&value)
}

/// A scalar as a vector: a numeric list or pgvector's text form.
pub fn vector_of(value: &ScalarValue) -> Result<Option<Vec<f32>>> {
    if value.is_null() {
        return Ok(None);
    }
    if let ScalarValue::Utf8(Some(text))
    | ScalarValue::LargeUtf8(Some(text))
    | ScalarValue::Utf8View(Some(text)) = value
    {
        return crate::sql::vector::parse_vector(text).map(Some);
    }
    let array = cast(&value.to_array()?, &float4_list()).map_err(|_| {
        DataFusionError::Plan(format!(
            "a vector query must be a float4[] or '[1,2,3]', not {}",
            value.data_type()
        ))
    })?;
    let list = array.as_list::<i32>();
    let values = list.value(0);
    let values = values.as_primitive::<Float32Type>();
    if values.null_count() > 0 {
        return Err(DataFusionError::Execution(
            "array must not contain nulls".to_string(),
        ));
    }
    Ok(Some(values.values().to_vec()))
}
