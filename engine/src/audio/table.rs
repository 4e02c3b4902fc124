//! `CREATE EXTERNAL TABLE ... STORED AS AUDIO`: the factory, the table and its listing.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::arrow::compute::kernels::boolean::and_kleene;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{plan_err, DFSchema};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::utils::expr_to_columns;
use datafusion::logical_expr::{CreateExternalTable, Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use super::columns::{self, Cost};
use super::file_source::{self, file_url, Listed};
use crate::error::EngineError;
use crate::location::{object_path, resolve_location, store_url};
use crate::object_stores::{GuardedRegistry, S3_OPTIONS};
use crate::progress::ScanProgress;
use crate::store::FeatureStore;

/// File extensions listed by default: every container symphonia demuxes here.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "mp3", "mp2", "mp1", "flac", "wav", "wave", "ogg", "oga", "m4a", "m4b", "mp4", "aac", "aif",
    "aiff", "aifc", "caf", "mka",
];

/// Creates [`AudioTable`]s for `STORED AS AUDIO`.
#[derive(Debug)]
pub struct AudioTableFactory {
    progress: Arc<ScanProgress>,
    features: Arc<FeatureStore>,
    stores: Arc<GuardedRegistry>,
}

impl AudioTableFactory {
    pub fn new(
        progress: Arc<ScanProgress>,
        features: Arc<FeatureStore>,
        stores: Arc<GuardedRegistry>,
    ) -> Self {
        Self {
            progress,
            features,
            stores,
        }
    }
}

#[async_trait]
impl TableProviderFactory for AudioTableFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        if !cmd.schema.fields().is_empty() {
            return plan_err!(
                "AUDIO tables have a fixed set of columns; omit the column list in CREATE EXTERNAL TABLE {}",
                cmd.name
            );
        }
        if !cmd.table_partition_cols.is_empty() {
            return plan_err!("AUDIO tables do not support PARTITIONED BY");
        }
        let [location] = cmd.locations.as_slice() else {
            return plan_err!("an AUDIO table takes exactly one LOCATION");
        };
        let url = resolve_location(location)?;
        let options = AudioOptions::parse(&cmd.options)?;
        if !options.s3.is_empty() && url.scheme() != "s3" {
            return plan_err!("aws.* options only apply to s3:// locations, not {url}");
        }
        // Made now so that a bad option fails the CREATE, not the first query.
        self.stores.table_store(&url, &options.s3)?;
        Ok(Arc::new(AudioTable {
            url,
            extensions: options.extensions,
            s3: options.s3,
            stores: Arc::clone(&self.stores),
            progress: Arc::clone(&self.progress),
            features: Arc::clone(&self.features),
        }))
    }
}

impl AudioTableFactory {
    /// The table a serialised plan names (see [`AudioTable::spec`]), over this process's
    /// stores and feature store; its location is checked as a `CREATE` would.
    pub fn from_spec(&self, spec: TableSpec) -> Result<AudioTable> {
        let url = resolve_location(&spec.location)?;
        if spec.extensions.is_empty() {
            return plan_err!("an AUDIO table needs at least one extension");
        }
        Ok(AudioTable {
            url,
            extensions: spec.extensions.into_iter().collect(),
            s3: Vec::new(),
            stores: Arc::clone(&self.stores),
            progress: Arc::clone(&self.progress),
            features: Arc::clone(&self.features),
        })
    }
}

/// What a serialised plan carries of an AUDIO table: no credentials, since each process reaches
/// the files with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub location: String,
    /// Sorted, so that equal tables encode to equal bytes.
    pub extensions: Vec<String>,
}

/// Options of an AUDIO table (keys as DataFusion passes them, lower case).
struct AudioOptions {
    extensions: HashSet<String>,
    s3: Vec<(String, String)>,
}

impl AudioOptions {
    fn parse(options: &std::collections::HashMap<String, String>) -> Result<Self> {
        let mut extensions: HashSet<String> =
            DEFAULT_EXTENSIONS.iter().map(|e| e.to_string()).collect();
        let mut s3 = Vec::new();
        for (key, value) in options {
            match key.as_str() {
                "format.extensions" | "extensions" => {
                    extensions = value
                        .split(',')
                        .map(|e| e.trim().trim_start_matches('.').to_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect();
                    if extensions.is_empty() {
                        return Err(EngineError::InvalidOption(format!(
                            "'extensions' needs at least one extension, e.g. 'mp3,flac' (got '{value}')"
                        ))
                        .into());
                    }
                }
                k if S3_OPTIONS.iter().any(|(name, _)| *name == k) => {
                    s3.push((k.to_string(), value.clone()))
                }
                other => {
                    let valid: Vec<&str> = std::iter::once("extensions")
                        .chain(S3_OPTIONS.iter().map(|(name, _)| *name))
                        .collect();
                    return Err(EngineError::InvalidOption(format!(
                        "unknown option '{}'; valid options: {}",
                        other.trim_start_matches("format."),
                        valid.join(", ")
                    ))
                    .into());
                }
            }
        }
        Ok(Self { extensions, s3 })
    }
}

/// A folder or bucket prefix of audio files, one row per file.
#[derive(Debug)]
pub struct AudioTable {
    url: Url,
    extensions: HashSet<String>,
    /// The table's own `aws.*` options: they configure its store and no other table's.
    s3: Vec<(String, String)>,
    stores: Arc<GuardedRegistry>,
    progress: Arc<ScanProgress>,
    features: Arc<FeatureStore>,
}

impl AudioTable {
    /// Whether the table reaches its files through a client of its own (`aws.*` options),
    /// which the path functions do not use.
    pub fn has_own_store(&self) -> bool {
        !self.s3.is_empty()
    }

    /// The table as a plan sent to other processes carries it. A table with its own `aws.*`
    /// options cannot be sent: they may hold credentials, and each process has its own.
    pub fn spec(&self) -> Result<TableSpec> {
        if self.has_own_store() {
            return plan_err!(
                "the AUDIO table at {} has its own aws.* options, which are not sent to other \
                 processes: on a cluster, create it without them and give every process the \
                 credentials (environment, instance role or CREATE SECRET)",
                self.url
            );
        }
        let mut extensions: Vec<String> = self.extensions.iter().cloned().collect();
        extensions.sort();
        Ok(TableSpec {
            location: self.url.to_string(),
            extensions,
        })
    }

    /// Lists the audio files under the table's location, sorted by path, with their URLs.
    async fn list(&self, store: &Arc<dyn ObjectStore>) -> Result<Vec<Listed>> {
        let base = store_url(&self.url);
        let path = object_path(&self.url)?;
        // A location without a trailing slash may name a single file.
        if !self.url.path().ends_with('/') {
            if let Ok(meta) = store.head(&path).await {
                let url = file_url(&base, &meta.location);
                return Ok(vec![(meta, url)]);
            }
        }
        let prefix_depth = path.parts().count();
        let mut files: Vec<ObjectMeta> = store
            .list(Some(&path))
            .try_filter(|meta| futures::future::ready(self.is_listed(meta, prefix_depth)))
            .try_collect()
            .await
            .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(files
            .into_iter()
            .map(|meta| {
                let url = file_url(&base, &meta.location);
                (meta, url)
            })
            .collect())
    }

    /// The local folder the table lists, when its location is one (for watching it).
    pub fn local_folder(&self) -> Option<LocalFolder> {
        if self.url.scheme() != "file" {
            return None;
        }
        let path = self.url.to_file_path().ok()?;
        // Without a trailing slash the location may name a single file.
        (self.url.path().ends_with('/') || path.is_dir()).then(|| LocalFolder {
            path,
            extensions: self.extensions.clone(),
        })
    }

    /// The store the table reads its files from.
    fn store(&self) -> Result<Arc<dyn ObjectStore>> {
        self.stores.table_store(&self.url, &self.s3)
    }

    /// The audio files the table reads now, sorted by path.
    pub async fn files(&self) -> Result<Vec<ObjectMeta>> {
        Ok(self
            .list(&self.store()?)
            .await?
            .into_iter()
            .map(|(meta, _)| meta)
            .collect())
    }

    fn is_listed(&self, meta: &ObjectMeta, prefix_depth: usize) -> bool {
        lists(&self.extensions, meta.location.parts().skip(prefix_depth))
    }
}

/// Whether a table with `extensions` lists the file whose path below the table's location is
/// `below`: an audio extension, and no hidden file or folder.
fn lists<S: AsRef<str>>(extensions: &HashSet<String>, below: impl Iterator<Item = S>) -> bool {
    let mut name = None;
    for part in below {
        if part.as_ref().starts_with('.') {
            return false;
        }
        name = Some(part);
    }
    name.as_ref()
        .and_then(|n| n.as_ref().rsplit_once('.'))
        .is_some_and(|(_, ext)| extensions.contains(&ext.to_lowercase()))
}

/// The local folder of an AUDIO table, and which of the files below it the table lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFolder {
    path: PathBuf,
    extensions: HashSet<String>,
}

impl LocalFolder {
    /// The folder, with its symlinks resolved (as the table's location is).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` lies below the folder, with no hidden file or folder on the way.
    pub fn contains(&self, path: &Path) -> bool {
        self.below(path).is_some_and(|parts| !parts.is_empty())
    }

    /// Whether the table lists `file`: below the folder, with one of the table's extensions,
    /// and no hidden file or folder on the way.
    pub fn lists(&self, file: &Path) -> bool {
        self.below(file)
            .is_some_and(|parts| lists(&self.extensions, parts.into_iter()))
    }

    /// The names on the way from the folder to `path`; none for a path elsewhere or hidden.
    fn below<'a>(&self, path: &'a Path) -> Option<Vec<&'a str>> {
        let mut parts = Vec::new();
        for component in path.strip_prefix(&self.path).ok()?.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_str()?),
                _ => return None,
            }
        }
        parts.iter().all(|p| !p.starts_with('.')).then_some(parts)
    }
}

/// True when every column `expr` uses is a listing column.
fn on_listing_columns(expr: &Expr) -> bool {
    let mut cols = HashSet::new();
    expr_to_columns(expr, &mut cols).is_ok()
        && cols
            .iter()
            .all(|c| columns::cost_of(&c.name) == Some(Cost::Listing))
}

/// Keeps the files for which every filter is true (filters use listing columns only).
fn filter_files(state: &dyn Session, files: Vec<Listed>, filters: &[Expr]) -> Result<Vec<Listed>> {
    if filters.is_empty() || files.is_empty() {
        return Ok(files);
    }
    let batch = columns::listing_batch(&files)?;
    let df_schema = DFSchema::try_from(columns::listing_schema().as_ref().clone())?;
    let mut mask: Option<BooleanArray> = None;
    for filter in filters {
        let expr = state.create_physical_expr(filter.clone(), &df_schema)?;
        let values = expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let Some(values) = values.as_any().downcast_ref::<BooleanArray>() else {
            return plan_err!("filter {filter} is not a boolean expression");
        };
        mask = Some(match mask {
            Some(m) => and_kleene(&m, values)?,
            None => values.clone(),
        });
    }
    let mask = mask.expect("at least one filter");
    Ok(files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
        .map(|(_, f)| f)
        .collect())
}

#[async_trait]
impl TableProvider for AudioTable {
    fn schema(&self) -> SchemaRef {
        columns::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if on_listing_columns(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let store = self.store()?;
        let files = self.list(&store).await?;
        let mut files = filter_files(state, files, filters)?;
        // Every filter pushed here is exact, so a limit may cut the listing before probing.
        if let Some(limit) = limit {
            files.truncate(limit);
        }
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..columns::schema().fields().len()).collect());
        file_source::plan(
            &self.url,
            GuardedRegistry::table_store_url(&self.url, &self.s3),
            files,
            projection,
            state.config_options(),
            Arc::clone(&self.progress),
            Arc::clone(&self.features),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_folder_lists_the_files_its_table_reads() {
        let folder = LocalFolder {
            path: PathBuf::from("/music"),
            extensions: ["mp3", "flac"].map(String::from).into(),
        };
        for (file, listed) in [
            ("/music/a.mp3", true),
            ("/music/jazz/B.FLAC", true),
            ("/music/a.wav", false),
            ("/music/a", false),
            ("/music/.a.mp3", false),
            ("/music/.partial/a.mp3", false),
            ("/music/store/features/rhythm/part.parquet", false),
            ("/musical/a.mp3", false),
            ("/music/../etc/a.mp3", false),
            ("/music", false),
        ] {
            assert_eq!(folder.lists(Path::new(file)), listed, "{file}");
        }
        for (path, contained) in [
            ("/music/jazz", true),
            ("/music/jazz/a.txt", true),
            ("/music/.cache", false),
            ("/music", false),
            ("/musical", false),
        ] {
            assert_eq!(folder.contains(Path::new(path)), contained, "{path}");
        }
    }
}
