//! SQL functions on a file's path or URL: `analyze`, `bpm`, `musical_key`, `loudness_lufs`,
//! `mfcc`, `chroma`, `embedding`, `tags` and `decode`. They run the same extractors as the AUDIO table's columns and
//! read through the engine's guarded object stores, so the allowed locations apply.
//!
//! A path that is not a valid location, or lies outside the allowed ones, fails the query: that
//! is a mistake in the statement. A file that cannot be read or analysed gives NULL, and its
//! reason in `analyze(path).error`.
//!
//! `analyze(path, groups)` analyses only the feature groups of a comma-separated constant such
//! as `'rhythm,tonal'`; the struct keeps every field, NULL for the groups not asked for, so that
//! its type never depends on a value.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use audiolake_udf::features::{self, musicnn, AnalysisOutput, GroupResult, Value};
use audiolake_udf::samples::MAX_RATE;
use datafusion::arrow::array::{
    Array, ArrayRef, Float32Builder, Int64Array, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::cast::{as_int64_array, as_string_array};
use datafusion::common::exec_err;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::logical_expr::async_udf::{AsyncScalarUDF, AsyncScalarUDFImpl};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::audio::columns;
use crate::audio::read::{decode_object, Decoded};
use crate::audio::read_through::{analyze_cached, Request, Scope};
use crate::groups;
use crate::location::{object_path, resolve_location};
use crate::sql::settings;
use crate::store::{stored_for, Buckets, FeatureStore};

/// Files analysed at once per batch of rows (CPU-bound; as in the AUDIO scan).
const IN_FLIGHT: usize = 2;

/// Every path function, reading through `registry` and, for analyses, through the feature
/// store, which they share with the AUDIO tables.
pub fn path_functions(
    registry: Arc<dyn ObjectStoreRegistry>,
    features: Arc<FeatureStore>,
    memory: Arc<dyn MemoryPool>,
) -> Vec<ScalarUDF> {
    let field = |name: &'static str, group: &'static str| Kind::Field { name, group };
    [
        ("analyze", Kind::Analyze),
        ("bpm", field("bpm", "rhythm")),
        ("musical_key", Kind::Key),
        ("loudness_lufs", field("loudness_lufs", "loudness")),
        ("mfcc", field("mfcc", "timbre")),
        ("chroma", field("chroma", "timbre")),
        ("embedding", field("embedding", "musicnn")),
        ("tags", Kind::Tags),
        ("decode", Kind::Decode),
    ]
    .into_iter()
    .map(|(name, kind)| {
        let function = PathFunction::new(
            name,
            kind,
            Arc::clone(&registry),
            Arc::clone(&features),
            Arc::clone(&memory),
        );
        AsyncScalarUDF::new(Arc::new(function)).into_scalar_udf()
    })
    .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every analysis column as one struct, plus `error`; optionally for some groups only.
    Analyze,
    /// One analysis column.
    Field {
        name: &'static str,
        group: &'static str,
    },
    /// Key and mode as one text, e.g. `A minor`.
    Key,
    /// The best k of the 100 musicnn tags (10 when k is not given).
    Tags,
    /// Mono samples, optionally resampled.
    Decode,
}

impl Kind {
    fn groups(self) -> Vec<&'static str> {
        match self {
            Kind::Analyze => features::GROUPS.to_vec(),
            Kind::Field { group, .. } => vec![group],
            Kind::Key => vec!["tonal"],
            Kind::Tags => vec!["musicnn"],
            Kind::Decode => Vec::new(),
        }
    }
}

#[derive(Debug)]
struct PathFunction {
    name: &'static str,
    kind: Kind,
    signature: Signature,
    registry: Arc<dyn ObjectStoreRegistry>,
    features: Arc<FeatureStore>,
    /// The engine's memory pool: `decode` accounts its samples there.
    memory: Arc<dyn MemoryPool>,
}

impl PartialEq for PathFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.registry, &other.registry)
    }
}

impl Eq for PathFunction {}

impl Hash for PathFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PathFunction {
    fn new(
        name: &'static str,
        kind: Kind,
        registry: Arc<dyn ObjectStoreRegistry>,
        features: Arc<FeatureStore>,
        memory: Arc<dyn MemoryPool>,
    ) -> Self {
        let path = TypeSignature::String(1);
        let signature = match kind {
            Kind::Decode | Kind::Tags => TypeSignature::OneOf(vec![
                path,
                TypeSignature::Exact(vec![DataType::Utf8, DataType::Int64]),
            ]),
            Kind::Analyze => TypeSignature::OneOf(vec![path, TypeSignature::String(2)]),
            _ => path,
        };
        Self {
            name,
            kind,
            // Volatile: the answer depends on the file, so it must never be folded at plan time.
            signature: Signature::new(signature, Volatility::Volatile),
            registry,
            features,
            memory,
        }
    }

    /// The file behind `path`. A bad or forbidden location is an error of the query; a missing
    /// or unreadable file is the row's error.
    async fn locate(
        &self,
        path: &str,
    ) -> Result<std::result::Result<(Arc<dyn ObjectStore>, ObjectMeta, String), String>> {
        let url = resolve_location(path)?;
        let store = self.registry.get_store(&url)?;
        match store.head(&object_path(&url)?).await {
            Ok(meta) => Ok(Ok((store, meta, url.to_string()))),
            Err(object_store::Error::PermissionDenied { source, .. }) => {
                Err(DataFusionError::External(source))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    async fn analyze(
        &self,
        path: &str,
        request: Request<'_>,
    ) -> Result<std::result::Result<AnalysisOutput, String>> {
        match self.locate(path).await? {
            Ok((store, meta, url)) => {
                let bytes_read = Default::default();
                analyze_cached(
                    &self.features,
                    store,
                    &meta,
                    &url,
                    request,
                    Scope::ALONE,
                    bytes_read,
                )
                .await
            }
            Err(e) => Ok(Err(e)),
        }
    }

    async fn decode(&self, path: &str, rate: Option<u32>, max_seconds: f64) -> Result<Decoded> {
        Ok(match self.locate(path).await? {
            Ok((store, meta, _)) => decode_object(store, meta, rate, max_seconds).await,
            Err(_) => Decoded::Unreadable,
        })
    }

    /// Analyses every path for `request` (NULL paths give NULL) and builds the result column;
    /// `counts` is the k of `tags(path, k)`.
    async fn analyze_all(
        &self,
        paths: &StringArray,
        request: Request<'_>,
        counts: Option<&Int64Array>,
    ) -> Result<ArrayRef> {
        // Owned paths: borrowed ones trip the compiler's Send check on the boxed future.
        let owned: Vec<Option<String>> = paths.iter().map(|p| p.map(str::to_owned)).collect();
        self.features
            .refresh(&stored_for(request.groups), Buckets::ALL)
            .await?;
        let outputs: Vec<std::result::Result<AnalysisOutput, String>> =
            futures::stream::iter(owned)
                .map(|path| async move {
                    match path {
                        Some(path) => self.analyze(&path, request).await,
                        None => Ok(Err("path is NULL".to_string())),
                    }
                })
                .buffered(IN_FLIGHT)
                .try_collect()
                .await?;
        self.features.flush().await?;
        Ok(match self.kind {
            Kind::Analyze => Arc::new(columns::analysis_struct(&outputs)?),
            Kind::Field { name, group } => {
                let field = columns::field(name).expect("analysis fields are columns");
                let rows: Vec<Option<&GroupResult>> = outputs
                    .iter()
                    .map(|o| o.as_ref().ok().and_then(|out| out.group(group)))
                    .collect();
                let mut arrays = features::to_arrays(&[field.as_ref().clone()], &rows)
                    .map_err(|e| DataFusionError::Internal(e.to_string()))?;
                arrays.remove(0)
            }
            Kind::Key => {
                let mut keys = StringBuilder::new();
                for output in &outputs {
                    let out = output.as_ref().ok();
                    match (
                        out.and_then(|o| o.get("key")),
                        out.and_then(|o| o.get("mode")),
                    ) {
                        (Some(Value::Utf8(key)), Some(Value::Utf8(mode))) => {
                            keys.append_value(format!("{key} {mode}"))
                        }
                        _ => keys.append_null(),
                    }
                }
                Arc::new(keys.finish())
            }
            Kind::Tags => {
                let labels = musicnn::labels().map_err(DataFusionError::Execution)?;
                let mut tags = Vec::with_capacity(outputs.len());
                for (row, output) in outputs.iter().enumerate() {
                    let k = match counts {
                        Some(c) if c.is_null(row) => None,
                        Some(c) => Some(usize::try_from(c.value(row)).map_err(|_| {
                            DataFusionError::Execution(format!(
                                "tags: k must not be negative, got {}",
                                c.value(row)
                            ))
                        })?),
                        None => Some(musicnn::TOP_TAGS),
                    };
                    let scores = output.as_ref().ok().and_then(|o| o.get("tag_scores"));
                    tags.push(match (k, scores) {
                        (Some(k), Some(Value::Float32List(scores))) => {
                            musicnn::top_tags(&labels, &scores, k)
                        }
                        _ => Value::Null,
                    });
                }
                let field = Field::new("tags", musicnn::tags_type(), true);
                let group = GroupResult {
                    name: "musicnn",
                    version: 0,
                    fields: vec![field.clone()],
                    values: Vec::new(),
                };
                let rows: Vec<GroupResult> = tags
                    .into_iter()
                    .map(|t| GroupResult {
                        values: vec![t],
                        ..group.clone()
                    })
                    .collect();
                let refs: Vec<Option<&GroupResult>> = rows.iter().map(Some).collect();
                features::to_arrays(&[field], &refs)
                    .map_err(|e| DataFusionError::Internal(e.to_string()))?
                    .remove(0)
            }
            Kind::Decode => unreachable!("decode has its own path"),
        })
    }

    /// Decodes every path (NULL paths and unreadable files give NULL). The samples are
    /// accounted in the engine's memory pool while the column is built (twice: the decoded
    /// rows and the column), and each row holds at most `max_seconds` of audio.
    async fn decode_all(
        &self,
        paths: &StringArray,
        rates: Option<&Int64Array>,
        max_seconds: f64,
    ) -> Result<ArrayRef> {
        let jobs = (0..paths.len()).map(|i| {
            let path = paths.is_valid(i).then(|| paths.value(i).to_owned());
            let rate = match rates {
                Some(r) if r.is_null(i) => Err(()),
                Some(r) => Ok(Some(r.value(i))),
                None => Ok(None),
            };
            (path, rate)
        });
        let reservation = MemoryConsumer::new("decode").register(&self.memory);
        let mut total = 0usize;
        let decoded: Vec<Option<Vec<f32>>> = futures::stream::iter(jobs)
            .map(|(path, rate)| async move {
                let (Some(path), Ok(rate)) = (path, rate) else {
                    return Ok(None);
                };
                let rate = rate.map(check_rate).transpose()?;
                match self.decode(&path, rate, max_seconds).await? {
                    Decoded::Samples(samples) => Ok(Some(samples)),
                    Decoded::Unreadable => Ok(None),
                    Decoded::TooLong(reason) => Err(DataFusionError::Execution(format!(
                        "decode('{path}'): {reason}"
                    ))),
                }
            })
            .buffered(IN_FLIGHT)
            .and_then(|samples| {
                let len = samples.as_ref().map_or(0, Vec::len);
                total = total.saturating_add(len);
                // The column's offsets are i32: more samples than that cannot be one batch.
                let grown = if total > i32::MAX as usize {
                    Err(DataFusionError::Execution(format!(
                        "decode: one batch of rows would hold {total} samples, more than a \
                         column can ({}); decode fewer rows at once or at a lower rate",
                        i32::MAX
                    )))
                } else {
                    reservation.try_grow(2 * len * size_of::<f32>())
                };
                futures::future::ready(grown.map(|()| samples))
            })
            .try_collect()
            .await?;
        let mut list =
            ListBuilder::with_capacity(Float32Builder::with_capacity(total), decoded.len())
                .with_field(Arc::new(Field::new_list_field(DataType::Float32, true)));
        for samples in decoded {
            match samples {
                Some(samples) => {
                    list.values().append_slice(&samples);
                    list.append(true);
                }
                None => list.append_null(),
            }
        }
        Ok(Arc::new(list.finish()))
    }
}

/// A sample rate for `decode`, refused with the range when it makes no sense.
fn check_rate(rate: i64) -> Result<u32> {
    u32::try_from(rate)
        .ok()
        .filter(|r| (1..=MAX_RATE).contains(r))
        .ok_or_else(|| {
            DataFusionError::Execution(format!(
                "decode: sample_rate must be between 1 and {MAX_RATE} Hz, not {rate}"
            ))
        })
}

/// The groups of `analyze(path, groups)`: one constant list for the whole query, so that every
/// row is analysed alike and a mistake is found before any file is read.
fn analyze_groups(list: &ColumnarValue) -> Result<Vec<&'static str>> {
    let ColumnarValue::Scalar(list) = list else {
        return exec_err!(
            "analyze: groups must be a constant such as 'rhythm,tonal', the same for every \
             row, not a column or an expression over one"
        );
    };
    let list = list.try_as_str().flatten().unwrap_or_default();
    groups::parse_list(list).map_err(|e| DataFusionError::Execution(format!("analyze: {e}")))
}

impl ScalarUDFImpl for PathFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Analyze => DataType::Struct(columns::analysis_struct_fields()),
            Kind::Field { name, .. } => columns::field(name)
                .expect("analysis fields are columns")
                .data_type()
                .clone(),
            Kind::Key => DataType::Utf8,
            Kind::Tags => musicnn::tags_type(),
            Kind::Decode => {
                DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true)))
            }
        })
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(DataFusionError::Internal(format!(
            "{} runs asynchronously and cannot be called directly",
            self.name
        )))
    }
}

#[async_trait]
impl AsyncScalarUDFImpl for PathFunction {
    async fn invoke_async_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let groups = match (self.kind, args.args.get(1)) {
            (Kind::Analyze, Some(list)) => analyze_groups(list)?,
            _ => self.kind.groups(),
        };
        // Lazily: the groups of `analyze` stay a scalar.
        let mut arrays = args.args.iter().map(|arg| arg.to_array(rows));
        let Some(paths) = arrays.next().transpose()? else {
            return exec_err!("{}() takes a path", self.name);
        };
        let paths = cast(&paths, &DataType::Utf8)?;
        let paths = as_string_array(&paths)?;
        let request = |groups| -> Result<Request<'_>> {
            Ok(Request {
                groups,
                options: settings::analysis_options(&args.config_options)?,
            })
        };
        let result = match self.kind {
            Kind::Decode => {
                let rates = arrays
                    .next()
                    .transpose()?
                    .map(|rates| cast(&rates, &DataType::Int64))
                    .transpose()?;
                let rates = rates.as_ref().map(|r| as_int64_array(r)).transpose()?;
                let max_seconds = settings::decode_max_seconds(&args.config_options)?;
                self.decode_all(paths, rates, max_seconds).await?
            }
            Kind::Tags => {
                let counts = arrays
                    .next()
                    .transpose()?
                    .map(|k| cast(&k, &DataType::Int64))
                    .transpose()?;
                let counts = counts.as_ref().map(|k| as_int64_array(k)).transpose()?;
                self.analyze_all(paths, request(&groups)?, counts).await?
            }
            _ => self.analyze_all(paths, request(&groups)?, None).await?,
        };
        Ok(ColumnarValue::Array(result))
    }
}
