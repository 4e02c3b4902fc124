//! Object stores for every URL the engine touches, each wrapped so that it refuses any path
//! outside the allowed roots. This is the one gate all reads and writes pass through: AUDIO
//! scans, CSV/Parquet/JSON tables, `COPY ... TO`, the feature store and the catalog alike.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use url::Url;

use crate::location::{store_url, AllowedRoots};

/// `aws.*` options accepted on tables and by the builder, with the S3 setting each one sets.
pub const S3_OPTIONS: &[(&str, AmazonS3ConfigKey)] = &[
    ("aws.access_key_id", AmazonS3ConfigKey::AccessKeyId),
    ("aws.secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
    ("aws.session_token", AmazonS3ConfigKey::Token),
    ("aws.region", AmazonS3ConfigKey::Region),
    ("aws.endpoint", AmazonS3ConfigKey::Endpoint),
    (
        "aws.allow_http",
        AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
    ),
];

/// Builds an S3 client for `bucket` from the standard `AWS_*` environment variables, overridden
/// by `options` (keys of [`S3_OPTIONS`]). A plain-HTTP endpoint (a local S3-compatible server)
/// is allowed without further ado.
pub fn s3_store(bucket: &str, options: &[(String, String)]) -> DfResult<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in options {
        let Some((_, config_key)) = S3_OPTIONS.iter().find(|(name, _)| name == key) else {
            continue;
        };
        builder = builder.with_config(*config_key, value);
    }
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        builder = builder.with_allow_http(true);
    }
    let store = builder.build().map_err(|e| {
        DataFusionError::Execution(format!("cannot configure S3 for bucket '{bucket}': {e}"))
    })?;
    Ok(Arc::new(store))
}

/// Registry that creates stores on demand and hands out guarded ones only.
#[derive(Debug)]
pub struct GuardedRegistry {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    roots: Arc<AllowedRoots>,
}

impl GuardedRegistry {
    pub fn new(roots: Arc<AllowedRoots>) -> Self {
        Self {
            stores: RwLock::default(),
            roots,
        }
    }

    fn unguarded(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = store_url(url).to_string();
        if let Some(store) = self.stores.read().expect("registry lock").get(&key) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "file" => Arc::new(LocalFileSystem::new()),
            "s3" => s3_store(url.host_str().unwrap_or_default(), &[])?,
            other => {
                let hint = "use a local path, file:// or s3://";
                let msg = format!("no object store for scheme '{other}' ({url}); {hint}");
                return Err(DataFusionError::Configuration(msg));
            }
        };
        let mut stores = self.stores.write().expect("registry lock");
        Ok(Arc::clone(stores.entry(key).or_insert(store)))
    }
}

impl ObjectStoreRegistry for GuardedRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let key = store_url(url).to_string();
        self.stores
            .write()
            .expect("registry lock")
            .insert(key, store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = store_url(url).to_string();
        self.stores
            .write()
            .expect("registry lock")
            .remove(&key)
            .ok_or_else(|| DataFusionError::Execution(format!("no object store for {key}")))
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        Ok(Arc::new(GuardedStore {
            inner: self.unguarded(url)?,
            base: store_url(url),
            roots: Arc::clone(&self.roots),
        }))
    }
}

/// A store that checks every path against the allowed roots before passing the call on.
#[derive(Debug)]
struct GuardedStore {
    inner: Arc<dyn ObjectStore>,
    base: Url,
    roots: Arc<AllowedRoots>,
}

impl fmt::Display for GuardedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guarded({})", self.inner)
    }
}

impl GuardedStore {
    fn check(&self, path: &Path) -> object_store::Result<()> {
        let mut url = self.base.clone();
        url.set_path(&format!("/{path}"));
        self.roots
            .check(&url)
            .map_err(|e| object_store::Error::PermissionDenied {
                path: url.to_string(),
                source: Box::new(e),
            })
    }

    fn check_prefix(&self, prefix: Option<&Path>) -> object_store::Result<()> {
        self.check(prefix.unwrap_or(&Path::from("")))
    }
}

#[async_trait]
impl ObjectStore for GuardedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.check(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let guard = GuardedStore {
            inner: Arc::clone(&self.inner),
            base: self.base.clone(),
            roots: Arc::clone(&self.roots),
        };
        let checked = locations
            .map(move |path| path.and_then(|p| guard.check(&p).map(|()| p)))
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check_prefix(prefix)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn guarded_store_refuses_paths_outside_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        std::fs::write(dir.join("inside.txt"), b"ok").unwrap();
        let mut roots = AllowedRoots::new();
        roots.add(dir.to_str().unwrap()).unwrap();
        let registry = GuardedRegistry::new(Arc::new(roots));
        let store = registry
            .get_store(&Url::parse("file:///").unwrap())
            .unwrap();

        let inside = Path::from_filesystem_path(dir.join("inside.txt")).unwrap();
        let bytes = store.get(&inside).await.unwrap().bytes().await.unwrap();
        assert_eq!(bytes.as_ref(), b"ok");

        let outside = Path::from("etc/passwd");
        let err = store.get(&outside).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("location 'file:///etc/passwd' is outside the allowed"),
            "{err}"
        );
        let err = store
            .put(&Path::from("tmp/evil.txt"), PutPayload::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(err, object_store::Error::PermissionDenied { .. }));
    }
}
