//! The physical scan of an AUDIO table: files spread over partitions, probed in small batches on
//! blocking threads, one row per file whatever happens to it.

use std::fmt;
use std::sync::Arc;

use audiolake_udf::probe::{panic_message, probe, AudioHeader};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use url::Url;

use super::columns::{self, Cost, FileRow};
use super::source::ObjectSource;
use crate::progress::ScanProgress;

/// Files per output batch when files are opened: small, so partitions stay busy and results
/// stream early.
const FILES_PER_BATCH: usize = 16;
/// Files opened at once per partition (hides object-store latency).
const PROBES_IN_FLIGHT: usize = 4;

type Listed = (ObjectMeta, String);

#[derive(Debug)]
pub struct AudioScanExec {
    store_url: Url,
    location: String,
    partitions: Vec<Arc<Vec<Listed>>>,
    projection: Vec<usize>,
    schema: SchemaRef,
    probe: bool,
    progress: Arc<ScanProgress>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl AudioScanExec {
    pub fn new(
        store_url: Url,
        location: String,
        files: Vec<Listed>,
        projection: Vec<usize>,
        target_partitions: usize,
        progress: Arc<ScanProgress>,
    ) -> Result<Self> {
        let schema = Arc::new(columns::schema().project(&projection)?);
        let probe = columns::cost_of_indices(&projection) >= Cost::Header;
        // Listing-only scans are cheap: one partition is enough.
        let n = if probe {
            target_partitions.min(files.len()).max(1)
        } else {
            1
        };
        let mut partitions = vec![Vec::new(); n];
        for (i, file) in files.into_iter().enumerate() {
            partitions[i % n].push(file);
        }
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(n),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            store_url,
            location,
            partitions: partitions.into_iter().map(Arc::new).collect(),
            projection,
            schema,
            probe,
            progress,
            metrics: ExecutionPlanMetricsSet::new(),
            properties,
        })
    }

    fn file_count(&self) -> usize {
        self.partitions.iter().map(|p| p.len()).sum()
    }
}

impl DisplayAs for AudioScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AudioScanExec: location={}, files={}, partitions={}, reads={}",
            self.location,
            self.file_count(),
            self.partitions.len(),
            if self.probe { "headers" } else { "listing" }
        )
    }
}

impl ExecutionPlan for AudioScanExec {
    fn name(&self) -> &str {
        "AudioScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "AudioScanExec has no children".to_string(),
            ))
        }
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let files = Arc::clone(self.partitions.get(partition).ok_or_else(|| {
            DataFusionError::Internal(format!("AudioScanExec has no partition {partition}"))
        })?);
        let schema = Arc::clone(&self.schema);
        let projection = self.projection.clone();

        if !self.probe {
            let batch_size = context.session_config().batch_size().max(1);
            let batches: Vec<Result<_>> = files
                .chunks(batch_size)
                .map(|chunk| {
                    let rows: Vec<FileRow<'_>> = chunk
                        .iter()
                        .map(|(meta, url)| FileRow {
                            meta,
                            url,
                            header: None,
                        })
                        .collect();
                    columns::batch(&rows, &projection)
                })
                .collect();
            let stream = futures::stream::iter(batches);
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)));
        }

        let store = context
            .runtime_env()
            .object_store_registry
            .get_store(&self.store_url)?;
        let bytes_read = MetricBuilder::new(&self.metrics).counter("bytes_read", partition);
        let files_opened = MetricBuilder::new(&self.metrics).counter("files_opened", partition);
        let progress = Arc::clone(&self.progress);
        progress.add_total(files.len() as u64);

        let indices = 0..files.len();
        let stream = futures::stream::iter(indices)
            .map(move |i| {
                let (store, files) = (Arc::clone(&store), Arc::clone(&files));
                let (bytes_read, progress) = (bytes_read.clone(), Arc::clone(&progress));
                let files_opened = files_opened.clone();
                async move {
                    let meta = files[i].0.clone();
                    let header = probe_file(store, meta, bytes_read).await;
                    files_opened.add(1);
                    progress.file_done();
                    (i, header)
                }
            })
            .buffered(PROBES_IN_FLIGHT)
            .chunks(FILES_PER_BATCH)
            .map({
                let files = Arc::clone(&self.partitions[partition]);
                move |probed| {
                    let rows: Vec<FileRow<'_>> = probed
                        .iter()
                        .map(|(i, header)| FileRow {
                            meta: &files[*i].0,
                            url: &files[*i].1,
                            header: Some(header),
                        })
                        .collect();
                    columns::batch(&rows, &projection)
                }
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Probes one file on a blocking thread. Every failure, a panic included, becomes the message
/// of the row's `error` column.
async fn probe_file(
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    bytes_read: Count,
) -> std::result::Result<AudioHeader, String> {
    let runtime = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || {
        let extension = meta.location.extension().map(str::to_lowercase);
        let source = ObjectSource::new(store, meta.location, meta.size, runtime, bytes_read);
        probe(Box::new(source), extension.as_deref()).map_err(|e| e.to_string())
    });
    match task.await {
        Ok(result) => result,
        Err(join) if join.is_panic() => Err(format!(
            "reader panicked: {}",
            panic_message(join.into_panic().as_ref())
        )),
        Err(join) => Err(format!("probe was cancelled: {join}")),
    }
}
