//! Local writes that survive a power loss. `LocalFileSystem` renames a staged file into place
//! without syncing it, so a crash can publish an empty part, record or index file. Here a put
//! writes a staged file in the same folder, syncs it, renames it into place and syncs the
//! folder; a multipart upload (large `COPY ... TO`) syncs the file and its folder on complete.

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// A [`LocalFileSystem`] whose writes are synced to disk before they are visible.
#[derive(Debug)]
pub struct DurableLocal {
    inner: LocalFileSystem,
}

impl DurableLocal {
    pub fn new(inner: LocalFileSystem) -> Self {
        Self { inner }
    }
}

impl fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Durable({})", self.inner)
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        return object_store::Error::AlreadyExists {
            path: path.display().to_string(),
            source: Box::new(e),
        };
    }
    object_store::Error::Generic {
        store: "DurableLocal",
        source: format!("{}: {e}", path.display()).into(),
    }
}

/// Syncs the folder holding `path`, so that a rename into it is on disk.
fn sync_parent(path: &std::path::Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes `payload` to `dest` through a synced staging file; `create` refuses an existing
/// `dest`.
fn write_durably(
    dest: &std::path::Path,
    payload: &PutPayload,
    create: bool,
) -> std::io::Result<()> {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // `<name>#<digits>` is the staging name object_store's listing skips.
    let (mut file, staged) = loop {
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{}{n}", std::process::id()));
        let staged = PathBuf::from(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)
        {
            Ok(file) => break (file, staged),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    };
    let written = payload
        .iter()
        .try_for_each(|chunk| file.write_all(chunk))
        .and_then(|()| file.sync_all());
    drop(file);
    let published = written.and_then(|()| {
        if create {
            std::fs::hard_link(&staged, dest)
        } else {
            std::fs::rename(&staged, dest)
        }
    });
    if create || published.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    published?;
    sync_parent(dest)
}

#[async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let create = match &opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => return self.inner.put_opts(location, payload, opts).await,
        };
        if !opts.attributes.is_empty() {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        tokio::task::spawn_blocking(move || {
            write_durably(&dest, &payload, create).map_err(|e| io_error(&dest, e))
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "DurableLocal",
            source: Box::new(e),
        })??;
        let meta = self.inner.head(location).await?;
        Ok(PutResult {
            e_tag: meta.e_tag,
            version: meta.version,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let dest = self.inner.path_to_filesystem(location)?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload { inner, dest }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        let dest = self.inner.path_to_filesystem(to)?;
        tokio::task::spawn_blocking(move || sync_parent(&dest).map_err(|e| io_error(&dest, e)))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "DurableLocal",
                source: Box::new(e),
            })?
    }
}

/// A local multipart upload that syncs the file and its folder once it is in place.
#[derive(Debug)]
struct SyncedUpload {
    inner: Box<dyn MultipartUpload>,
    dest: PathBuf,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let result = self.inner.complete().await?;
        let dest = self.dest.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&dest)
                .and_then(|f| f.sync_all())
                .and_then(|()| sync_parent(&dest))
                .map_err(|e| io_error(&dest, e))
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "DurableLocal",
            source: Box::new(e),
        })??;
        Ok(result)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_land_whole_and_create_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableLocal::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let path = Path::from("a/b/part.parquet");
        store
            .put(&path, PutPayload::from_static(b"first"))
            .await
            .unwrap();
        store
            .put(&path, PutPayload::from_static(b"second"))
            .await
            .unwrap();
        let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes.as_ref(), b"second");
        let err = store
            .put_opts(
                &path,
                PutPayload::from_static(b"third"),
                PutMode::Create.into(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, object_store::Error::AlreadyExists { .. }),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["part.parquet".to_string()]);
    }
}
