//! Whether a statement writes, judged on the logical plan DataFusion makes of it: its text can
//! hide a write (`SELECT ... INTO` creates a table), its plan cannot.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;

/// Whether running `plan` would change something: DDL (tables from `SELECT ... INTO` or
/// `CREATE TABLE AS`, views, drops), DML, `COPY ... TO` a location, or a `PREPARE` or
/// `EXPLAIN` of one, in subqueries too.
pub fn writes(plan: &LogicalPlan) -> bool {
    let mut found = false;
    // The closure never fails.
    let _ = plan.apply_with_subqueries(|node| {
        found = matches!(
            node,
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        );
        Ok(match found {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    });
    found
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn writes_are_found_wherever_the_text_hides_them() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS SELECT 1 AS x").await.unwrap();
        for (sql, expected) in [
            ("SELECT x FROM t WHERE x IN (SELECT 1)", false),
            ("PREPARE q(int) AS SELECT x FROM t WHERE x = $1", false),
            ("EXPLAIN SELECT x FROM t", false),
            ("SELECT 1 AS x INTO made", true),
            ("PREPARE q AS SELECT 1 AS x INTO made", true),
            ("EXPLAIN ANALYZE SELECT 1 AS x INTO made", true),
            ("CREATE TABLE made AS SELECT 1 AS x", true),
            ("CREATE VIEW v AS SELECT x FROM t", true),
            ("INSERT INTO t VALUES (2)", true),
            ("DROP TABLE t", true),
            ("COPY (SELECT 1 AS x) TO '/tmp/x.csv'", true),
        ] {
            let plan = ctx.state().create_logical_plan(sql).await.unwrap();
            assert_eq!(writes(&plan), expected, "{sql}");
        }
    }
}
