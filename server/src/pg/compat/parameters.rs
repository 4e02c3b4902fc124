//! Types of parameters a client leaves to the server. PostgreSQL infers them from where they
//! stand; DataFusion leaves `LIMIT $1` and `OFFSET $1` untyped, so the text that node-postgres
//! sends for them stayed text and the limit failed. They are bigint, as in PostgreSQL.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::Transformed;
use datafusion::common::Result;
use datafusion::logical_expr::{Expr, LogicalPlan};

/// `plan` with its untyped `LIMIT` and `OFFSET` parameters typed bigint.
pub fn infer_parameter_types(plan: LogicalPlan) -> Result<LogicalPlan> {
    let typed = plan.transform_up_with_subqueries(|node| match node {
        LogicalPlan::Limit(mut limit) => {
            let skip = type_as_bigint(&mut limit.skip);
            let fetch = type_as_bigint(&mut limit.fetch);
            let node = LogicalPlan::Limit(limit);
            Ok(if skip || fetch {
                Transformed::yes(node)
            } else {
                Transformed::no(node)
            })
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(typed.data)
}

fn type_as_bigint(expr: &mut Option<Box<Expr>>) -> bool {
    match expr.as_deref_mut() {
        Some(Expr::Placeholder(placeholder)) if placeholder.field.is_none() => {
            placeholder.field = Some(Arc::new(Field::new("", DataType::Int64, true)));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn limit_and_offset_parameters_are_bigint() {
        let ctx = SessionContext::new();
        let plan = ctx
            .state()
            .create_logical_plan("SELECT $2 AS x FROM (VALUES (1), (2)) t(v) LIMIT $1 OFFSET $3")
            .await
            .unwrap();
        let types = infer_parameter_types(plan)
            .unwrap()
            .get_parameter_types()
            .unwrap();
        assert_eq!(types["$1"], Some(DataType::Int64));
        assert_eq!(types["$3"], Some(DataType::Int64));
        assert_eq!(types["$2"], None);
    }
}
