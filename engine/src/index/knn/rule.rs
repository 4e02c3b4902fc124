//! The analyzer rule: `ORDER BY <distance>(column, <constant>) LIMIT k` over an indexed
//! column becomes a scan of a [`KnnTable`], with the filter, sort and limit left in place.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, FetchType, LogicalPlan, SkipType, TableScanBuilder};
use datafusion::optimizer::AnalyzerRule;

use super::search::KnnQuery;
use super::table::KnnTable;
use crate::index::registry::Indexes;
use crate::index::Metric;
use crate::sql::vector::Distance;

fn metric_of(distance: Distance) -> Option<Metric> {
    match distance {
        Distance::L2 => Some(Metric::L2),
        Distance::Cosine => Some(Metric::Cosine),
        Distance::NegativeInnerProduct => Some(Metric::InnerProduct),
        Distance::L1 => Some(Metric::L1),
        Distance::InnerProduct => None,
    }
}

/// Whether `plan` calls a distance function: the rule rewrites such a plan only once its
/// parameters are bound (the query vector and `LIMIT` must be values), so a plan kept with its
/// placeholders must be analysed again after binding, never reused analysed.
pub fn calls_distance(plan: &LogicalPlan) -> bool {
    let distance = |e: &Expr| {
        Ok(matches!(e, Expr::ScalarFunction(call)
            if Distance::of_function(call.func.name()).is_some()))
    };
    let mut found = false;
    // The closures never fail.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            found |= e.exists(distance)?;
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(match found {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    });
    found
}

/// Rewrites kNN queries on indexed columns into index scans.
#[derive(Debug)]
pub struct KnnRule {
    indexes: Arc<Indexes>,
}

impl KnnRule {
    pub fn new(indexes: Arc<Indexes>) -> Self {
        Self { indexes }
    }

    /// `plan` rewritten if it is `Limit` over the supported shape.
    fn rewrite_limit(&self, plan: &LogicalPlan) -> Result<Option<LogicalPlan>> {
        let LogicalPlan::Limit(limit) = plan else {
            return Ok(None);
        };
        let (FetchType::Literal(Some(k)), SkipType::Literal(skip)) =
            (limit.get_fetch_type()?, limit.get_skip_type()?)
        else {
            return Ok(None);
        };
        // A crafted LIMIT and OFFSET must not overflow; the index caps k by its rows.
        let k = k.saturating_add(skip);
        // Down through projections to the sort.
        let mut node = limit.input.as_ref();
        while let LogicalPlan::Projection(p) = node {
            node = p.input.as_ref();
        }
        let LogicalPlan::Sort(sort) = node else {
            return Ok(None);
        };
        let [order] = sort.expr.as_slice() else {
            return Ok(None);
        };
        if !order.asc {
            return Ok(None);
        }
        let Some((distance, column, query)) = distance_call(&order.expr) else {
            return Ok(None);
        };
        let Some(metric) = metric_of(distance) else {
            return Ok(None);
        };
        // Down through projections and filters to the table.
        let mut predicates = Vec::new();
        let mut node = sort.input.as_ref();
        loop {
            match node {
                LogicalPlan::Projection(p) => node = p.input.as_ref(),
                LogicalPlan::Filter(f) => {
                    predicates.push(f.predicate.clone());
                    node = f.input.as_ref();
                }
                _ => break,
            }
        }
        let LogicalPlan::TableScan(scan) = node else {
            return Ok(None);
        };
        if column
            .relation
            .as_ref()
            .is_some_and(|r| !r.resolved_eq(&scan.table_name))
        {
            return Ok(None);
        }
        if predicates.iter().any(has_subquery) {
            return Ok(None);
        }
        let Some(entry) = self.indexes.find(&scan.table_name, &column.name, metric) else {
            return Ok(None);
        };
        let Ok(inner) = source_as_provider(&scan.source) else {
            return Ok(None);
        };
        if inner.is::<KnnTable>() {
            return Ok(None);
        }
        let knn = KnnTable(KnnQuery {
            inner,
            table: scan.table_name.clone(),
            indexes: Arc::clone(&self.indexes),
            entry,
            query,
            k,
            predicate: predicates.into_iter().reduce(Expr::and),
        });
        let rewritten = plan.clone().transform_down(|node| match node {
            LogicalPlan::TableScan(s) if s.table_name == scan.table_name => {
                let replaced = TableScanBuilder::new(
                    s.table_name.clone(),
                    provider_as_source(Arc::new(knn.clone())),
                )
                .with_projection(s.projection.clone())
                .with_filters(s.filters.clone())
                .with_fetch(s.fetch)
                .build()?;
                Ok(Transformed::new(
                    LogicalPlan::TableScan(replaced),
                    true,
                    TreeNodeRecursion::Stop,
                ))
            }
            other => Ok(Transformed::no(other)),
        })?;
        Ok(Some(rewritten.data))
    }
}

impl AnalyzerRule for KnnRule {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        if self.indexes.list().is_empty() {
            return Ok(plan);
        }
        plan.transform_down_with_subqueries(|node| match self.rewrite_limit(&node)? {
            Some(rewritten) => Ok(Transformed::new(rewritten, true, TreeNodeRecursion::Jump)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "hnsw_knn"
    }
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })
    .unwrap_or(true)
}

/// `distance(column, query)` (either order), where `query` reads no column of the row.
fn distance_call(expr: &Expr) -> Option<(Distance, datafusion::common::Column, Expr)> {
    let call = match expr {
        Expr::ScalarFunction(call) => call,
        // Binding a parameter keeps its placeholder's name: `... AS l2_distance(v,$1)`.
        Expr::Alias(alias) => return distance_call(&alias.expr),
        _ => return None,
    };
    let distance = Distance::of_function(call.func.name())?;
    let [a, b] = call.args.as_slice() else {
        return None;
    };
    let column_of = |e: &Expr| match strip_casts(e) {
        Expr::Column(c) => Some(c.clone()),
        _ => None,
    };
    let constant = |e: &Expr| {
        e.column_refs().is_empty()
            && !e
                .exists(|e| {
                    Ok(
                        matches!(e, Expr::ScalarSubquery(s) if !s.outer_ref_columns.is_empty())
                            || matches!(e, Expr::OuterReferenceColumn(..)),
                    )
                })
                .unwrap_or(true)
    };
    match (column_of(a), column_of(b)) {
        (Some(c), _) if constant(b) => Some((distance, c, b.clone())),
        (_, Some(c)) if constant(a) => Some((distance, c, a.clone())),
        _ => None,
    }
}

fn strip_casts(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(c) => strip_casts(&c.expr),
        Expr::TryCast(c) => strip_casts(&c.expr),
        other => other,
    }
}
