//! The physical scan of an AUDIO table: files spread over partitions, probed or analysed in
//! small batches on blocking threads, one row per file whatever happens to it.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use audiolake_udf::features::AnalysisOptions;
use audiolake_udf::stored_header::HEADER_GROUP;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};

use super::columns::{self, FileRow, Work};
use super::read_through::{analyze_cached, probe_cached, Request};
use crate::progress::ScanProgress;
use crate::sql::settings;
use crate::store::{stored_for, FeatureStore};

/// Files per output batch when headers are read: small, so partitions stay busy and results
/// stream early.
const PROBED_PER_BATCH: usize = 16;
/// Headers read at once per partition (hides object-store latency).
const PROBES_IN_FLIGHT: usize = 4;
/// Files per output batch when files are decoded (seconds each, so fewer).
const ANALYZED_PER_BATCH: usize = 4;
/// Decodes at once per partition: CPU-bound, so one per core, plus one to hide reads.
const ANALYSES_IN_FLIGHT: usize = 2;

type Listed = (ObjectMeta, String);

/// The scan of an AUDIO table, shown as `AudioScanExec` in `EXPLAIN`.
///
/// # Execution overview
///
/// The table lists its files (with filters on listing columns and `LIMIT` applied to the
/// listing) and hands them to [`AudioScanExec::new`], which spreads them round-robin over
/// up to `target_partitions` partitions, or one when only listing columns are asked for.
/// Each partition then makes one row per file, in small batches:
/// - listing columns only: rows straight from the listing, no file opened;
/// - header columns: the file's header probed through the object store (a few at once);
/// - analysis columns: the stored results read once per scan, then per file the feature
///   store's results or one decode of what is missing (`read_through`), on blocking threads.
///
/// A file that cannot be read is a row with `error` set. Files done are counted in
/// [`ScanProgress`]; `bytes_read` and `files_opened` show in `EXPLAIN ANALYZE`.
#[derive(Debug)]
pub struct AudioScanExec {
    store: Arc<dyn ObjectStore>,
    location: String,
    partitions: Vec<Arc<Vec<Listed>>>,
    projection: Vec<usize>,
    schema: SchemaRef,
    work: Work,
    progress: Arc<ScanProgress>,
    features: Arc<FeatureStore>,
    /// Stored results are read once per scan, before the first file is looked up.
    refreshed: Arc<tokio::sync::OnceCell<()>>,
    /// Every listed path, to tell a renamed file's stored results from a copy's.
    listed: Arc<HashSet<String>>,
    metrics: ExecutionPlanMetricsSet,
    properties: Arc<PlanProperties>,
}

impl AudioScanExec {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        location: String,
        files: Vec<Listed>,
        projection: Vec<usize>,
        target_partitions: usize,
        progress: Arc<ScanProgress>,
        features: Arc<FeatureStore>,
    ) -> Result<Self> {
        let schema = Arc::new(columns::schema().project(&projection)?);
        let work = Work::of(&projection);
        // Listing-only scans are cheap: one partition is enough.
        let n = if work.listing_only() {
            1
        } else {
            target_partitions.min(files.len()).max(1)
        };
        let listed = Arc::new(files.iter().map(|(_, url)| url.clone()).collect());
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
            store,
            location,
            partitions: partitions.into_iter().map(Arc::new).collect(),
            projection,
            schema,
            work,
            progress,
            features,
            refreshed: Arc::new(tokio::sync::OnceCell::new()),
            listed,
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
            match (&self.work.decode, self.work.probe) {
                (Some(groups), _) if groups.is_empty() => "audio (decode only)".to_string(),
                (Some(groups), _) => format!("audio ({})", groups.join(", ")),
                (None, true) => "headers".to_string(),
                (None, false) => "listing".to_string(),
            }
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

        if self.work.listing_only() {
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
                            analysis: None,
                        })
                        .collect();
                    columns::batch(&rows, &projection)
                })
                .collect();
            let stream = futures::stream::iter(batches);
            return Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)));
        }

        let store = Arc::clone(&self.store);
        let bytes_read = MetricBuilder::new(&self.metrics).counter("bytes_read", partition);
        let files_opened = MetricBuilder::new(&self.metrics).counter("files_opened", partition);
        let progress = Arc::clone(&self.progress);
        progress.add_total(files.len() as u64);

        let (in_flight, per_batch) = if self.work.decode.is_some() {
            (ANALYSES_IN_FLIGHT, ANALYZED_PER_BATCH)
        } else {
            (PROBES_IN_FLIGHT, PROBED_PER_BATCH)
        };
        let work = self.work.clone();
        let options = match work.decode {
            Some(_) => settings::analysis_options(context.session_config().options())?,
            None => AnalysisOptions::default(),
        };
        let (features, refreshed) = (Arc::clone(&self.features), Arc::clone(&self.refreshed));
        // The stored groups this scan looks up: the header, and what its analysis needs.
        let mut stored: Vec<&'static str> = Vec::new();
        if work.probe {
            stored.push(HEADER_GROUP);
        }
        if let Some(groups) = &work.decode {
            stored.extend(stored_for(groups));
        }
        let stored = Arc::new(stored);
        let listed = Arc::clone(&self.listed);
        let indices = 0..files.len();
        let stream = futures::stream::iter(indices)
            .map(move |i| {
                let (store, files) = (Arc::clone(&store), Arc::clone(&files));
                let (bytes_read, progress) = (bytes_read.clone(), Arc::clone(&progress));
                let files_opened = files_opened.clone();
                let (features, refreshed) = (Arc::clone(&features), Arc::clone(&refreshed));
                let (listed, stored) = (Arc::clone(&listed), Arc::clone(&stored));
                let work = work.clone();
                async move {
                    let (meta, url) = &files[i];
                    refreshed
                        .get_or_try_init(|| features.refresh(&stored))
                        .await?;
                    let header = match work.probe {
                        true => Some(
                            probe_cached(&features, store.clone(), meta, url, bytes_read.clone())
                                .await?,
                        ),
                        false => None,
                    };
                    // A file whose header cannot be read cannot be decoded either.
                    let analysis = match &work.decode {
                        Some(_) if matches!(header, Some(Err(_))) => None,
                        Some(groups) => {
                            let analysis = analyze_cached(
                                &features,
                                store,
                                meta,
                                url,
                                Request { groups, options },
                                Some(&listed),
                                bytes_read,
                            );
                            Some(analysis.await?)
                        }
                        None => None,
                    };
                    files_opened.add(1);
                    progress.file_done();
                    Ok((i, header, analysis))
                }
            })
            .buffered(in_flight)
            .chunks(per_batch)
            .map({
                let files = Arc::clone(&self.partitions[partition]);
                move |read| {
                    let read = read.into_iter().collect::<Result<Vec<_>>>()?;
                    let rows: Vec<FileRow<'_>> = read
                        .iter()
                        .map(|(i, header, analysis)| FileRow {
                            meta: &files[*i].0,
                            url: &files[*i].1,
                            header: header.as_ref(),
                            analysis: analysis.as_ref(),
                        })
                        .collect();
                    columns::batch(&rows, &projection)
                }
            });
        // What this partition analysed is published when it ends, whatever the flush policy.
        let features = Arc::clone(&self.features);
        let publish = futures::stream::once(async move { features.flush().await.map(|()| None) })
            .filter_map(|done: Result<Option<_>>| async move { done.transpose() });
        let stream = stream.chain(publish);
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
