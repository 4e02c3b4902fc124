//! Plans shared by every connection: a query's logical plan as DataFusion's SQL planner makes
//! it, with its parameters, before analysis and optimisation. Each execution analyses and
//! optimises it anew, so indexes created since are used, views read as they are now and
//! `now()` is the statement's time; what a plan holds that can go stale is the tables it names,
//! so one is reused only while each table is still the one the catalog holds (a table dropped
//! and made again, a view replaced or a feature table republished is planned anew). Rows added
//! to a table, in memory or as files, need nothing: they are read when the plan runs.
//!
//! Keyed by the statement's text, the declared parameter types and the session's settings (see
//! `snapshot`). `audiolake serve` runs one server per process, so the cache is the process's.

use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{source_as_provider, TableProvider};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::{LogicalPlan, TableSource};
use datafusion::sql::sqlparser::ast::Statement;
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
}

impl PlanCache {
    fn new() -> Self {
        Self {
            plans: Mutex::new(LruCache::new(
                NonZeroUsize::new(CAPACITY).expect("the capacity is not zero"),
            )),
        }
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
