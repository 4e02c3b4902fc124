//! Every column of an AUDIO table, what it costs, and how its values are built.

use std::sync::{Arc, LazyLock};

use audiolake_udf::probe::AudioHeader;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::Result;
use object_store::ObjectMeta;

/// What it takes to fill a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cost {
    /// Known from the object listing: no file is opened.
    Listing,
    /// Read from the file's headers and tags (no audio is decoded).
    Header,
}

/// (name, type, nullable, cost). `path` is the full URL of the file.
static COLUMNS: LazyLock<Vec<(&str, DataType, bool, Cost)>> = LazyLock::new(|| {
    vec![
        ("path", DataType::Utf8, false, Cost::Listing),
        ("file_name", DataType::Utf8, false, Cost::Listing),
        ("size_bytes", DataType::Int64, false, Cost::Listing),
        (
            "last_modified",
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            false,
            Cost::Listing,
        ),
        ("format", DataType::Utf8, true, Cost::Header),
        ("codec", DataType::Utf8, true, Cost::Header),
        ("sample_rate", DataType::Int32, true, Cost::Header),
        ("channels", DataType::Int32, true, Cost::Header),
        ("bits_per_sample", DataType::Int32, true, Cost::Header),
        ("duration_s", DataType::Float64, true, Cost::Header),
        ("bitrate_kbps", DataType::Float64, true, Cost::Header),
        ("title", DataType::Utf8, true, Cost::Header),
        ("artist", DataType::Utf8, true, Cost::Header),
        ("album", DataType::Utf8, true, Cost::Header),
        ("genre", DataType::Utf8, true, Cost::Header),
        ("track_number", DataType::Int32, true, Cost::Header),
        ("year", DataType::Int32, true, Cost::Header),
        ("error", DataType::Utf8, true, Cost::Header),
    ]
});

const UTC: &str = "UTC";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|(name, ty, nullable, _)| Field::new(*name, ty.clone(), *nullable))
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
        .zip(SCHEMA.fields())
        .filter(|((.., cost), _)| *cost == Cost::Listing)
        .map(|(_, f)| Arc::clone(f))
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// The cost of the column called `name`, if there is one.
pub fn cost_of(name: &str) -> Option<Cost> {
    COLUMNS.iter().find(|c| c.0 == name).map(|c| c.3)
}

/// The highest cost among the columns at `indices`.
pub fn cost_of_indices(indices: &[usize]) -> Cost {
    indices
        .iter()
        .map(|&i| COLUMNS[i].3)
        .max()
        .unwrap_or(Cost::Listing)
}

/// What is known about one file: its listing, and its probe result when the query needs it.
pub struct FileRow<'a> {
    pub meta: &'a ObjectMeta,
    pub url: &'a str,
    pub header: Option<&'a Result<AudioHeader, String>>,
}

/// Builds the listing columns of `files` (schema: [`listing_schema`]).
pub fn listing_batch(files: &[(ObjectMeta, String)]) -> Result<RecordBatch> {
    let rows: Vec<_> = files
        .iter()
        .map(|(meta, url)| FileRow {
            meta,
            url,
            header: None,
        })
        .collect();
    let columns = build_columns(&rows);
    Ok(RecordBatch::try_new(
        listing_schema(),
        columns.into_iter().take(4).collect(),
    )?)
}

/// Builds a batch of the whole table schema, projected to `projection`.
pub fn batch(rows: &[FileRow<'_>], projection: &[usize]) -> Result<RecordBatch> {
    let full = RecordBatch::try_new(schema(), build_columns(rows))?;
    Ok(full.project(projection)?)
}

fn build_columns(rows: &[FileRow<'_>]) -> Vec<ArrayRef> {
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
    let mut error = StringBuilder::new();

    let int = |v: Option<u32>| v.and_then(|v| i32::try_from(v).ok());
    for row in rows {
        path.append_value(row.url);
        file_name.append_value(row.meta.location.filename().unwrap_or_default());
        size.append_value(i64::try_from(row.meta.size).unwrap_or(i64::MAX));
        modified.append_value(row.meta.last_modified.timestamp_micros());
        let (header, err) = match row.header {
            Some(Ok(h)) => (Some(h), None),
            Some(Err(e)) => (None, Some(e.as_str())),
            None => (None, None),
        };
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
        error.append_option(err);
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
        Arc::new(error.finish()),
    ]
}
