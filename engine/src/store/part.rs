//! One Parquet part of a feature group: the rows it holds, and their encoding.
//!
//! A row is one file's result for one group: the file's fingerprint and content hash, when it
//! was analysed, what decoding measured, the group's values, and the error when the file could
//! not be analysed (so a bad file is not decoded again on every query).

use std::sync::Arc;

use audiolake_udf::features::{self, GroupResult, GroupSchema, Value};
use bytes::Bytes;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use object_store::ObjectMeta;

/// What identifies one version of a file: if any of these changes, the file is analysed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// Microseconds since the epoch.
    pub last_modified: i64,
}

impl Fingerprint {
    pub fn of(meta: &ObjectMeta, url: &str) -> Self {
        Self {
            path: url.to_owned(),
            size: meta.size,
            e_tag: meta.e_tag.clone(),
            last_modified: meta.last_modified.timestamp_micros(),
        }
    }

    /// Same file, unchanged: size, and the ETag where both have one (S3's is a content
    /// digest), else the modification time.
    pub fn matches(&self, other: &Fingerprint) -> bool {
        self.path == other.path
            && self.size == other.size
            && match (&self.e_tag, &other.e_tag) {
                (Some(a), Some(b)) => a == b,
                _ => self.last_modified == other.last_modified,
            }
    }
}

/// What decoding measured, shared by every group of one analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub duration_s: f64,
    pub errors: i64,
    pub sample_rate: i32,
    pub channels: i32,
}

/// One file's stored result for one group.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub fingerprint: Fingerprint,
    pub content_hash: Option<String>,
    /// Microseconds since the epoch; the newest row of a path wins.
    pub analyzed_at: i64,
    /// What decoding measured (none for what needs no decode: the header) and the group's
    /// values, or why the file has none.
    pub outcome: std::result::Result<(Option<Decoded>, Vec<Value>), String>,
}

impl StoredRow {
    /// The same result for another file with the same content.
    pub fn for_file(&self, fingerprint: Fingerprint, analyzed_at: i64) -> StoredRow {
        StoredRow {
            fingerprint,
            analyzed_at,
            ..self.clone()
        }
    }
}

const FIXED: usize = 10;

/// The Parquet schema of a group's parts: fingerprint, hash, time, decode columns, the group's
/// fields, `error`.
pub fn schema(group: &GroupSchema) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let mut fields = vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("size_bytes", DataType::Int64, false),
        Field::new("e_tag", DataType::Utf8, true),
        Field::new("last_modified", ts(), false),
        Field::new("content_hash", DataType::Utf8, true),
        Field::new("analyzed_at", ts(), false),
        Field::new("decoded_duration_s", DataType::Float64, true),
        Field::new("decode_errors", DataType::Int64, true),
        Field::new("sample_rate", DataType::Int32, true),
        Field::new("channels", DataType::Int32, true),
    ];
    debug_assert_eq!(fields.len(), FIXED);
    fields.extend(group.fields.iter().cloned());
    fields.push(Field::new("error", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// Encodes rows of `group` as one Parquet file.
pub fn encode(group: &GroupSchema, rows: &[StoredRow]) -> Result<Bytes> {
    let schema = schema(group);
    let ok = |r: &StoredRow| r.outcome.as_ref().ok().and_then(|(d, _)| d.clone());
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.fingerprint.path.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter()
                .map(|r| i64::try_from(r.fingerprint.size).unwrap_or(i64::MAX)),
        )),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.fingerprint.e_tag.as_deref()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.fingerprint.last_modified),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.content_hash.as_deref()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.analyzed_at))
                .with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter(
            rows.iter().map(|r| ok(r).map(|d| d.duration_s)),
        )),
        Arc::new(Int64Array::from_iter(
            rows.iter().map(|r| ok(r).map(|d| d.errors)),
        )),
        Arc::new(Int32Array::from_iter(
            rows.iter().map(|r| ok(r).map(|d| d.sample_rate)),
        )),
        Arc::new(Int32Array::from_iter(
            rows.iter().map(|r| ok(r).map(|d| d.channels)),
        )),
    ];
    let results: Vec<Option<GroupResult>> = rows
        .iter()
        .map(|r| {
            r.outcome.as_ref().ok().map(|(_, values)| GroupResult {
                name: group.name,
                version: group.version,
                fields: group.fields.clone(),
                values: values.clone(),
            })
        })
        .collect();
    let refs: Vec<Option<&GroupResult>> = results.iter().map(Option::as_ref).collect();
    columns.extend(
        features::to_arrays(&group.fields, &refs)
            .map_err(|e| DataFusionError::Internal(format!("storing {}: {e}", group.name)))?,
    );
    columns.push(Arc::new(StringArray::from_iter(
        rows.iter()
            .map(|r| r.outcome.as_ref().err().map(String::as_str)),
    )));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;

    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props))?;
    writer.write(&batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

/// Decodes a part written by [`encode`] for the same group version.
pub fn decode(group: &GroupSchema, bytes: Bytes) -> Result<Vec<StoredRow>> {
    let expected = schema(group);
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        if batch.schema().fields() != expected.fields() {
            return Err(DataFusionError::Execution(format!(
                "a part of feature group {} v{} has schema {:?}, expected {:?}",
                group.name,
                group.version,
                batch.schema(),
                expected
            )));
        }
        rows.extend(batch_rows(group, &batch));
    }
    Ok(rows)
}

/// How many rows a stored part of the group called `group` holds, read as the store reads it
/// (public so that the reader can be fuzzed from outside the crate).
pub fn parse_part(group: &str, bytes: Bytes) -> Result<usize> {
    let schema = super::group_schema(group)
        .ok_or_else(|| DataFusionError::Execution(format!("no stored group {group:?}")))?;
    Ok(decode(&schema, bytes)?.len())
}

fn batch_rows(group: &GroupSchema, batch: &RecordBatch) -> Vec<StoredRow> {
    let c = |i: usize| batch.column(i);
    let (path, e_tag, hash) = (
        c(0).as_string::<i32>(),
        c(2).as_string::<i32>(),
        c(4).as_string::<i32>(),
    );
    let size = c(1).as_primitive::<Int64Type>();
    let modified = c(3).as_primitive::<TimestampMicrosecondType>();
    let analyzed = c(5).as_primitive::<TimestampMicrosecondType>();
    let duration = c(6).as_primitive::<Float64Type>();
    let errors = c(7).as_primitive::<Int64Type>();
    let rate = c(8).as_primitive::<Int32Type>();
    let channels = c(9).as_primitive::<Int32Type>();
    let error = c(FIXED + group.fields.len()).as_string::<i32>();
    let text = |a: &StringArray, row: usize| a.is_valid(row).then(|| a.value(row).to_owned());
    (0..batch.num_rows())
        .map(|row| StoredRow {
            fingerprint: Fingerprint {
                path: path.value(row).to_owned(),
                size: u64::try_from(size.value(row)).unwrap_or(0),
                e_tag: text(e_tag, row),
                last_modified: modified.value(row),
            },
            content_hash: text(hash, row),
            analyzed_at: analyzed.value(row),
            outcome: match text(error, row) {
                Some(e) => Err(e),
                None => Ok((
                    duration.is_valid(row).then(|| Decoded {
                        duration_s: duration.value(row),
                        errors: errors.value(row),
                        sample_rate: rate.value(row),
                        channels: channels.value(row),
                    }),
                    (0..group.fields.len())
                        .map(|f| value_at(c(FIXED + f).as_ref(), row))
                        .collect(),
                )),
            },
        })
        .collect()
}

/// One cell as a [`Value`], for the types feature groups produce.
fn value_at(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Float64 => Value::Float64(array.as_primitive::<Float64Type>().value(row)),
        DataType::Int64 => Value::Int64(array.as_primitive::<Int64Type>().value(row)),
        DataType::Utf8 => Value::Utf8(array.as_string::<i32>().value(row).to_owned()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::List(item) => {
            let list = array.as_list::<i32>().value(row);
            match item.data_type() {
                DataType::Utf8 => Value::Utf8List(
                    list.as_string::<i32>()
                        .iter()
                        .map(|s| s.unwrap_or_default().to_owned())
                        .collect(),
                ),
                DataType::Struct(_) => {
                    let entries = list.as_struct();
                    let (models, tags, scores) = (
                        entries.column(0).as_string::<i32>(),
                        entries.column(1).as_string::<i32>(),
                        entries.column(2).as_primitive::<Float32Type>(),
                    );
                    Value::Tags(
                        (0..entries.len())
                            .map(|i| {
                                (
                                    models.value(i).to_owned(),
                                    tags.value(i).to_owned(),
                                    scores.value(i),
                                )
                            })
                            .collect(),
                    )
                }
                _ => Value::Float32List(list.as_primitive::<Float32Type>().values().to_vec()),
            }
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_survive_a_round_trip() {
        let group = &features::group_schemas()[0];
        let values: Vec<Value> = group
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| match f.data_type() {
                DataType::Float64 => Value::Float64(i as f64 + 0.5),
                DataType::Utf8 => Value::Utf8(format!("v{i}")),
                DataType::Int64 => Value::Int64(i as i64),
                _ => Value::Float32List(vec![1.0, 2.0]),
            })
            .collect();
        let fingerprint = Fingerprint {
            path: "file:///music/a.mp3".into(),
            size: 1234,
            e_tag: Some("abc".into()),
            last_modified: 1_700_000_000_000_000,
        };
        let decoded = Decoded {
            duration_s: 12.5,
            errors: 2,
            sample_rate: 44_100,
            channels: 2,
        };
        let rows = vec![
            StoredRow {
                fingerprint: fingerprint.clone(),
                content_hash: Some("ff00".into()),
                analyzed_at: 5,
                outcome: Ok((Some(decoded.clone()), values.clone())),
            },
            StoredRow {
                fingerprint: Fingerprint {
                    path: "file:///music/bad.mp3".into(),
                    e_tag: None,
                    ..fingerprint.clone()
                },
                content_hash: None,
                analyzed_at: 6,
                outcome: Err("no audio".into()),
            },
        ];
        let back = decode(group, encode(group, &rows).unwrap()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].fingerprint, fingerprint);
        assert_eq!(back[0].content_hash.as_deref(), Some("ff00"));
        assert_eq!(back[0].outcome, Ok((Some(decoded), values)));
        assert_eq!(back[1].outcome, Err("no audio".to_string()));
        assert_eq!(back[1].fingerprint.e_tag, None);
    }

    #[test]
    fn parse_part_reads_a_group_by_name() {
        let group = &features::group_schemas()[0];
        let bytes = encode(group, &[]).unwrap();
        assert_eq!(parse_part(group.name, bytes.clone()).unwrap(), 0);
        let err = parse_part("nope", bytes).unwrap_err();
        assert_eq!(err.to_string(), "Execution error: no stored group \"nope\"");
    }
}
