//! Plans shared by every connection: a query's logical plan as DataFusion's SQL planner makes
//! it, with its parameters, before analysis and optimisation. Each execution analyses and
//! optimises it anew, so indexes created since are used, views read as they are now and
//! `now()` is the statement's time, unless optimising after binding could not change it: then
//! the extended protocol's executions share one optimised plan with placeholders and only bind
//! them (an optimisation took a quarter of a point query's CPU). What a plan holds that can go
//! stale is the tables it names,
//! so one is reused only while each table is still the one the catalog holds (a table dropped
//! and made again, a view replaced or a feature table republished is planned anew). Rows added
//! to a table, in memory or as files, need nothing: they are read when the plan runs.
//!
//! Keyed by the statement's text, the declared parameter types and the session's settings (see
//! `snapshot`). `audiolake serve` runs one server per process, so the cache is the process's.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::{source_as_provider, TableProvider};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, TableSource, Volatility};
use datafusion::sql::sqlparser::ast::{ObjectType, Statement};
use datafusion_postgres::pgwire::api::Type;
use lru::LruCache;
use parking_lot::Mutex;

use super::super::metrics::Metrics;
use super::super::plan_writes;
use super::snapshot::Snapshot;
use super::DfStatementTuple;

/// Plans kept; the least recently used goes first.
const CAPACITY: usize = 1024;

/// Longer statements are planned each time: the cache's memory stays bounded whatever clients
/// send (a client's statements of up to pgwire's message size would otherwise each be kept).
const MAX_TEXT: usize = 16 * 1024;

pub(super) static PLANS: LazyLock<PlanCache> = LazyLock::new(PlanCache::new);

/// A statement's text, the session's settings (see `snapshot`) and the parameter types the
/// client declared (their OIDs, 0 for those left to the server): two clients that send the same
/// text with other types get plans of their own.
type Key = (String, u64, Vec<u32>);

fn key(sql: &str, snapshot: &Snapshot, declared: &[Option<Type>]) -> Key {
    let declared = declared.iter().map(|t| t.as_ref().map_or(0, Type::oid));
    (sql.to_owned(), snapshot.settings, declared.collect())
}

pub(super) struct PlanCache {
    plans: Mutex<LruCache<Key, DfStatementTuple>>,
    /// The extended protocol's plans analysed and optimised with their placeholders, for those
    /// that optimising again after binding could not change (see [`PlanCache::optimized`]),
    /// each with the plan it was made from: the same text planned at another time (a view
    /// replaced in between) may be another plan.
    optimized: Mutex<LruCache<Key, (LogicalPlan, LogicalPlan)>>,
}

impl PlanCache {
    fn new() -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).expect("the capacity is not zero");
        Self {
            plans: Mutex::new(LruCache::new(capacity)),
            optimized: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// `plan` (of `sql` with the parameter types `declared`) analysed and optimised with its
    /// placeholders, made once and kept, with the plan it was made from, while the tables it
    /// reads are current; `None` when it must be optimised after binding: a plan that calls a function whose value is not fixed
    /// by its arguments (`now()`, `random()`, `current_user`: the optimiser would fold them
    /// into the first execution's values), that the kNN rule may turn into an index scan once
    /// its parameters are values, or whose placeholders the optimiser removed (the bound
    /// values would no longer line up with them).
    pub(super) async fn optimized(
        &self,
        sql: &str,
        declared: &[Option<Type>],
        snapshot: &Snapshot,
        plan: &LogicalPlan,
    ) -> Option<LogicalPlan> {
        let key = key(sql, snapshot, declared);
        let cached = self.optimized.lock().get(&key).cloned();
        if let Some((source, optimized)) = cached {
            // Another plan of the same text (a statement prepared before a view changed, or
            // after) is optimised on its own.
            if source == *plan && reads_current_tables(&optimized, &snapshot.state).await {
                return Some(optimized);
            }
        }
        if sql.len() > MAX_TEXT
            || !reusable_optimized(plan)
            || !reads_current_tables(plan, &snapshot.state).await
        {
            return None;
        }
        let optimized = snapshot.state.optimize(plan).ok()?;
        let placeholders = |p: &LogicalPlan| {
            p.get_parameter_types()
                .map(|t| t.into_keys().collect::<BTreeSet<_>>())
        };
        if placeholders(plan).ok()? != placeholders(&optimized).ok()? {
            return None;
        }
        self.optimized
            .lock()
            .put(key, (plan.clone(), optimized.clone()));
        Some(optimized)
    }

    /// Forgets every kept plan (see [`changes_views`]).
    pub(super) fn clear(&self) {
        self.plans.lock().clear();
        self.optimized.lock().clear();
    }

    /// The plan made before of `sql` with the parameter types `declared` in a session with the
    /// settings of `snapshot`, if the tables it reads are still those of the catalog; counted
    /// as a hit or a miss.
    pub(super) async fn get(
        &self,
        sql: &str,
        declared: &[Option<Type>],
        snapshot: &Snapshot,
        metrics: &Metrics,
    ) -> Option<DfStatementTuple> {
        let key = key(sql, snapshot, declared);
        let cached = self.plans.lock().get(&key).cloned();
        let current = match &cached {
            Some((_, Some((_, plan)))) => reads_current_tables(plan, &snapshot.state).await,
            _ => false,
        };
        metrics.plan_cache_lookup(current);
        if !current {
            self.plans.lock().pop(&key);
            return None;
        }
        cached
    }

    /// Keeps the plan `parsed` of `sql`, if it is a query that writes nothing and reads only
    /// tables of the catalog (not those a table function makes).
    pub(super) async fn put(
        &self,
        sql: &str,
        declared: &[Option<Type>],
        snapshot: &Snapshot,
        parsed: &DfStatementTuple,
    ) {
        let (_, Some((Statement::Query(_), plan))) = parsed else {
            return;
        };
        if sql.len() > MAX_TEXT {
            return;
        }
        if plan_writes::writes(plan) || !reads_current_tables(plan, &snapshot.state).await {
            return;
        }
        self.plans
            .lock()
            .put(key(sql, snapshot, declared), parsed.clone());
    }
}

/// Whether `statement` makes, replaces, changes or drops a view (or a schema, with its views):
/// SQL planning copies a view's query into each plan that reads it, so a kept plan cannot tell
/// that its view changed, and all are dropped after such a statement.
pub(super) fn changes_views(statement: &Statement) -> bool {
    match statement {
        Statement::CreateView(_) | Statement::AlterView { .. } => true,
        Statement::Drop { object_type, .. } => {
            matches!(object_type, ObjectType::View | ObjectType::Schema)
        }
        _ => false,
    }
}

/// Whether every table `plan` reads is the one `state`'s catalog holds under its name now.
async fn reads_current_tables(plan: &LogicalPlan, state: &SessionState) -> bool {
    let mut scans = Vec::new();
    // The closure never fails.
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans.push((scan.table_name.clone(), Arc::clone(&scan.source)));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let defaults = &state.config_options().catalog;
    for (name, source) in scans {
        let name = name.resolve(&defaults.default_catalog, &defaults.default_schema);
        let Some(schema) = state
            .catalog_list()
            .catalog(&name.catalog)
            .and_then(|catalog| catalog.schema(&name.schema))
        else {
            return false;
        };
        match schema.table(&name.table).await {
            Ok(Some(table)) if same_table(&table, &source) => {}
            _ => return false,
        }
    }
    true
}

/// Whether `plan`, optimised before its parameters are bound, answers as it would optimised
/// after: it calls only functions whose value its arguments fix, and none that the kNN rule
/// answers from an index.
fn reusable_optimized(plan: &LogicalPlan) -> bool {
    if audiolake::index::calls_distance(plan) {
        return false;
    }
    let unfixed = |e: &Expr| {
        let volatility = match e {
            Expr::ScalarFunction(call) => call.func.signature().volatility,
            Expr::AggregateFunction(call) => call.func.signature().volatility,
            Expr::WindowFunction(call) => call.fun.signature().volatility,
            _ => Volatility::Immutable,
        };
        Ok(volatility != Volatility::Immutable)
    };
    let mut found = false;
    // The closures never fail.
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            found |= e.exists(unfixed)?;
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(match found {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    });
    !found
}

fn same_table(table: &Arc<dyn TableProvider>, source: &Arc<dyn TableSource>) -> bool {
    source_as_provider(source)
        .is_ok_and(|planned| std::ptr::addr_eq(Arc::as_ptr(&planned), Arc::as_ptr(table)))
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;
    use datafusion::sql::parser::{DFParser, Statement as DfStatement};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

    use super::*;

    #[tokio::test]
    async fn a_plan_is_current_until_a_table_it_reads_is_made_again() {
        let ctx = SessionContext::new();
        let run = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { ctx.sql(sql).await.unwrap().collect().await.unwrap() }
        };
        run("CREATE TABLE t AS SELECT 1 AS x").await;
        let state = ctx.state();
        let plan = state
            .create_logical_plan("SELECT x FROM t WHERE x IN (SELECT x FROM t)")
            .await
            .unwrap();
        assert!(reads_current_tables(&plan, &state).await);
        // Rows are read when the plan runs: the table is the same.
        run("INSERT INTO t VALUES (2)").await;
        assert!(reads_current_tables(&plan, &state).await);
        run("DROP TABLE t").await;
        run("CREATE TABLE t AS SELECT 1 AS x").await;
        assert!(!reads_current_tables(&plan, &state).await);
        // A table function's table is made by its call, not held by the catalog.
        let series = state
            .create_logical_plan("SELECT * FROM generate_series(1, 3)")
            .await
            .unwrap();
        assert!(!reads_current_tables(&series, &state).await);
    }

    #[tokio::test]
    async fn optimised_plans_are_kept_only_where_binding_could_not_change_them() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t AS SELECT 1 AS x")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let snapshot = super::super::snapshot::Snapshots::default().take(&ctx);
        let cache = PlanCache::new();
        let mut kept = Vec::new();
        for sql in [
            "SELECT x FROM t WHERE x = $1",
            "SELECT x FROM t ORDER BY x LIMIT $1",
            // Folded into the first execution's time or draw.
            "SELECT x, now() FROM t WHERE x = $1",
            "SELECT x FROM t WHERE random() < $1",
            // The optimiser drops the unused `$2`: the values would not line up.
            "SELECT x FROM (SELECT x, $2 AS unused FROM t) AS s WHERE x = $1",
        ] {
            let plan = snapshot.state.create_logical_plan(sql).await.unwrap();
            if let Some(optimized) = cache.optimized(sql, &[], &snapshot, &plan).await {
                kept.push(sql);
                // The second execution takes the kept plan.
                let again = cache.optimized(sql, &[], &snapshot, &plan).await;
                assert_eq!(again, Some(optimized));
            }
        }
        assert_eq!(
            kept,
            [
                "SELECT x FROM t WHERE x = $1",
                "SELECT x FROM t ORDER BY x LIMIT $1"
            ]
        );
        assert_eq!(cache.optimized.lock().len(), 2);
    }

    #[tokio::test]
    async fn plans_are_made_again_once_a_view_they_read_is_replaced() {
        let ctx = SessionContext::new();
        let run = |sql: &'static str| {
            let ctx = ctx.clone();
            async move { ctx.sql(sql).await.unwrap().collect().await.unwrap() }
        };
        run("CREATE TABLE t AS SELECT 1 AS x").await;
        run("CREATE VIEW v AS SELECT x FROM t").await;
        let snapshot = super::super::snapshot::Snapshots::default().take(&ctx);
        let cache = PlanCache::new();
        let sql = "SELECT x FROM v WHERE x = $1";
        let optimized = || async {
            let plan = snapshot.state.create_logical_plan(sql).await.unwrap();
            let optimized = cache.optimized(sql, &[], &snapshot, &plan).await.unwrap();
            let shown = optimized.display_indent().to_string();
            shown
        };
        let first = optimized().await;
        assert_eq!(optimized().await, first);
        // SQL planning copies the view's query in: no plan names `v`. The new plan is not the
        // one the kept plan was made from, so it is optimised anew; the cache of unoptimised
        // plans cannot tell, so the statement that replaces a view drops them all.
        let replace = "CREATE OR REPLACE VIEW v AS SELECT x + 1 AS x FROM t";
        run(replace).await;
        let second = optimized().await;
        assert_ne!(second, first);
        assert!(second.contains("+ Int64(1)"), "{second}");
        let statement = DFParser::parse_sql_with_dialect(replace, &PostgreSqlDialect {})
            .unwrap()
            .pop_front()
            .unwrap();
        let DfStatement::Statement(statement) = statement else {
            unreachable!()
        };
        assert!(changes_views(&statement));
    }

    #[tokio::test]
    async fn long_statements_are_not_kept_and_declared_types_key_plans_of_their_own() {
        let ctx = SessionContext::new();
        let snapshot = super::super::snapshot::Snapshots::default().take(&ctx);
        let cache = PlanCache::new();
        for sql in [
            "SELECT 1".to_owned(),
            format!("SELECT 1 {}", " ".repeat(MAX_TEXT)),
        ] {
            let statement = DFParser::parse_sql_with_dialect(&sql, &PostgreSqlDialect {})
                .unwrap()
                .pop_front()
                .unwrap();
            let DfStatement::Statement(statement) = statement else {
                unreachable!()
            };
            let plan = snapshot.state.create_logical_plan(&sql).await.unwrap();
            let parsed = (sql.clone(), Some((*statement, plan)));
            cache.put(&sql, &[], &snapshot, &parsed).await;
            // The same text with a declared parameter type is another plan.
            cache
                .put(&sql, &[Some(Type::INT4)], &snapshot, &parsed)
                .await;
        }
        let plans = cache.plans.lock();
        assert_eq!(plans.len(), 2);
        assert!(plans.contains(&key("SELECT 1", &snapshot, &[])));
        assert!(plans.contains(&key("SELECT 1", &snapshot, &[Some(Type::INT4)])));
    }
}
