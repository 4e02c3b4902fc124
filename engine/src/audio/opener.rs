//! One file of an AUDIO scan: its header probed and its analysis read through the feature store
//! or computed by one decode, made into one row whatever happens to it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use audiolake_udf::stored_header::HEADER_GROUP;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpenFuture, FileOpener};
use datafusion::error::Result;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};
use futures::StreamExt;
use object_store::ObjectStore;

use super::columns::{self, FileRow, Work};
use super::file_source::{file_url, ScanShared};
use super::read_through::{analyze_cached, probe_cached, Request, Scope};
use crate::store::{stored_for, Buckets};

/// Opens the files of one partition of an AUDIO scan.
pub(super) struct AudioOpener {
    shared: Arc<ScanShared>,
    store: Arc<dyn ObjectStore>,
    /// Columns of the table schema to build, in order.
    columns: Arc<Vec<usize>>,
    work: Work,
    /// The stored groups the scan looks up: the header, and what its analysis needs.
    stored: Arc<Vec<&'static str>>,
    /// The buckets of the files this opener may be given: only stored parts that can hold
    /// them are read.
    buckets: Buckets,
    bytes_read: Count,
}

impl AudioOpener {
    pub fn new(
        shared: Arc<ScanShared>,
        store: Arc<dyn ObjectStore>,
        columns: Vec<usize>,
        metrics: &ExecutionPlanMetricsSet,
        partition: usize,
        buckets: Buckets,
    ) -> Self {
        let work = Work::of(&columns);
        let mut stored: Vec<&'static str> = Vec::new();
        if work.probe {
            stored.push(HEADER_GROUP);
        }
        if let Some(groups) = &work.decode {
            stored.extend(stored_for(groups));
        }
        Self {
            shared,
            store,
            columns: Arc::new(columns),
            work,
            stored: Arc::new(stored),
            buckets,
            bytes_read: MetricBuilder::new(metrics).counter("bytes_read", partition),
        }
    }
}

impl FileOpener for AudioOpener {
    fn open(&self, file: PartitionedFile) -> Result<FileOpenFuture> {
        let (shared, store) = (Arc::clone(&self.shared), Arc::clone(&self.store));
        let (columns, stored) = (Arc::clone(&self.columns), Arc::clone(&self.stored));
        let work = self.work.clone();
        let (buckets, bytes_read) = (self.buckets, self.bytes_read.clone());
        Ok(Box::pin(async move {
            let meta = file.object_meta;
            let url = file_url(&shared.base, &meta.location);
            let features = &shared.features;
            shared
                .refreshed
                .get_or_try_init(|| features.refresh(&stored, buckets))
                .await?;
            let header = match work.probe {
                true => {
                    let probed = probe_cached(
                        features,
                        store.clone(),
                        &meta,
                        &url,
                        buckets,
                        bytes_read.clone(),
                    );
                    Some(probed.await?)
                }
                false => None,
            };
            // A file whose header cannot be read cannot be decoded either.
            let analysis = match &work.decode {
                Some(_) if matches!(header, Some(Err(_))) => None,
                Some(groups) => {
                    let request = Request {
                        groups,
                        options: shared.options,
                    };
                    let analysis = analyze_cached(
                        features,
                        store,
                        &meta,
                        &url,
                        request,
                        Scope {
                            listed: shared.listed.as_ref(),
                            buckets,
                        },
                        bytes_read,
                    );
                    Some(analysis.await?)
                }
                None => None,
            };
            shared.progress.file_done();
            let row = FileRow {
                meta: &meta,
                url: &url,
                header: header.as_ref(),
                analysis: analysis.as_ref(),
            };
            let batch = columns::batch(&[row], &columns)?;
            // The scan's last file publishes what the scan analysed, whatever the flush policy.
            let finished = shared.finished.fetch_add(1, Ordering::AcqRel) + 1;
            if finished.is_multiple_of(shared.files) {
                features.flush().await?;
            }
            Ok(futures::stream::once(async move { Ok(batch) }).boxed())
        }))
    }
}
