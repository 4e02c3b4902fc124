//! Small queries stay small. DataFusion spreads a scan over `target_partitions` tasks once its
//! input holds more than one batch; for a point query on an in-memory or single-file table the
//! tasks, channels and merging cost more than the rows. When every input of a plan is an
//! in-memory or CSV/JSON/Parquet source of at most [`SMALL_BATCHES`] batches and nothing in it
//! reads audio, the plan runs in one partition: in-memory partitions are merged and round-robin
//! repartitions removed. (Round-robin output promises no distribution, so no operator above
//! depends on it; hash repartitions, which joins and grouped aggregates need, stay.)

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::async_func::AsyncFuncExec;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::placeholder_row::PlaceholderRowExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, StatisticsArgs, StatisticsContext};

/// Inputs of at most this many batches (`datafusion.execution.batch_size` rows each, 65,536
/// rows by default) run in one partition.
pub const SMALL_BATCHES: usize = 8;

/// File formats whose rows cost about as much as in-memory ones (not audio).
const PLAIN_FORMATS: &[&str] = &["parquet", "csv", "json", "arrow", "avro"];

#[derive(Debug, Default)]
pub struct SmallInputs;

impl PhysicalOptimizerRule for SmallInputs {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let limit = config
            .execution
            .batch_size
            .get()
            .saturating_mul(SMALL_BATCHES);
        if !is_small(&plan, limit)? {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            if let Some(repartition) = node.downcast_ref::<RepartitionExec>() {
                if matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_)) {
                    return Ok(Transformed::yes(Arc::clone(repartition.input())));
                }
            }
            Ok(match one_memory_partition(&node)? {
                Some(merged) => Transformed::yes(merged),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "audiolake_small_inputs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Whether every leaf of `plan` is a plain source and together they hold at most `limit` rows,
/// with no audio read on the way (audio functions run in `AsyncFuncExec`).
fn is_small(plan: &Arc<dyn ExecutionPlan>, limit: usize) -> Result<bool> {
    let mut rows = 0usize;
    let mut small = true;
    let statistics = StatisticsContext::new();
    plan.apply(|node| {
        let plain = if node.is::<AsyncFuncExec>() {
            false
        } else if !node.children().is_empty()
            || node.is::<EmptyExec>()
            || node.is::<PlaceholderRowExec>()
        {
            true
        } else if is_plain_source(node) {
            match statistics
                .compute(node.as_ref(), &StatisticsArgs::new())?
                .num_rows
            {
                Precision::Exact(n) | Precision::Inexact(n) => {
                    rows = rows.saturating_add(n);
                    rows <= limit
                }
                Precision::Absent => false,
            }
        } else {
            false
        };
        small &= plain;
        Ok(match small {
            true => TreeNodeRecursion::Continue,
            false => TreeNodeRecursion::Stop,
        })
    })?;
    Ok(small)
}

fn is_plain_source(node: &Arc<dyn ExecutionPlan>) -> bool {
    let Some(source) = node.downcast_ref::<DataSourceExec>() else {
        return false;
    };
    let source = source.data_source();
    source.is::<MemorySourceConfig>()
        || source
            .downcast_ref::<FileScanConfig>()
            .is_some_and(|files| PLAIN_FORMATS.contains(&files.file_source().file_type()))
}

/// An in-memory scan of several partitions as one, unless its partitions are each sorted (one
/// partition of them would not be).
fn one_memory_partition(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(source) = node.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some(memory) = source.data_source().downcast_ref::<MemorySourceConfig>() else {
        return Ok(None);
    };
    if memory.partitions().len() < 2 || !memory.sort_information().is_empty() {
        return Ok(None);
    }
    let batches = memory.partitions().concat();
    let merged = MemorySourceConfig::try_new(
        &[batches],
        memory.original_schema(),
        memory.projection().clone(),
    )?
    .with_limit(memory.fetch())
    .with_show_sizes(memory.show_sizes());
    Ok(Some(DataSourceExec::from_data_source(merged)))
}
