//! The scan of an AUDIO table as a DataFusion file source: which files go to which partition,
//! the statistics, the projection and `EXPLAIN`. The per-file work is in [`super::opener`].
//!
//! A scan of listing columns only opens no file: its rows come straight from the listing, as an
//! in-memory source. Any other scan is a `DataSourceExec` over a `FileScanConfig` whose
//! [`AudioSource`] opens each file with an [`AudioOpener`]; files are grouped by their bucket (a
//! stable hash of their URL, see [`crate::store::Buckets`]), so a file lands in the same group
//! from run to run (and on the same task when the plan is split across machines), and a task
//! reads only the stored parts of its group's buckets.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use audiolake_udf::features::AnalysisOptions;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::Statistics;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{
    FileGroup, FileOpener, FileScanConfig, FileScanConfigBuilder, FileSource,
};
use datafusion::datasource::projection::{ProjectionOpener, SplitProjection};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::projection::ProjectionExprs;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::{apply_expression_roots, DisplayFormatType, ExecutionPlan};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use url::Url;

use super::columns::{self, Work};
use super::opener::AudioOpener;
use crate::location::store_url;
use crate::progress::ScanProgress;
use crate::sql::settings;
use crate::store::{bucket_of, Buckets, FeatureStore, BUCKETS};

/// Decodes at once per core: CPU-bound, plus one more per core to hide reads.
const ANALYSES_PER_CORE: usize = 2;
/// Headers read at once per core (hides object-store latency).
const PROBES_PER_CORE: usize = 4;

/// A listed file and its URL.
pub(super) type Listed = (ObjectMeta, String);

/// The URL of the object at `location` in the store at `base` (`file:///` or `s3://bucket`).
pub(super) fn file_url(base: &Url, location: &Path) -> String {
    let mut url = base.clone();
    url.set_path(&format!("/{location}"));
    url.to_string()
}

/// What every partition of one scan shares.
#[derive(Debug)]
pub(super) struct ScanShared {
    /// The store's URL, to turn object paths back into file URLs.
    pub base: Url,
    pub features: Arc<FeatureStore>,
    pub progress: Arc<ScanProgress>,
    /// The session's analysis settings when the scan was planned.
    pub options: AnalysisOptions,
    /// Stored results are read once per scan, before the first file is looked up.
    pub refreshed: tokio::sync::OnceCell<()>,
    /// Every listed path, to tell a renamed file's stored results from a copy's; `None` in a
    /// task of a distributed scan, which is given its own files only.
    pub listed: Option<HashSet<String>>,
    /// The files this scan opens.
    pub files: usize,
    /// Files finished since the scan was planned: each time all are, buffered results are
    /// published, so a query's results are stored when it returns.
    pub finished: AtomicUsize,
}

impl ScanShared {
    fn new(
        base: Url,
        features: Arc<FeatureStore>,
        progress: Arc<ScanProgress>,
        options: AnalysisOptions,
        listed: Option<HashSet<String>>,
        files: usize,
    ) -> Self {
        Self {
            base,
            features,
            progress,
            options,
            refreshed: tokio::sync::OnceCell::new(),
            listed,
            files,
            finished: AtomicUsize::new(0),
        }
    }
}

/// Plans the scan of `files` (already filtered and cut to the query's limit).
pub(super) fn plan(
    table_url: &Url,
    object_store_url: Url,
    files: Vec<Listed>,
    projection: Vec<usize>,
    config: &ConfigOptions,
    progress: Arc<ScanProgress>,
    features: Arc<FeatureStore>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let work = Work::of(&projection);
    if work.listing_only() {
        // The listing columns come first in the table, so the projection's indices hold.
        let batch = columns::listing_batch(&files)?;
        return Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            columns::listing_schema(),
            Some(projection),
        )?);
    }

    let per_core = match work.decode {
        Some(_) => ANALYSES_PER_CORE,
        None => PROBES_PER_CORE,
    };
    let count = files.len();
    // A power of two, so that each group is one class of buckets.
    let wanted = (config.execution.target_partitions.max(1) * per_core).clamp(1, count.max(1));
    let groups = group_by_path(&files, prev_power_of_two(wanted).min(BUCKETS as usize));
    let options = match work.decode {
        Some(_) => settings::analysis_options(config)?,
        None => AnalysisOptions::default(),
    };
    let listed = files.into_iter().map(|(_, url)| url).collect();
    let shared = Arc::new(ScanShared::new(
        store_url(table_url),
        features,
        progress,
        options,
        Some(listed),
        count,
    ));
    let source = Arc::new(AudioSource::new(shared, table_url.to_string()));
    let statistics =
        Statistics::new_unknown(&columns::schema()).with_num_rows(Precision::Exact(count));
    let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(object_store_url)?, source)
        .with_file_groups(groups)
        .with_projection_indices(Some(projection))?
        .with_statistics(statistics)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

fn prev_power_of_two(n: usize) -> usize {
    match n {
        0 => 1,
        n => 1 << n.ilog2(),
    }
}

/// Spreads `files` over `n` groups (a power of two up to [`BUCKETS`]) by [`group_of`] their
/// URL.
fn group_by_path(files: &[Listed], n: usize) -> Vec<FileGroup> {
    let mut groups = vec![Vec::new(); n];
    for (meta, url) in files {
        groups[group_of(url, n)].push(PartitionedFile::new_from_meta(meta.clone()));
    }
    groups.into_iter().map(FileGroup::new).collect()
}

/// The group of the file at `url` among `n` (a power of two up to [`BUCKETS`]): its bucket's
/// class modulo `n`, the same in every process and run, whatever else is listed.
fn group_of(url: &str, n: usize) -> usize {
    bucket_of(url) as usize % n
}

/// What a serialised plan carries of an AUDIO scan besides DataFusion's `FileScanConfig` (file
/// groups, projection, statistics): see [`AudioSource::spec`] and [`AudioSource::from_spec`].
#[cfg(feature = "distributed")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSpec {
    /// The table's location, a URL.
    pub location: String,
    pub options: AnalysisOptions,
}

/// The AUDIO format as a DataFusion [`FileSource`]; `EXPLAIN` shows `file_type=audio` and what
/// the scan reads of each file.
#[derive(Debug, Clone)]
pub struct AudioSource {
    shared: Arc<ScanShared>,
    location: String,
    table_schema: TableSchema,
    projection: SplitProjection,
    metrics: ExecutionPlanMetricsSet,
}

impl AudioSource {
    fn new(shared: Arc<ScanShared>, location: String) -> Self {
        let table_schema = TableSchema::from(columns::schema());
        Self {
            shared,
            location,
            projection: SplitProjection::unprojected(&table_schema),
            table_schema,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    fn work(&self) -> Work {
        Work::of(&self.projection.file_indices)
    }

    #[cfg(feature = "distributed")]
    pub fn spec(&self) -> ScanSpec {
        ScanSpec {
            location: self.location.clone(),
            options: self.shared.options,
        }
    }

    /// The source of a scan planned in another process, as one task of it runs here: `files`
    /// are the files its plan gives it, read through this process's `features`. (Its
    /// projection comes with the `FileScanConfig`.)
    #[cfg(feature = "distributed")]
    pub fn from_spec(
        spec: ScanSpec,
        files: usize,
        features: Arc<FeatureStore>,
        progress: Arc<ScanProgress>,
    ) -> Result<Self> {
        let url = Url::parse(&spec.location).map_err(|e| {
            datafusion::error::DataFusionError::Plan(format!("bad AUDIO scan location: {e}"))
        })?;
        let shared = ScanShared::new(
            store_url(&url),
            features,
            progress,
            spec.options,
            None,
            files,
        );
        Ok(Self::new(Arc::new(shared), spec.location))
    }
}

impl FileSource for AudioSource {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        // Every partition of an execution opens once; the first announces the scan's files.
        if partition == 0 {
            self.shared.progress.add_total(self.shared.files as u64);
        }
        // A task of a distributed scan holds its own file groups only: it reads the stored
        // parts of their buckets. A scan in one process reads every part once for all.
        let buckets = match self.shared.listed {
            Some(_) => Buckets::ALL,
            None => Buckets::holding(base_config.file_groups.iter().flat_map(|group| {
                group
                    .iter()
                    .map(|file| bucket_of(&file_url(&self.shared.base, &file.object_meta.location)))
            })),
        };
        let opener = AudioOpener::new(
            Arc::clone(&self.shared),
            object_store,
            self.projection.file_indices.clone(),
            &self.metrics,
            partition,
            buckets,
        );
        ProjectionOpener::try_new(
            self.projection.clone(),
            Arc::new(opener),
            self.table_schema.file_schema(),
        )
    }

    fn table_schema(&self) -> &TableSchema {
        &self.table_schema
    }

    /// Each file is one row: batches are as large as the files a partition has finished.
    fn with_batch_size(&self, _batch_size: usize) -> Arc<dyn FileSource> {
        Arc::new(self.clone())
    }

    fn try_pushdown_projection(
        &self,
        projection: &ProjectionExprs,
    ) -> Result<Option<Arc<dyn FileSource>>> {
        let merged = self.projection.source.try_merge(projection)?;
        let mut source = self.clone();
        source.projection = SplitProjection::new(self.table_schema.file_schema(), &merged);
        Ok(Some(Arc::new(source)))
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        Some(&self.projection.source)
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    fn file_type(&self) -> &str {
        "audio"
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let work = self.work();
        let reads = match &work.decode {
            Some(groups) if groups.is_empty() => "audio (decode only)".to_string(),
            Some(groups) => format!("audio ({})", groups.join(", ")),
            None if work.probe => "headers".to_string(),
            None => "listing".to_string(),
        };
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, ", location={}, reads={reads}", self.location)
            }
            DisplayFormatType::TreeRender => writeln!(f, "reads={reads}"),
        }
    }

    /// A file is one row: it cannot be split into byte ranges.
    fn supports_repartitioning(&self) -> bool {
        false
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.projection.source.iter(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(n: usize) -> Vec<Listed> {
        (0..n)
            .map(|i| {
                let location = Path::from(format!("music/{i:03}.mp3"));
                let url = format!("file:///{location}");
                let meta = ObjectMeta {
                    location,
                    last_modified: Default::default(),
                    size: 1,
                    e_tag: None,
                    version: None,
                };
                (meta, url)
            })
            .collect()
    }

    #[test]
    fn files_are_grouped_by_a_stable_hash_of_their_url() {
        let files = listed(100);
        let groups = group_by_path(&files, 4);
        assert_eq!(groups.len(), 4);
        // A fair share in each group.
        assert!(
            groups.iter().all(|g| (10..=40).contains(&g.len())),
            "{groups:?}"
        );
        for (i, group) in groups.iter().enumerate() {
            for file in group.iter() {
                let url = format!("file:///{}", file.object_meta.location);
                assert_eq!(group_of(&url, 4), i, "{url}");
            }
        }
        // Groups are classes of buckets.
        assert_eq!(
            group_of("file:///music/000.mp3", 4),
            bucket_of("file:///music/000.mp3") as usize % 4
        );
        assert_eq!(group_of("file:///music/000.mp3", 4), 1);
        assert_eq!(prev_power_of_two(6), 4);
        assert_eq!(prev_power_of_two(1), 1);
    }

    #[test]
    fn file_urls_are_percent_encoded() {
        let base = Url::parse("s3://bucket").unwrap();
        let url = file_url(&base, &Path::from("a b/ç.mp3"));
        assert_eq!(url, "s3://bucket/a%20b/%C3%A7.mp3");
    }
}
