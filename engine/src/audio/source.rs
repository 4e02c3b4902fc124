//! A symphonia `MediaSource` over an object store: ranged reads in blocks, so that probing a
//! header fetches the first blocks (and the tail, for trailing tags) rather than the file, while
//! a decode reading straight through grows its blocks to keep requests few and, with
//! [`ObjectSource::reading_ahead`], fetches the next block while the current one is decoded.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::physical_plan::metrics::Count;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use symphonia::core::io::MediaSource;
use tokio::runtime::Handle;

/// Bytes fetched by a request after a seek; symphonia's own read-ahead buffer is of the same size.
const BLOCK: u64 = 64 * 1024;
/// Sequential reads double the block up to this size.
const MAX_BLOCK: u64 = 4 * 1024 * 1024;

/// Read + Seek over one object. Blocking: use it from a blocking thread (`spawn_blocking`).
pub struct ObjectSource {
    store: Arc<dyn ObjectStore>,
    path: Path,
    len: u64,
    pos: u64,
    block: Bytes,
    block_start: u64,
    next_block: u64,
    runtime: Handle,
    bytes_read: Count,
    record: Option<ReadRecord>,
    read_ahead: bool,
    /// The next block, being fetched in the background.
    pending: Option<Prefetch>,
    /// Set when nobody waits for the read any more: the next read fails.
    cancelled: Option<Arc<AtomicBool>>,
}

/// A block fetched in the background, from `start`.
struct Prefetch {
    start: u64,
    task: tokio::task::JoinHandle<object_store::Result<Bytes>>,
}

impl Drop for ObjectSource {
    fn drop(&mut self) {
        if let Some(prefetch) = self.pending.take() {
            prefetch.task.abort();
        }
    }
}

/// What a read of one object saw: the content hash of the bytes read in order from the start
/// (the rest is read by [`ReadRecord::content_hash`]), and whether any read failed, in which
/// case the outcome says nothing about the file and must not be stored.
#[derive(Clone, Default)]
pub struct ReadRecord(Arc<Mutex<RecordState>>);

#[derive(Default)]
struct RecordState {
    hasher: blake3::Hasher,
    hashed: u64,
    failed: bool,
}

impl ReadRecord {
    fn saw(&self, pos: u64, bytes: &[u8]) {
        let mut state = self.0.lock();
        let end = pos + bytes.len() as u64;
        if pos <= state.hashed && end > state.hashed {
            let from = (state.hashed - pos) as usize;
            state.hasher.update(&bytes[from..]);
            state.hashed = end;
        }
    }

    fn failed_read(&self) {
        self.0.lock().failed = true;
    }

    pub fn failed(&self) -> bool {
        self.0.lock().failed
    }

    /// The blake3 hash (hex) of the whole object: what was not read in order yet is fetched
    /// now.
    pub async fn content_hash(
        &self,
        store: &dyn ObjectStore,
        path: &Path,
        len: u64,
        bytes_read: &Count,
    ) -> io::Result<String> {
        let (mut hasher, mut hashed) = {
            let state = self.0.lock();
            (state.hasher.clone(), state.hashed)
        };
        while hashed < len {
            let end = len.min(hashed + MAX_BLOCK);
            let bytes = store
                .get_range(path, hashed..end)
                .await
                .map_err(io::Error::other)?;
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{path} is shorter than its listed size"),
                ));
            }
            bytes_read.add(bytes.len());
            hasher.update(&bytes);
            hashed += bytes.len() as u64;
        }
        Ok(hasher.finalize().to_hex().to_string())
    }
}

impl ObjectSource {
    /// `bytes_read` is increased by every byte fetched from the store.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        path: Path,
        len: u64,
        runtime: Handle,
        bytes_read: Count,
    ) -> Self {
        Self {
            store,
            path,
            len,
            pos: 0,
            block: Bytes::new(),
            block_start: 0,
            next_block: BLOCK,
            runtime,
            bytes_read,
            record: None,
            read_ahead: false,
            pending: None,
            cancelled: None,
        }
    }

    /// Once reads run straight through, fetches each next block in the background while the
    /// caller works on the current one (one block, at most [`MAX_BLOCK`], in flight). For
    /// decodes: a header probe would waste the block it does not read.
    pub fn reading_ahead(mut self) -> Self {
        self.read_ahead = true;
        self
    }

    /// Keeps `record` informed of every byte read and every failure.
    pub fn recording(mut self, record: ReadRecord) -> Self {
        self.record = Some(record);
        self
    }

    /// Fails every read once `flag` is set (by a query that was dropped or cancelled), so a
    /// decoder stops within one buffer refill instead of finishing the file.
    pub fn cancelled_by(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancelled = Some(flag);
        self
    }

    fn fetch(&mut self, want: usize) -> io::Result<()> {
        let sequential =
            !self.block.is_empty() && self.pos == self.block_start + self.block.len() as u64;
        self.next_block = if sequential {
            (self.next_block * 2).min(MAX_BLOCK)
        } else {
            BLOCK
        };
        let fetched = match self.pending.take() {
            Some(prefetch) if prefetch.start == self.pos => self
                .runtime
                .block_on(prefetch.task)
                .unwrap_or_else(|join| Err(object_store::Error::JoinError { source: join })),
            other => {
                if let Some(prefetch) = other {
                    prefetch.task.abort();
                }
                let end = self.len.min(self.pos + self.next_block.max(want as u64));
                let fetched = self
                    .runtime
                    .block_on(self.store.get_range(&self.path, self.pos..end));
                if let Ok(bytes) = &fetched {
                    self.bytes_read.add(bytes.len());
                }
                fetched
            }
        };
        let bytes = match fetched {
            Ok(bytes) => bytes,
            Err(e) => {
                if let Some(record) = &self.record {
                    record.failed_read();
                }
                return Err(io::Error::other(e));
            }
        };
        if bytes.is_empty() {
            // The object changed since it was listed.
            if let Some(record) = &self.record {
                record.failed_read();
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than its listed size", self.path),
            ));
        }
        self.block_start = self.pos;
        self.block = bytes;
        if self.read_ahead && sequential {
            self.prefetch();
        }
        Ok(())
    }

    /// Starts fetching the block after the current one, if the object goes on.
    fn prefetch(&mut self) {
        let start = self.block_start + self.block.len() as u64;
        if start >= self.len {
            return;
        }
        let end = self.len.min(start + (self.next_block * 2).min(MAX_BLOCK));
        let (store, path) = (Arc::clone(&self.store), self.path.clone());
        let bytes_read = self.bytes_read.clone();
        let task = self.runtime.spawn(async move {
            let bytes = store.get_range(&path, start..end).await?;
            bytes_read.add(bytes.len());
            Ok(bytes)
        });
        self.pending = Some(Prefetch { start, task });
    }
}

impl Read for ObjectSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .cancelled
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            // What was read so far says nothing about the file: nothing is stored.
            if let Some(record) = &self.record {
                record.failed_read();
            }
            return Err(io::Error::other("the query was cancelled"));
        }
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let block_end = self.block_start + self.block.len() as u64;
        if self.pos < self.block_start || self.pos >= block_end {
            self.fetch(buf.len())?;
        }
        let offset = (self.pos - self.block_start) as usize;
        let available = &self.block[offset..];
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        if let Some(record) = &self.record {
            record.saw(self.pos, &buf[..n]);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectSource {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        let target = match from {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}

impl MediaSource for ObjectSource {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::PutPayload;

    use super::*;

    /// 9 MiB of bytes that differ from block to block.
    fn content() -> Vec<u8> {
        (0..9 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    }

    fn source(rt: &tokio::runtime::Runtime, data: &[u8], bytes_read: &Count) -> ObjectSource {
        let store = Arc::new(InMemory::new());
        let path = Path::from("a/file.mp3");
        rt.block_on(store.put(&path, PutPayload::from(data.to_vec())))
            .unwrap();
        ObjectSource::new(
            store,
            path,
            data.len() as u64,
            rt.handle().clone(),
            bytes_read.clone(),
        )
    }

    #[test]
    fn reading_ahead_reads_every_byte_once_and_in_order() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let data = content();
        let bytes_read = Count::new();
        let mut source = source(&rt, &data, &bytes_read).reading_ahead();
        let mut read = Vec::new();
        let mut buf = vec![0u8; 10_000];
        loop {
            let n = source.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buf[..n]);
        }
        assert!(read == data, "the bytes read differ from the object's");
        assert_eq!(bytes_read.value(), data.len());
    }

    #[test]
    fn a_seek_away_from_the_block_read_ahead_still_reads_the_right_bytes() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let data = content();
        let bytes_read = Count::new();
        let mut source = source(&rt, &data, &bytes_read).reading_ahead();
        let mut buf = vec![0u8; 70_000];
        // Two sequential blocks start a read-ahead; the seek must not use it.
        source.read_exact(&mut buf).unwrap();
        source.read_exact(&mut buf).unwrap();
        assert!(source.pending.is_some());
        source.seek(SeekFrom::Start(5_000_000)).unwrap();
        source.read_exact(&mut buf).unwrap();
        assert!(buf[..] == data[5_000_000..5_070_000]);
        source.seek(SeekFrom::End(-100)).unwrap();
        let mut tail = Vec::new();
        source.read_to_end(&mut tail).unwrap();
        assert!(tail[..] == data[data.len() - 100..]);
    }

    #[test]
    fn without_read_ahead_nothing_is_fetched_beyond_what_is_read() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let data = content();
        let bytes_read = Count::new();
        let mut source = source(&rt, &data, &bytes_read);
        let mut buf = vec![0u8; 70_000];
        source.read_exact(&mut buf).unwrap();
        source.read_exact(&mut buf).unwrap();
        assert!(source.pending.is_none());
        // The first read's 70,000 bytes, then a doubled block of 128 KiB.
        assert_eq!(bytes_read.value(), 70_000 + 128 * 1024);
    }

    #[test]
    fn a_cancelled_read_fails_and_is_recorded_as_failed() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let data = content();
        let bytes_read = Count::new();
        let (flag, record) = (Arc::new(AtomicBool::new(false)), ReadRecord::default());
        let mut source = source(&rt, &data, &bytes_read)
            .recording(record.clone())
            .cancelled_by(Arc::clone(&flag));
        let mut buf = vec![0u8; 70_000];
        source.read_exact(&mut buf).unwrap();
        assert!(!record.failed());
        flag.store(true, Ordering::Relaxed);
        let fetched = bytes_read.value();
        let err = source.read(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "the query was cancelled");
        assert!(record.failed());
        assert_eq!(bytes_read.value(), fetched);
    }
}
