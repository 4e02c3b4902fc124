//! Which queries a client sends to the cluster: those that read files (AUDIO and listing
//! tables) and nothing that lives in this process only. The rest (system tables, memory tables,
//! index scans, `similar()`, `SELECT 1`) runs here, where their data is.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::Result;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::audio::AudioTable;

/// Plans on the cluster (`remote`, Ballista's planner) what reads files and can be sent there,
/// and here what cannot.
#[derive(Debug)]
pub(super) struct ClusterPlanner {
    pub remote: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match runs_on_cluster(plan)? {
            true => self.remote.create_physical_plan(plan, session).await,
            false => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(plan, session)
                    .await
            }
        }
    }
}

/// Whether every table `plan` scans can be sent to the cluster, and one of them reads files.
fn runs_on_cluster(plan: &LogicalPlan) -> Result<bool> {
    let (mut files, mut local) = (false, false);
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = source_as_provider(&scan.source)?;
            match provider.downcast_ref::<AudioTable>() {
                // Its own aws.* options hold credentials, which are not sent.
                Some(audio) if audio.has_own_store() => local = true,
                Some(_) => files = true,
                None if provider.downcast_ref::<ListingTable>().is_some() => files = true,
                None => local = true,
            }
        }
        Ok(match local {
            true => TreeNodeRecursion::Stop,
            false => TreeNodeRecursion::Continue,
        })
    })?;
    Ok(files && !local)
}
