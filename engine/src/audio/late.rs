//! Late analysis: the expensive columns of an AUDIO table computed only for the rows that a
//! cheap sort, limit or filter keeps.
//!
//! `SELECT path, embedding FROM music ORDER BY path LIMIT 3` would otherwise analyse every file
//! before the sort keeps three. When the operators between a `LIMIT` (or a sort with a fetch)
//! and an AUDIO scan use only listing and header columns, the rule scans those columns (and
//! `path`), lets the operators cut the rows, then computes the analysis columns above them with
//! `analyze(path, 'groups')`, which reads through the same feature store. `EXPLAIN` shows the
//! `analyze` call above the limit.
//!
//! Left as they are: scans that project `error` (an analysis failure is part of it), that ask
//! for the decode columns alone, or of tables with their own `aws.*` options (the path
//! functions reach S3 through the shared clients).

use std::collections::HashSet;
use std::sync::Arc;

use audiolake_udf::features::DECODE_GROUP;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::utils::expr_to_columns;
use datafusion::logical_expr::{
    lit, Expr, LogicalPlan, LogicalPlanBuilder, Projection, ScalarUDF, TableScan, TableScanBuilder,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use super::columns::{self, Cost};
use super::table::AudioTable;

/// The column holding each kept row's analysis between the two projections the rule adds.
const ANALYSIS: &str = "__audiolake_analysis";

#[derive(Debug)]
pub struct LateAnalysis {
    analyze: Arc<ScalarUDF>,
}

impl LateAnalysis {
    /// The rule, calling `analyze` (the `analyze(path, groups)` function) for the kept rows.
    pub fn new(analyze: Arc<ScalarUDF>) -> Self {
        Self { analyze }
    }

    /// `top` (a limit, or a sort with a fetch) rewritten to analyse only the rows it keeps, if
    /// what lies between it and an AUDIO scan allows.
    fn lift(&self, top: &LogicalPlan) -> Result<Option<LogicalPlan>> {
        // The operators from `top` down to the scan: filters, sorts and limits only.
        let mut chain = vec![top];
        let mut node = top;
        let scan = loop {
            let [input] = node.inputs()[..] else {
                return Ok(None);
            };
            match input {
                LogicalPlan::TableScan(scan) => break scan,
                LogicalPlan::Filter(_) | LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
                    chain.push(input);
                    node = input;
                }
                _ => return Ok(None),
            }
        };
        let Some(lifted) = Lifted::of(scan)? else {
            return Ok(None);
        };
        for node in &chain {
            let mut used = HashSet::new();
            for expr in node.expressions() {
                expr_to_columns(&expr, &mut used)?;
            }
            if used.iter().any(|c| lifted.expensive.contains(&c.name)) {
                return Ok(None);
            }
        }

        // The chain again, over a scan of the cheap columns.
        let mut plan = LogicalPlan::TableScan(lifted.scan);
        for node in chain.iter().rev() {
            plan = node.with_new_exprs(node.expressions(), vec![plan])?;
        }
        let qualifier = scan.table_name.clone();
        let column = |name: &str| Expr::Column(Column::new(Some(qualifier.clone()), name));
        let mut inner: Vec<Expr> = plan
            .schema()
            .fields()
            .iter()
            .map(|f| column(f.name()))
            .collect();
        let groups = lit(lifted.groups.join(","));
        inner.push(
            self.analyze
                .call(vec![column("path"), groups])
                .alias(ANALYSIS),
        );
        let inner = Projection::try_new(inner, Arc::new(plan))?;
        // The struct's fields as columns `<ANALYSIS>.<field>`. (Taken with `get_field`, the
        // optimizer would move the field access, and so `analyze`, back below the limit.)
        let fields = LogicalPlanBuilder::from(LogicalPlan::Projection(inner))
            .unnest_column(Column::from_name(ANALYSIS))?
            .build()?;
        // What `top` returned, the analysis columns now taken from the analysis.
        let outer: Vec<Expr> = top
            .schema()
            .fields()
            .iter()
            .map(|f| match lifted.expensive.contains(f.name()) {
                true => Expr::Column(Column::from_name(format!("{ANALYSIS}.{}", f.name())))
                    .alias_qualified(Some(qualifier.clone()), f.name()),
                false => column(f.name()),
            })
            .collect();
        let outer = Projection::try_new(outer, Arc::new(fields))?;
        Ok(Some(LogicalPlan::Projection(outer)))
    }
}

/// An AUDIO scan without its analysis columns.
struct Lifted {
    scan: TableScan,
    /// The analysis columns it projected.
    expensive: HashSet<String>,
    /// Their feature groups.
    groups: Vec<&'static str>,
}

impl Lifted {
    fn of(scan: &TableScan) -> Result<Option<Self>> {
        let provider = source_as_provider(&scan.source)?;
        let Some(table) = provider.downcast_ref::<AudioTable>() else {
            return Ok(None);
        };
        if table.has_own_store() {
            return Ok(None);
        }
        let schema = provider.schema();
        let projection = scan
            .projection
            .clone()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        let name = |i: usize| schema.field(i).name().as_str();
        if projection.iter().any(|&i| name(i) == "error") {
            return Ok(None);
        }
        let mut expensive = HashSet::new();
        let mut groups: Vec<&'static str> = Vec::new();
        let mut cheap = Vec::new();
        for &i in &projection {
            match columns::cost_of(name(i)) {
                Some(Cost::Decode) => {
                    expensive.insert(name(i).to_owned());
                    match columns::group_of(name(i)) {
                        Some(g) if g != DECODE_GROUP && !groups.contains(&g) => groups.push(g),
                        _ => {}
                    }
                }
                _ => cheap.push(i),
            }
        }
        // `analyze(path, groups)` needs a group; the decode columns alone stay in the scan.
        if groups.is_empty() {
            return Ok(None);
        }
        let path = schema.index_of("path")?;
        if !cheap.contains(&path) {
            cheap.push(path);
        }
        let scan = TableScanBuilder::from(scan.clone())
            .with_projection(Some(cheap))
            .build()?;
        Ok(Some(Self {
            scan,
            expensive,
            groups,
        }))
    }
}

impl OptimizerRule for LateAnalysis {
    fn name(&self) -> &str {
        "audiolake_late_analysis"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let cuts_rows = match &plan {
            LogicalPlan::Limit(_) => true,
            LogicalPlan::Sort(sort) => sort.fetch.is_some(),
            _ => false,
        };
        if !cuts_rows {
            return Ok(Transformed::no(plan));
        }
        Ok(match self.lift(&plan)? {
            Some(lifted) => Transformed::yes(lifted),
            None => Transformed::no(plan),
        })
    }
}
