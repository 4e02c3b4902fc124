//! Feature groups ("extractors") and the driver that feeds them from one decode.
//!
//! A group is named and versioned, declares the input it wants and its Arrow fields, consumes
//! that input (audio chunks or STFT frames, then `finish`) and returns one value per field.
//! [`analyze`] decodes a file once, resamples once per distinct rate, runs one STFT per distinct
//! rate and shape, and feeds every group.
//! [`to_arrays`] turns many files' results into Arrow columns, NULL where a file failed.

mod k_weighting;
mod loudness;
pub mod musicnn;
mod rhythm;
mod spectral;
mod stft;
mod timbre;
mod tonal;

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arrow_array::builder::StringBuilder;
use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int64Builder, ListBuilder,
};
use arrow_array::ArrayRef;
use arrow_array::{Float32Array, ListArray, StringArray, StructArray};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field};
use symphonia::core::io::MediaSource;

use crate::decode::{DecodeError, DecodeStream};
use crate::resample::{ResampleError, StreamResampler};
use stft::Stft;
pub use stft::{Frame, StftShape};

/// Names of every feature group, in the order [`extractor`] knows them.
pub const GROUPS: &[&str] = &[
    "rhythm", "tonal", "loudness", "spectral", "timbre", "musicnn",
];

/// Settings that change what a group computes (not which groups run). Stored results say which
/// settings made them, and a result is reused only where these settings give the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnalysisOptions {
    /// The networks of the `musicnn` group run on at most this many 3 s patches, spread evenly
    /// over the track; 0: every patch (up to [`musicnn::MAX_PATCHES`]).
    pub musicnn_max_patches: usize,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        Self {
            musicnn_max_patches: musicnn::DEFAULT_MAX_PATCHES,
        }
    }
}

impl AnalysisOptions {
    /// Whether `values`, a stored result of `group`, is what these options would compute.
    pub fn reuses(&self, group: &str, values: &[Value]) -> bool {
        group != "musicnn" || musicnn::reusable(values, self.musicnn_max_patches)
    }
}

/// Builds a fresh extractor for the group called `name`.
pub fn extractor(name: &str, options: &AnalysisOptions) -> Option<Box<dyn Extractor>> {
    Some(match name {
        "rhythm" => Box::new(rhythm::Rhythm::new()),
        "tonal" => Box::new(tonal::Tonal::new()),
        "loudness" => Box::new(loudness::Loudness::new()),
        "spectral" => Box::new(spectral::Spectral::new()),
        "timbre" => Box::new(timbre::Timbre::new()),
        "musicnn" => Box::new(musicnn::MusicnnGroup::new(options.musicnn_max_patches)),
        _ => return None,
    })
}

/// What a group produces, without running it: for schemas and stored results.
#[derive(Clone, Debug)]
pub struct GroupSchema {
    pub name: &'static str,
    pub version: u32,
    pub fields: Vec<Field>,
}

/// The schema of every group in [`GROUPS`], in that order.
pub fn group_schemas() -> &'static [GroupSchema] {
    static SCHEMAS: LazyLock<Vec<GroupSchema>> = LazyLock::new(|| {
        GROUPS
            .iter()
            .map(|name| {
                let ex = extractor(name, &AnalysisOptions::default())
                    .expect("every name in GROUPS has an extractor");
                GroupSchema {
                    name: ex.name(),
                    version: ex.version(),
                    fields: ex.fields(),
                }
            })
            .collect()
    });
    &SCHEMAS
}

/// The input a group consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Every channel at the file's own rate, in chunks (loudness needs the channels, and
    /// resampling would change true peak).
    AllChannels,
    /// STFT frames of the average of the channels resampled to `rate`. Groups asking for the
    /// same rate and shape share one resampler and one transform.
    Frames { rate: u32, shape: StftShape },
}

/// A piece of audio: one plane per channel.
pub struct Chunk<'a> {
    pub planes: &'a [&'a [f32]],
    pub sample_rate: u32,
}

/// One value of a result row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Float64(f64),
    Int64(i64),
    Utf8(String),
    Bool(bool),
    Float32List(Vec<f32>),
    Utf8List(Vec<String>),
    /// `(model, tag, score)` entries, as in `musicnn::tags_type`.
    Tags(Vec<(String, String, f32)>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float64(v) => Some(*v),
            Value::Int64(v) => Some(*v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Utf8(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f32_list(&self) -> Option<&[f32]> {
        match self {
            Value::Float32List(v) => Some(v),
            _ => None,
        }
    }

    /// A float, or NULL when it is not finite (e.g. a statistic of an empty signal).
    fn finite(v: f64) -> Value {
        if v.is_finite() {
            Value::Float64(v)
        } else {
            Value::Null
        }
    }
}

/// A named, versioned feature group.
pub trait Extractor: Send {
    fn name(&self) -> &'static str;
    /// Bumped whenever the group's output changes, so cached results are recomputed.
    fn version(&self) -> u32;
    fn input(&self) -> Input;
    /// The Arrow fields of the result, in the order `finish` returns values.
    fn fields(&self) -> Vec<Field>;
    /// Audio, for groups whose input is [`Input::AllChannels`].
    fn push(&mut self, _chunk: &Chunk<'_>) {}
    /// A frame, for groups whose input is [`Input::Frames`].
    fn frame(&mut self, _frame: &Frame<'_>) {}
    fn finish(self: Box<Self>) -> Vec<Value>;
}

/// One group's result for one file.
#[derive(Clone, Debug)]
pub struct GroupResult {
    pub name: &'static str,
    pub version: u32,
    pub fields: Vec<Field>,
    pub values: Vec<Value>,
}

impl GroupResult {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields
            .iter()
            .position(|f| f.name() == field)
            .map(|i| &self.values[i])
    }
}

/// Everything one decode of a file produced.
#[derive(Clone, Debug)]
pub struct AnalysisOutput {
    pub groups: Vec<GroupResult>,
    pub decoded_duration_s: f64,
    pub decode_errors: u64,
    pub sample_rate: u32,
    pub channels: usize,
    /// Where the time went; zero for results read back from a store.
    pub stages: StageTimes,
}

/// Time spent in each stage of one analysis, on the thread that ran it. Each stage excludes
/// the stages it feeds (a resampler's time excludes the STFTs it feeds, and so on).
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    pub decode: Duration,
    /// Averaging the channels into one.
    pub downmix: Duration,
    /// Per analysis rate.
    pub resample: Vec<(u32, Duration)>,
    /// Per analysis rate and STFT shape.
    pub stft: Vec<(u32, StftShape, Duration)>,
    /// Per group: its frames or chunks and its `finish`.
    pub groups: Vec<(&'static str, Duration)>,
}

impl StageTimes {
    /// Every stage in pipeline order, named for a reader (`resample to 22050 Hz`, `STFT
    /// 1024/256 at 22050 Hz`, `group rhythm`), for the benches that print the breakdown.
    pub fn rows(&self) -> Vec<(String, Duration)> {
        let mut rows = vec![
            ("decode".to_owned(), self.decode),
            ("down-mix to mono".to_owned(), self.downmix),
        ];
        for (rate, spent) in &self.resample {
            rows.push((format!("resample to {rate} Hz"), *spent));
        }
        for (rate, shape, spent) in &self.stft {
            rows.push((
                format!("STFT {}/{} at {rate} Hz", shape.n_fft, shape.hop),
                *spent,
            ));
        }
        for (name, spent) in &self.groups {
            rows.push((format!("group {name}"), *spent));
        }
        rows
    }
}

impl AnalysisOutput {
    pub fn group(&self, name: &str) -> Option<&GroupResult> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// A value by field name, searched across groups and the decode columns.
    pub fn get(&self, field: &str) -> Option<Value> {
        match field {
            "decoded_duration_s" => Some(Value::Float64(self.decoded_duration_s)),
            "decode_errors" => Some(Value::Int64(self.decode_errors as i64)),
            _ => self.groups.iter().find_map(|g| g.get(field).cloned()),
        }
    }

    /// The decode columns as a result row, matching [`decode_fields`].
    pub fn decode_row(&self) -> GroupResult {
        GroupResult {
            name: DECODE_GROUP,
            version: DECODE_VERSION,
            fields: decode_fields(),
            values: vec![
                Value::Float64(self.decoded_duration_s),
                Value::Int64(self.decode_errors as i64),
            ],
        }
    }
}

/// The pseudo-group of the decode columns ([`decode_fields`]): what decoding itself measures,
/// stored and versioned like a group that has no extractor.
pub const DECODE_GROUP: &str = "decode";
/// The version of the decode columns; stored values of another version are recomputed.
pub const DECODE_VERSION: u32 = 1;

/// Fields that come from decoding itself rather than from a group.
pub fn decode_fields() -> Vec<Field> {
    vec![
        Field::new("decoded_duration_s", DataType::Float64, true),
        Field::new("decode_errors", DataType::Int64, true),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error("unknown feature group {0:?}; known groups are {GROUPS:?}")]
    UnknownGroup(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Resample(#[from] ResampleError),
    #[error("no audio could be decoded ({errors} corrupt packets)")]
    NoAudio { errors: u64 },
    #[error(
        "the file holds more than {max_seconds} s of audio at {rate} Hz, the most one call \
         returns; raise audiolake.decode_max_seconds or ask for a lower sample rate"
    )]
    TooLong { max_seconds: f64, rate: u32 },
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: Box<AnalysisError>,
    },
    #[error("field {field:?} is {data_type}, which has no Arrow builder here")]
    UnsupportedType { field: String, data_type: DataType },
    #[error("field {field:?} of group {group:?} holds {value:?}, not a {data_type}")]
    TypeMismatch {
        group: String,
        field: String,
        data_type: DataType,
        value: Value,
    },
}

/// Groups fed by one STFT.
struct Transform {
    stft: Stft,
    members: Vec<usize>,
    spent: Duration,
}

/// Everything fed at one analysis rate: one resampler, then one STFT per shape.
struct Route {
    rate: u32,
    resampler: StreamResampler,
    transforms: Vec<Transform>,
    /// This block's resampled audio.
    output: Vec<f32>,
    spent: Duration,
}

impl Route {
    /// The routes for `shapes` (rate and STFT shape per frame-fed extractor), highest rate
    /// first, each resampling the decoded audio. (Making 11,025 Hz from the 22,050 Hz stream
    /// saved 0.03 s a track but made tonal's values depend on which other groups ran, and lost
    /// a key on the corpus.)
    fn plan(native: u32, shapes: &[(usize, u32, StftShape)]) -> Result<Vec<Route>, ResampleError> {
        let mut rates: Vec<u32> = shapes.iter().map(|&(_, rate, _)| rate).collect();
        rates.sort_unstable_by(|a, b| b.cmp(a));
        rates.dedup();
        let mut routes: Vec<Route> = Vec::with_capacity(rates.len());
        for rate in rates {
            let mut transforms: Vec<Transform> = Vec::new();
            for &(i, _, shape) in shapes.iter().filter(|&&(_, r, _)| r == rate) {
                match transforms.iter_mut().find(|t| t.stft.shape() == shape) {
                    Some(t) => t.members.push(i),
                    None => transforms.push(Transform {
                        stft: Stft::new(shape),
                        members: vec![i],
                        spent: Duration::ZERO,
                    }),
                }
            }
            routes.push(Route {
                rate,
                resampler: StreamResampler::new(native, rate)?,
                transforms,
                output: Vec::new(),
                spent: Duration::ZERO,
            });
        }
        Ok(routes)
    }
}

/// Extractors with the time each has spent.
struct Groups {
    extractors: Vec<Box<dyn Extractor>>,
    spent: Vec<Duration>,
}

impl Groups {
    /// Hands `frame` to the members of one transform; returns the time that took.
    fn frame(&mut self, members: &[usize], frame: &Frame<'_>) -> Duration {
        let mut total = Duration::ZERO;
        for &i in members {
            let started = Instant::now();
            self.extractors[i].frame(frame);
            let took = started.elapsed();
            self.spent[i] += took;
            total += took;
        }
        total
    }
}

/// Decodes `source` once and runs the named groups over it, with the default options.
pub fn analyze(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    groups: &[&str],
) -> Result<AnalysisOutput, AnalysisError> {
    analyze_with(source, extension, groups, &AnalysisOptions::default())
}

/// [`analyze`] with `options`.
pub fn analyze_with(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    groups: &[&str],
    options: &AnalysisOptions,
) -> Result<AnalysisOutput, AnalysisError> {
    let extractors = groups
        .iter()
        .map(|name| {
            extractor(name, options).ok_or_else(|| AnalysisError::UnknownGroup(name.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut groups = Groups {
        spent: vec![Duration::ZERO; extractors.len()],
        extractors,
    };
    let mut stream = DecodeStream::open(source, extension)?;
    let native = stream.sample_rate();

    let mut all_channels = Vec::new();
    let mut shapes = Vec::new();
    for (i, ex) in groups.extractors.iter().enumerate() {
        match ex.input() {
            Input::AllChannels => all_channels.push(i),
            Input::Frames { rate, shape } => shapes.push((i, rate, shape)),
        }
    }
    let mut routes = Route::plan(native, &shapes)?;

    let mut mono = Vec::new();
    let mut decode = Duration::ZERO;
    let mut downmix = Duration::ZERO;
    loop {
        let started = Instant::now();
        let block = stream.next_block()?;
        decode += started.elapsed();
        let Some(block) = block else { break };
        if !all_channels.is_empty() {
            let plane_refs: Vec<&[f32]> = block.planes().iter().map(Vec::as_slice).collect();
            let chunk = Chunk {
                planes: &plane_refs,
                sample_rate: native,
            };
            for &i in &all_channels {
                let started = Instant::now();
                groups.extractors[i].push(&chunk);
                groups.spent[i] += started.elapsed();
            }
        }
        if !routes.is_empty() {
            let started = Instant::now();
            block.downmix_into(&mut mono);
            downmix += started.elapsed();
            feed(&mut routes, &mono, &mut groups, false)?;
        }
    }
    feed(&mut routes, &[], &mut groups, true)?;

    if stream.decoded_frames() == 0 {
        return Err(AnalysisError::NoAudio {
            errors: stream.decode_errors(),
        });
    }
    let mut stages = StageTimes {
        decode,
        downmix,
        ..StageTimes::default()
    };
    for route in &routes {
        stages.resample.push((route.rate, route.spent));
        for t in &route.transforms {
            stages.stft.push((route.rate, t.stft.shape(), t.spent));
        }
    }
    let mut results = Vec::with_capacity(groups.extractors.len());
    for (ex, spent) in groups.extractors.into_iter().zip(groups.spent) {
        let (name, version, fields) = (ex.name(), ex.version(), ex.fields());
        let started = Instant::now();
        let values = ex.finish();
        stages.groups.push((name, spent + started.elapsed()));
        results.push(GroupResult {
            name,
            version,
            fields,
            values,
        });
    }
    Ok(AnalysisOutput {
        groups: results,
        decoded_duration_s: stream.decoded_duration_s(),
        decode_errors: stream.decode_errors(),
        sample_rate: native,
        channels: stream.channels(),
        stages,
    })
}

/// Resamples `mono` for every route and runs their transforms; `last` flushes everything.
/// Time is charged to each route, transform and group separately.
fn feed(
    routes: &mut [Route],
    mono: &[f32],
    groups: &mut Groups,
    last: bool,
) -> Result<(), ResampleError> {
    for route in routes.iter_mut() {
        let Route {
            resampler,
            transforms,
            output,
            spent,
            ..
        } = route;
        let started = Instant::now();
        output.clear();
        resampler.process(mono, &mut |s| output.extend_from_slice(s))?;
        if last {
            resampler.finish(&mut |s| output.extend_from_slice(s))?;
        }
        *spent += started.elapsed();
        for t in transforms.iter_mut() {
            let started = Instant::now();
            let mut in_groups = Duration::ZERO;
            let Transform { stft, members, .. } = t;
            stft.push(output, &mut |f| in_groups += groups.frame(members, f));
            if last {
                stft.finish(&mut |f| in_groups += groups.frame(members, f));
            }
            t.spent += started.elapsed().saturating_sub(in_groups);
        }
    }
    Ok(())
}

/// Runs one frame-fed group over a signal already at its rate, fed in pieces.
#[cfg(test)]
fn run_frames(mut ex: Box<dyn Extractor>, signal: &[f32], piece: usize) -> Vec<Value> {
    let Input::Frames { shape, .. } = ex.input() else {
        panic!("{} takes no frames", ex.name());
    };
    let mut stft = Stft::new(shape);
    for part in signal.chunks(piece) {
        stft.push(part, &mut |f| ex.frame(f));
    }
    stft.finish(&mut |f| ex.frame(f));
    ex.finish()
}

/// [`analyze`] on a local file, with the file named in any error.
pub fn analyze_path(path: &Path, groups: &[&str]) -> Result<AnalysisOutput, AnalysisError> {
    let file = std::fs::File::open(path).map_err(|source| AnalysisError::Open {
        path: path.to_owned(),
        source,
    })?;
    let ext = path.extension().and_then(|e| e.to_str());
    analyze(Box::new(file), ext, groups).map_err(|e| AnalysisError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Builds one Arrow array per field from many files' results (`None`: the file failed, so
/// every field is NULL).
pub fn to_arrays(
    fields: &[Field],
    rows: &[Option<&GroupResult>],
) -> Result<Vec<ArrayRef>, AnalysisError> {
    fields
        .iter()
        .map(|field| {
            let values = rows
                .iter()
                .map(|row| row.and_then(|r| r.get(field.name()).map(|v| (r.name, v))));
            column(field, values)
        })
        .collect()
}

fn column<'a>(
    field: &Field,
    values: impl Iterator<Item = Option<(&'static str, &'a Value)>>,
) -> Result<ArrayRef, AnalysisError> {
    let mismatch = |group: &str, v: &Value| AnalysisError::TypeMismatch {
        group: group.to_owned(),
        field: field.name().clone(),
        data_type: field.data_type().clone(),
        value: v.clone(),
    };
    match field.data_type() {
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => b.append_null(),
                    Some((_, Value::Float64(x))) => b.append_value(*x),
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => b.append_null(),
                    Some((_, Value::Int64(x))) => b.append_value(*x),
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Utf8 => {
            let mut b = StringBuilder::new();
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => b.append_null(),
                    Some((_, Value::Utf8(s))) => b.append_value(s),
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::List(item) if item.data_type() == &DataType::Float32 => {
            let mut b = ListBuilder::new(Float32Builder::new()).with_field(item.clone());
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => b.append_null(),
                    Some((_, Value::Float32List(xs))) => {
                        b.values().append_slice(xs);
                        b.append(true);
                    }
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => b.append_null(),
                    Some((_, Value::Bool(x))) => b.append_value(*x),
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::List(item) if item.data_type() == &DataType::Utf8 => {
            let mut b = ListBuilder::new(StringBuilder::new()).with_field(item.clone());
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => b.append_null(),
                    Some((_, Value::Utf8List(xs))) => {
                        for x in xs {
                            b.values().append_value(x);
                        }
                        b.append(true);
                    }
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
            }
            Ok(Arc::new(b.finish()))
        }
        DataType::List(item) if item.data_type() == &DataType::Struct(musicnn::tag_fields()) => {
            let mut entries: Vec<&(String, String, f32)> = Vec::new();
            let mut offsets = vec![0i32];
            let mut valid = Vec::new();
            for v in values {
                match v {
                    None | Some((_, Value::Null)) => valid.push(false),
                    Some((_, Value::Tags(tags))) => {
                        entries.extend(tags.iter());
                        valid.push(true);
                    }
                    Some((g, other)) => return Err(mismatch(g, other)),
                }
                offsets.push(entries.len() as i32);
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(entries.iter().map(|e| &e.0))),
                Arc::new(StringArray::from_iter_values(entries.iter().map(|e| &e.1))),
                Arc::new(Float32Array::from_iter_values(entries.iter().map(|e| e.2))),
            ];
            let structs = StructArray::try_new(musicnn::tag_fields(), columns, None)
                .expect("tag columns match their fields");
            let list = ListArray::try_new(
                item.clone(),
                OffsetBuffer::new(offsets.into()),
                Arc::new(structs),
                Some(NullBuffer::from(valid)),
            )
            .expect("offsets follow the entries");
            Ok(Arc::new(list))
        }
        other => Err(AnalysisError::UnsupportedType {
            field: field.name().clone(),
            data_type: other.clone(),
        }),
    }
}

/// A nullable `float4[]` field.
fn f32_list_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new_list_field(DataType::Float32, true))),
        true,
    )
}

fn f64_field(name: &str) -> Field {
    Field::new(name, DataType::Float64, true)
}

fn utf8_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
