//! A symphonia `MediaSource` over an object store: ranged reads in blocks, so that probing a
//! header fetches the first blocks (and the tail, for trailing tags) rather than the file, while
//! a decode reading straight through grows its blocks to keep requests few.

use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use bytes::Bytes;
use datafusion::physical_plan::metrics::Count;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
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
        }
    }

    fn fetch(&mut self, want: usize) -> io::Result<()> {
        let sequential =
            !self.block.is_empty() && self.pos == self.block_start + self.block.len() as u64;
        self.next_block = if sequential {
            (self.next_block * 2).min(MAX_BLOCK)
        } else {
            BLOCK
        };
        let end = self.len.min(self.pos + self.next_block.max(want as u64));
        let range = self.pos..end;
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&self.path, range))
            .map_err(io::Error::other)?;
        if bytes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than its listed size", self.path),
            ));
        }
        self.bytes_read.add(bytes.len());
        self.block_start = self.pos;
        self.block = bytes;
        Ok(())
    }
}

impl Read for ObjectSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
