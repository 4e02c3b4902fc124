//! Every column of an AUDIO table, what it costs, and how its values are built.

use std::sync::{Arc, LazyLock};

use audiolake_udf::features::{self, AnalysisOutput, GroupResult, DECODE_GROUP};
use audiolake_udf::probe::AudioHeader;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, RecordBatchOptions,
    StringArray, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit,
};
use datafusion::error::{DataFusionError, Result};
use object_store::ObjectMeta;

/// What it takes to fill a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cost {
    /// Known from the object listing: no file is opened.
    Listing,
    /// Read from the file's headers and tags (no audio is decoded).
    Header,
    /// The whole file is decoded and analysed.
    Decode,
}

/// One column: its field, its cost, and for analysis columns the feature group that fills it
/// (`DECODE_GROUP` for what decoding itself measures).
pub struct Column {
    pub field: FieldRef,
    pub cost: Cost,
    pub group: Option<&'static str>,
}

const UTC: &str = "UTC";

/// Listing and header columns first, then every feature group's fields in the order of
/// [`features::GROUPS`], the decode columns, and `error` last. `path` is the file's full URL.
static COLUMNS: LazyLock<Vec<Column>> = LazyLock::new(|| {
    let plain = |name: &str, ty: DataType, nullable: bool, cost: Cost| Column {
        field: Arc::new(Field::new(name, ty, nullable)),
        cost,
        group: None,
    };
    let mut columns = vec![
        plain("path", DataType::Utf8, false, Cost::Listing),
        plain("file_name", DataType::Utf8, false, Cost::Listing),
        plain("size_bytes", DataType::Int64, false, Cost::Listing),
        plain(
            "last_modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            false,
            Cost::Listing,
        ),
        plain("format", DataType::Utf8, true, Cost::Header),
        plain("codec", DataType::Utf8, true, Cost::Header),
        plain("sample_rate", DataType::Int32, true, Cost::Header),
        plain("channels", DataType::Int32, true, Cost::Header),
        plain("bits_per_sample", DataType::Int32, true, Cost::Header),
        plain("duration_s", DataType::Float64, true, Cost::Header),
        plain("bitrate_kbps", DataType::Float64, true, Cost::Header),
        plain("title", DataType::Utf8, true, Cost::Header),
        plain("artist", DataType::Utf8, true, Cost::Header),
        plain("album", DataType::Utf8, true, Cost::Header),
        plain("tag_genre", DataType::Utf8, true, Cost::Header),
        plain("track_number", DataType::Int32, true, Cost::Header),
        plain("year", DataType::Int32, true, Cost::Header),
    ];
    let analyzed = features::group_schemas()
        .iter()
        .map(|g| (g.name, g.fields.clone()))
        .chain([(DECODE_GROUP, features::decode_fields())]);
    for (group, fields) in analyzed {
        columns.extend(fields.into_iter().map(|field| Column {
            field: Arc::new(field),
            cost: Cost::Decode,
            group: Some(group),
        }));
    }
    columns.push(plain("error", DataType::Utf8, true, Cost::Header));
    columns
});

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|c| Arc::clone(&c.field))
            .collect::<Vec<_>>(),
    ))
});

/// The full schema of an AUDIO table.
pub fn schema() -> SchemaRef {
    Arc::clone(&SCHEMA)
}

/// The listing columns only, in table order (for evaluating pushed-down filters).
pub fn listing_schema() -> SchemaRef {
    let fields = COLUMNS
        .iter()
        .filter(|c| c.cost == Cost::Listing)
        .map(|c| Arc::clone(&c.field))
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// The feature group (or `DECODE_GROUP`) that fills the column called `name`, if any.
pub fn group_of(name: &str) -> Option<&'static str> {
    COLUMNS
        .iter()
        .find(|c| c.field.name() == name)
        .and_then(|c| c.group)
}

/// The cost of the column called `name`, if there is one.
pub fn cost_of(name: &str) -> Option<Cost> {
    COLUMNS
        .iter()
        .find(|c| c.field.name() == name)
        .map(|c| c.cost)
}

/// What a scan must do for the columns at `indices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Work {
    /// Open the file and read its header and tags.
    pub probe: bool,
    /// Decode the file (feature groups to run, possibly none when only the decode columns are
    /// wanted).
    pub decode: Option<Vec<&'static str>>,
}

impl Work {
    pub fn of(indices: &[usize]) -> Self {
        let probe = indices.iter().any(|&i| COLUMNS[i].cost == Cost::Header);
        let mut groups: Vec<&'static str> = Vec::new();
        let mut decode = false;
        for &i in indices {
            if let Some(group) = COLUMNS[i].group {
                decode = true;
                if group != DECODE_GROUP && !groups.contains(&group) {
                    groups.push(group);
                }
            }
        }
        Self {
            probe,
            decode: decode.then_some(groups),
        }
    }

    /// True when the listing alone answers the query.
    pub fn listing_only(&self) -> bool {
        !self.probe && self.decode.is_none()
    }
}

/// What is known about one file: its listing, and its probe and analysis results when the
/// query needs them.
pub struct FileRow<'a> {
    pub meta: &'a ObjectMeta,
    pub url: &'a str,
    pub header: Option<&'a Result<AudioHeader, String>>,
    pub analysis: Option<&'a Result<AnalysisOutput, String>>,
}

impl FileRow<'_> {
    /// Why the file has no values: the header's reason first, since it explains the rest.
    fn error(&self) -> Option<String> {
        if let Some(Err(e)) = self.header {
            return Some(e.clone());
        }
        match self.analysis {
            Some(Err(e)) => Some(format!("analysis failed: {e}")),
            _ => None,
        }
    }
}

/// Builds the listing columns of `files` (schema: [`listing_schema`]).
pub fn listing_batch(files: &[(ObjectMeta, String)]) -> Result<RecordBatch> {
    let rows: Vec<_> = files
        .iter()
        .map(|(meta, url)| FileRow {
            meta,
            url,
            header: None,
            analysis: None,
        })
        .collect();
    let columns = header_columns(&rows);
    Ok(RecordBatch::try_new(
        listing_schema(),
        columns.into_iter().take(4).collect(),
    )?)
}

/// Builds a batch of the whole table schema, projected to `projection`; analysis columns are
/// built only for the groups the projection names.
pub fn batch(rows: &[FileRow<'_>], projection: &[usize]) -> Result<RecordBatch> {
    let mut arrays: Vec<Option<ArrayRef>> = vec![None; COLUMNS.len()];
    for (i, array) in header_columns(rows).into_iter().enumerate() {
        arrays[i] = Some(array);
    }
    let error: Vec<Option<String>> = rows.iter().map(FileRow::error).collect();
    arrays[COLUMNS.len() - 1] = Some(Arc::new(error.into_iter().collect::<StringArray>()));

    let analyses: Vec<_> = rows.iter().map(|row| row.analysis).collect();
    for (i, array) in analysis_columns(&analyses, projection)? {
        arrays[i] = Some(array);
    }

    let schema = Arc::new(schema().project(projection)?);
    let columns = projection
        .iter()
        .map(|&i| {
            arrays[i].clone().ok_or_else(|| {
                DataFusionError::Internal(format!("column {} was not built", COLUMNS[i].field))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // The row count matters when no column is projected (`count(*)`).
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// The analysis columns among `indices`, one array each, NULL where a file was not analysed.
fn analysis_columns(
    analyses: &[Option<&Result<AnalysisOutput, String>>],
    indices: &[usize],
) -> Result<Vec<(usize, ArrayRef)>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for &i in indices {
        let Some(group) = COLUMNS[i].group else {
            continue;
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, members)) => members.push(i),
            None => groups.push((group, vec![i])),
        }
    }
    let mut built = Vec::new();
    for (group, members) in groups {
        let results: Vec<Option<GroupResult>> = analyses
            .iter()
            .map(|analysis| match analysis {
                Some(Ok(out)) if group == DECODE_GROUP => Some(out.decode_row()),
                Some(Ok(out)) => out.group(group).cloned(),
                _ => None,
            })
            .collect();
        let refs: Vec<Option<&GroupResult>> = results.iter().map(Option::as_ref).collect();
        let fields: Vec<Field> = members
            .iter()
            .map(|&i| COLUMNS[i].field.as_ref().clone())
            .collect();
        let arrays = features::to_arrays(&fields, &refs)
            .map_err(|e| DataFusionError::Internal(format!("building {group} columns: {e}")))?;
        built.extend(members.into_iter().zip(arrays));
    }
    Ok(built)
}

/// The fields of `analyze(path)`: every analysis column, then `error`.
pub fn analysis_struct_fields() -> Fields {
    COLUMNS
        .iter()
        .filter(|c| c.group.is_some() || c.field.name() == "error")
        .map(|c| Arc::clone(&c.field))
        .collect()
}

/// One `analyze(path)` struct per file: NULL fields and the reason in `error` for a file that
/// could not be analysed, and NULL fields for the groups an analysis left out.
pub fn analysis_struct(analyses: &[Result<AnalysisOutput, String>]) -> Result<StructArray> {
    let refs: Vec<_> = analyses.iter().map(Some).collect();
    let indices: Vec<usize> = (0..COLUMNS.len())
        .filter(|&i| COLUMNS[i].group.is_some())
        .collect();
    let mut arrays: Vec<ArrayRef> = analysis_columns(&refs, &indices)?
        .into_iter()
        .map(|(_, array)| array)
        .collect();
    let error: StringArray = analyses.iter().map(|a| a.as_ref().err()).collect();
    arrays.push(Arc::new(error));
    Ok(StructArray::try_new(
        analysis_struct_fields(),
        arrays,
        None,
    )?)
}

/// The field of the column called `name`.
pub fn field(name: &str) -> Option<FieldRef> {
    COLUMNS
        .iter()
        .find(|c| c.field.name() == name)
        .map(|c| Arc::clone(&c.field))
}

/// The listing and header columns, in table order.
fn header_columns(rows: &[FileRow<'_>]) -> Vec<ArrayRef> {
    let n = rows.len();
    let mut path = StringBuilder::with_capacity(n, n * 64);
    let mut file_name = StringBuilder::with_capacity(n, n * 24);
    let mut size = Int64Builder::with_capacity(n);
    let mut modified = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC);
    let mut format = StringBuilder::new();
    let mut codec = StringBuilder::new();
    let mut sample_rate = Int32Builder::with_capacity(n);
    let mut channels = Int32Builder::with_capacity(n);
    let mut bits = Int32Builder::with_capacity(n);
    let mut duration = Float64Builder::with_capacity(n);
    let mut bitrate = Float64Builder::with_capacity(n);
    let mut title = StringBuilder::new();
    let mut artist = StringBuilder::new();
    let mut album = StringBuilder::new();
    let mut genre = StringBuilder::new();
    let mut track = Int32Builder::with_capacity(n);
    let mut year = Int32Builder::with_capacity(n);

    let int = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok());
    for row in rows {
        path.append_value(row.url);
        file_name.append_value(row.meta.location.filename().unwrap_or_default());
        size.append_value(i64::try_from(row.meta.size).unwrap_or(i64::MAX));
        modified.append_value(row.meta.last_modified.timestamp_micros());
        let header = row.header.and_then(|h| h.as_ref().ok());
        format.append_option(header.map(|h| &h.format));
        codec.append_option(header.map(|h| &h.codec));
        sample_rate.append_option(int(header.and_then(|h| h.sample_rate)));
        channels.append_option(int(header.and_then(|h| h.channels)));
        bits.append_option(int(header.and_then(|h| h.bits_per_sample)));
        duration.append_option(header.and_then(|h| h.duration_s));
        bitrate.append_option(header.and_then(|h| h.bitrate_kbps));
        title.append_option(header.and_then(|h| h.tags.title.as_ref()));
        artist.append_option(header.and_then(|h| h.tags.artist.as_ref()));
        album.append_option(header.and_then(|h| h.tags.album.as_ref()));
        genre.append_option(header.and_then(|h| h.tags.genre.as_ref()));
        track.append_option(int(header.and_then(|h| h.tags.track_number)));
        year.append_option(header.and_then(|h| h.tags.year));
    }
    vec![
        Arc::new(path.finish()),
        Arc::new(file_name.finish()),
        Arc::new(size.finish()),
        Arc::new(modified.finish()),
        Arc::new(format.finish()),
        Arc::new(codec.finish()),
        Arc::new(sample_rate.finish()),
        Arc::new(channels.finish()),
        Arc::new(bits.finish()),
        Arc::new(duration.finish()),
        Arc::new(bitrate.finish()),
        Arc::new(title.finish()),
        Arc::new(artist.finish()),
        Arc::new(album.finish()),
        Arc::new(genre.finish()),
        Arc::new(track.finish()),
        Arc::new(year.finish()),
    ]
}
