//! Helpers shared by the end-to-end tests: an object store that counts what is read through
//! it, WAV files made on the spot, and query plans as text.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use audiolake::datafusion::arrow::array::AsArray;
use audiolake::datafusion::arrow::util::pretty::pretty_format_batches;
use audiolake::AudioLake;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Counts the bytes fetched and the files opened through it.
#[derive(Debug)]
pub struct CountingStore {
    inner: LocalFileSystem,
    reads: Mutex<HashMap<String, u64>>,
}

impl CountingStore {
    pub fn new() -> Self {
        Self {
            inner: LocalFileSystem::new(),
            reads: Mutex::default(),
        }
    }

    /// Bytes read per object since the last call.
    pub fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut self.reads.lock().unwrap())
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let result = self.inner.get_opts(location, options.clone()).await?;
        let len = match options.range {
            Some(GetRange::Bounded(r)) => r.end - r.start,
            _ => result.meta.size,
        };
        if !options.head {
            *self
                .reads
                .lock()
                .unwrap()
                .entry(location.to_string())
                .or_default() += len;
        }
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &ObjectPath,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let result = self.inner.get_ranges(location, ranges).await?;
        let len: u64 = result.iter().map(|b| b.len() as u64).sum();
        *self
            .reads
            .lock()
            .unwrap()
            .entry(location.to_string())
            .or_default() += len;
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// A 16-bit stereo WAV of `seconds` of a quiet tone of `hz`.
pub fn write_wav(path: &Path, seconds: u32, hz: f64) {
    let rate = 44_100u32;
    let frames = rate * seconds;
    let mut out = Vec::with_capacity(44 + frames as usize * 4);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + frames * 4).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    {
        let v = 16u32;
        out.extend_from_slice(&v.to_le_bytes());
    }
    for v in [1u16, 2] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 4).to_le_bytes());
    for v in [4u16, 16] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(frames * 4).to_le_bytes());
    for n in 0..frames {
        let s = ((n as f64 * hz * std::f64::consts::TAU / rate as f64).sin() * 3000.0) as i16;
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// `EXPLAIN sql` as a table of text.
pub async fn explain(lake: &AudioLake, sql: &str) -> String {
    let batches = lake
        .sql(&format!("EXPLAIN {sql}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The first column of `sql`'s rows, a text column without NULLs.
pub async fn strings(lake: &AudioLake, sql: &str) -> Vec<String> {
    let batches = lake.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}
