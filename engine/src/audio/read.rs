//! Reading one audio object on a blocking thread: its header, or a full decode through the
//! feature groups, or to plain samples. Every failure, a panic included, comes back as a message.

use std::sync::Arc;

use audiolake_udf::features::{
    analyze_with, musicnn, AnalysisError, AnalysisOptions, AnalysisOutput,
};
use audiolake_udf::probe::{panic_message, probe, AudioHeader};
use audiolake_udf::samples::decode_mono;
use datafusion::physical_plan::metrics::Count;
use object_store::{ObjectMeta, ObjectStore};

use super::source::{ObjectSource, ReadRecord};
use crate::cancel::CancelOnDrop;

/// Reads the header and tags of `meta`. The record tells whether every read succeeded.
pub async fn probe_object(
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    bytes_read: Count,
    record: Option<ReadRecord>,
) -> Result<AudioHeader, String> {
    let read = |source: Box<ObjectSource>, ext: Option<&str>| {
        probe(source, ext).map_err(|e| e.to_string())
    };
    blocking(
        "probe",
        Extent::Header,
        store,
        meta,
        bytes_read,
        record,
        read,
    )
    .await
}

/// Decodes `meta` once and runs the named feature groups over it with `options`. The record
/// tells whether every read succeeded and gives the content hash.
pub async fn analyze_object(
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    groups: Vec<&'static str>,
    options: AnalysisOptions,
    bytes_read: Count,
    record: Option<ReadRecord>,
) -> Result<AnalysisOutput, String> {
    let read = move |source: Box<ObjectSource>, ext: Option<&str>| {
        analyze_with(source, ext, &groups, &options).map_err(|e| e.to_string())
    };
    blocking(
        "analysis",
        Extent::Whole,
        store,
        meta,
        bytes_read,
        record,
        read,
    )
    .await
}

/// What `decode(path)` got from one file.
pub enum Decoded {
    Samples(Vec<f32>),
    /// The file could not be read or decoded: the row is NULL.
    Unreadable,
    /// More audio than one call may return: the query fails with this message.
    TooLong(String),
}

/// Decodes `meta` to mono samples at `rate` (`None`: the file's own rate), at most
/// `max_seconds` of them.
pub async fn decode_object(
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    rate: Option<u32>,
    max_seconds: f64,
) -> Decoded {
    let decoded = blocking(
        "decode",
        Extent::Whole,
        store,
        meta,
        Count::new(),
        None,
        move |source, ext| match decode_mono(source, ext, rate, max_seconds) {
            Ok((samples, _)) => Ok(Decoded::Samples(samples)),
            Err(e @ AnalysisError::TooLong { .. }) => Ok(Decoded::TooLong(e.to_string())),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    decoded.unwrap_or(Decoded::Unreadable)
}

/// How much of an object a read goes through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extent {
    /// Its header and tags: a few small reads.
    Header,
    /// All of it, in order: the next block is fetched while this one decodes.
    Whole,
}

async fn blocking<T: Send + 'static>(
    what: &str,
    extent: Extent,
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    bytes_read: Count,
    record: Option<ReadRecord>,
    read: impl FnOnce(Box<ObjectSource>, Option<&str>) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let runtime = tokio::runtime::Handle::current();
    // Dropped with this future (the query ended or was cancelled): the read stops.
    let cancel = CancelOnDrop::default();
    let cancelled = cancel.flag();
    let task = tokio::task::spawn_blocking(move || {
        // The networks' passes after the decode stop on the same flag.
        let _networks = musicnn::stop_networks_when(Arc::clone(&cancelled));
        let extension = meta.location.extension().map(str::to_lowercase);
        let mut source = ObjectSource::new(store, meta.location, meta.size, runtime, bytes_read);
        source = source.cancelled_by(cancelled);
        if extent == Extent::Whole {
            source = source.reading_ahead();
        }
        if let Some(record) = record {
            source = source.recording(record);
        }
        read(Box::new(source), extension.as_deref())
    });
    let joined = task.await;
    drop(cancel);
    match joined {
        Ok(result) => result,
        Err(join) if join.is_panic() => Err(format!(
            "{what} panicked: {}",
            panic_message(join.into_panic().as_ref())
        )),
        Err(join) => Err(format!("{what} was cancelled: {join}")),
    }
}
