//! Index graphs as local files, so that they can be memory-mapped: a local store's own files,
//! or, for object storage, copies in a cache folder on this machine. Build files are written
//! once and never changed (a rebuild writes new names), so a copy stays valid for as long as
//! its build exists.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::io::AsyncWriteExt;
use url::Url;

use crate::clock::writer_id;

/// Where the graph files of a store are opened from.
pub enum IndexFiles {
    /// The store is a folder of this machine: files are mapped where they are.
    Local(LocalFileSystem),
    /// Files are copied into `dir` first; `store` (the store's URL) keeps two stores' copies
    /// apart.
    Cached { dir: PathBuf, store: String },
}

impl std::fmt::Debug for IndexFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexFiles::Local(_) => f.write_str("Local"),
            IndexFiles::Cached { dir, .. } => write!(f, "Cached({})", dir.display()),
        }
    }
}

/// `$XDG_CACHE_HOME/audiolake/indexes`, else `~/.cache/audiolake/indexes`, else one in the
/// temporary folder.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|cache| cache.join("audiolake").join("indexes"))
        .unwrap_or_else(|| std::env::temp_dir().join("audiolake-indexes"))
}

fn io_error(action: &str, path: &std::path::Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::Execution(format!("index file {action} {}: {e}", path.display()))
}

impl IndexFiles {
    /// Files of the store at `store_url`: mapped in place for `file:` stores, else copied into
    /// `cache` (default [`default_cache_dir`]).
    pub fn for_store(store_url: &Url, cache: Option<PathBuf>) -> IndexFiles {
        if store_url.scheme() == "file" {
            IndexFiles::Local(LocalFileSystem::new())
        } else {
            IndexFiles::Cached {
                dir: cache.unwrap_or_else(default_cache_dir),
                store: store_url.to_string(),
            }
        }
    }

    /// The name of `path`'s copy in the cache.
    fn copy_of(dir: &std::path::Path, store: &str, path: &Path) -> PathBuf {
        let key = blake3::hash(format!("{store}\n{path}").as_bytes());
        dir.join(format!("{}.hnsw", &key.to_hex()[..32]))
    }

    /// A local file with the bytes of `path` in `store`, copied first if needed (streamed to
    /// disk, never held in memory whole).
    pub async fn local(&self, store: &dyn ObjectStore, path: &Path) -> Result<PathBuf> {
        let (dir, key) = match self {
            IndexFiles::Local(fs) => return Ok(fs.path_to_filesystem(path)?),
            IndexFiles::Cached { dir, store } => (dir, store),
        };
        let copy = Self::copy_of(dir, key, path);
        if tokio::fs::try_exists(&copy).await.unwrap_or(false) {
            return Ok(copy);
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_error("cache folder", dir, e))?;
        let partial = copy.with_extension(format!("{:016x}.partial", writer_id()));
        let copied = async {
            let mut file = tokio::fs::File::create(&partial).await?;
            let mut stream = store.get(path).await?.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk: bytes::Bytes = chunk?;
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            tokio::fs::rename(&partial, &copy).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(DataFusionError::Execution(format!(
                "index file {path} was not copied to {}: {e}",
                dir.display()
            )));
        }
        Ok(copy)
    }

    /// Where a new build file `path` is written before [`finish`](Self::finish) makes it the
    /// store's: beside its place for a local store, in the cache folder otherwise.
    pub fn start(&self, path: &Path) -> Result<NewFile> {
        let place = match self {
            IndexFiles::Local(fs) => fs.path_to_filesystem(path)?,
            IndexFiles::Cached { dir, store } => Self::copy_of(dir, store, path),
        };
        if let Some(dir) = place.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error("folder", dir, e))?;
        }
        Ok(NewFile {
            partial: place.with_extension(format!("{:016x}.partial", writer_id())),
            place,
        })
    }

    /// Makes the file written at `file.path()` the store's `path`: renamed into place for a
    /// local store; otherwise uploaded (streamed in parts, never held in memory whole) and
    /// then kept as the cached copy, so the build is not downloaded again to be mapped.
    pub async fn finish(
        &self,
        store: &Arc<dyn ObjectStore>,
        path: &Path,
        file: NewFile,
    ) -> Result<()> {
        if let IndexFiles::Cached { .. } = self {
            let uploaded = async {
                let mut from = tokio::fs::File::open(&file.partial).await?;
                let mut to = BufWriter::new(Arc::clone(store), path.clone());
                tokio::io::copy(&mut from, &mut to).await?;
                to.shutdown().await?;
                Ok::<_, std::io::Error>(())
            }
            .await;
            uploaded.map_err(|e| {
                DataFusionError::Execution(format!("index file {path} was not written: {e}"))
            })?;
        }
        tokio::fs::rename(&file.partial, &file.place)
            .await
            .map_err(|e| io_error("renamed", &file.place, e))
    }

    /// Deletes the cached copy of `path`, if any (a local store's file is the store's to
    /// delete).
    pub async fn forget(&self, path: &Path) {
        if let IndexFiles::Cached { dir, store } = self {
            let copy = Self::copy_of(dir, store, path);
            match tokio::fs::remove_file(&copy).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("index copy {} was not deleted: {e}", copy.display()),
            }
        }
    }
}

/// A build file being written on this machine; deleted if dropped before
/// [`IndexFiles::finish`] renamed it.
pub struct NewFile {
    partial: PathBuf,
    place: PathBuf,
}

impl NewFile {
    /// Where to write it.
    pub fn path(&self) -> &std::path::Path {
        &self.partial
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        // After a rename there is nothing left to remove.
        let _ = std::fs::remove_file(&self.partial);
    }
}
