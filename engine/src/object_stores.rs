//! Object stores for every URL the engine touches, each wrapped so that it refuses any path
//! outside the allowed roots. This is the one gate all reads and writes pass through: AUDIO
//! scans, CSV/Parquet/JSON tables, `COPY ... TO`, the feature store and the catalog alike.
//! Stores handed to SQL also refuse the store's own folders; the engine keeps a handle of its
//! own for those ([`GuardedRegistry::engine_store`]). Each write, done or failed, empties the
//! cache of table listings, so the next query lists again.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::{BoxStream, StreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientConfigKey, CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parking_lot::RwLock;
use url::{Host, Url};

use crate::durable::DurableLocal;
use crate::listings::Listings;
use crate::location::{store_url, Access, AllowedRoots};
use crate::secrets::Secrets;

/// `aws.*` options accepted on tables and by the builder, with the S3 setting each one sets.
pub const S3_OPTIONS: &[(&str, AmazonS3ConfigKey)] = &[
    ("aws.access_key_id", AmazonS3ConfigKey::AccessKeyId),
    ("aws.secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
    ("aws.session_token", AmazonS3ConfigKey::Token),
    ("aws.region", AmazonS3ConfigKey::Region),
    ("aws.endpoint", AmazonS3ConfigKey::Endpoint),
    (
        "aws.allow_http",
        AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp),
    ),
];

/// Builds an S3 client for `bucket` from the standard `AWS_*` environment variables, overridden
/// by `options` (keys of [`S3_OPTIONS`]). A plain-HTTP endpoint must be on this machine
/// (127.0.0.0/8, `localhost`, `[::1]`) or be allowed explicitly with `aws.allow_http`.
pub fn s3_store(bucket: &str, options: &[(String, String)]) -> DfResult<Arc<dyn ObjectStore>> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (key, value) in options {
        let Some((_, config_key)) = S3_OPTIONS.iter().find(|(name, _)| name == key) else {
            continue;
        };
        builder = builder.with_config(*config_key, value);
    }
    let allow_http = AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp);
    let allowed = builder
        .get_config_value(&allow_http)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        if endpoint.starts_with("http://") && !allowed {
            if !is_loopback(&endpoint) {
                return Err(DataFusionError::Configuration(format!(
                    "the S3 endpoint '{endpoint}' for bucket '{bucket}' is plain HTTP; allow it \
                     with 'aws.allow_http' 'true' (or AWS_ALLOW_HTTP=true), or use https://. \
                     Only endpoints on this machine (127.0.0.1, localhost, [::1]) are allowed \
                     without it"
                )));
            }
            builder = builder.with_allow_http(true);
        }
    }
    let store = builder.build().map_err(|e| {
        DataFusionError::Execution(format!("cannot configure S3 for bucket '{bucket}': {e}"))
    })?;
    Ok(Arc::new(store))
}

/// Whether `endpoint` names this machine.
fn is_loopback(endpoint: &str) -> bool {
    match Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Registry that creates stores on demand and hands out guarded ones only.
#[derive(Debug)]
pub struct GuardedRegistry {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
    roots: Arc<AllowedRoots>,
    secrets: Arc<Secrets>,
    listings: Arc<Listings>,
}

impl GuardedRegistry {
    pub fn new(roots: Arc<AllowedRoots>, secrets: Arc<Secrets>, listings: Arc<Listings>) -> Self {
        Self {
            stores: RwLock::default(),
            roots,
            secrets,
            listings,
        }
    }

    /// The engine's own handle on its store: guarded by the roots, but allowed into the
    /// store's folders (catalog, indexes, features).
    pub fn engine_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.guarded(url, true)
    }

    /// The store an AUDIO table reads through: the bucket's shared one, or, when the table
    /// sets `aws.*` options, a client of its own configured by them over the bucket's secret
    /// and the environment. Clients are shared between tables with the same options only, so
    /// one table's endpoint never reaches another table on the same bucket.
    pub fn table_store(
        &self,
        url: &Url,
        options: &[(String, String)],
    ) -> DfResult<Arc<dyn ObjectStore>> {
        let Some(digest) = options_digest(url, options) else {
            return self.guarded(url, false);
        };
        let key = own_client_key(url, &digest);
        let inner = self.cached(key, || {
            let bucket = url.host_str().unwrap_or_default();
            let mut merged = self.secrets.for_bucket(bucket);
            merged.extend(options.iter().cloned());
            s3_store(bucket, &merged)
        })?;
        Ok(self.wrap(inner, url, false))
    }

    /// The URL under which this registry hands out [`Self::table_store`]'s client, for scans
    /// that look their store up by URL: the bucket's, or for a table with `aws.*` options the
    /// bucket's with the options' digest as user name (`s3://<digest>@bucket`).
    pub fn table_store_url(url: &Url, options: &[(String, String)]) -> Url {
        let mut base = store_url(url);
        if let Some(digest) = options_digest(url, options) {
            base.set_username(&digest)
                .expect("an s3:// URL has a host, so it takes a user name");
        }
        base
    }

    /// Forgets the S3 clients made so far, so that the next use picks up changed secrets.
    pub fn forget_s3_clients(&self) {
        self.stores
            .write()
            .retain(|key, _| !key.starts_with("s3://"));
    }

    fn guarded(&self, url: &Url, internal: bool) -> DfResult<Arc<dyn ObjectStore>> {
        let inner = self.unguarded(url)?;
        Ok(self.wrap(inner, url, internal))
    }

    fn wrap(&self, inner: Arc<dyn ObjectStore>, url: &Url, internal: bool) -> Arc<dyn ObjectStore> {
        Arc::new(GuardedStore {
            inner,
            base: store_url(url),
            roots: Arc::clone(&self.roots),
            internal,
            listings: Arc::clone(&self.listings),
        })
    }

    /// The bucket's or folder's shared client, made from the environment and secrets.
    fn unguarded(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.cached(store_url(url).to_string(), || match url.scheme() {
            "file" => Ok(Arc::new(DurableLocal::new(LocalFileSystem::new())) as _),
            "s3" => {
                let bucket = url.host_str().unwrap_or_default();
                s3_store(bucket, &self.secrets.for_bucket(bucket))
            }
            other => {
                let hint = "use a local path, file:// or s3://";
                let msg = format!("no object store for scheme '{other}' ({url}); {hint}");
                Err(DataFusionError::Configuration(msg))
            }
        })
    }

    /// The client cached under `key`, made by `make` the first time.
    fn cached(
        &self,
        key: String,
        make: impl FnOnce() -> DfResult<Arc<dyn ObjectStore>>,
    ) -> DfResult<Arc<dyn ObjectStore>> {
        let cached = self.stores.read().get(&key).cloned();
        if let Some(store) = cached {
            return Ok(store);
        }
        let store = make()?;
        let mut stores = self.stores.write();
        Ok(Arc::clone(stores.entry(key).or_insert(store)))
    }
}

/// A digest of a table's `aws.*` options (none without options or off S3), naming its client
/// without putting a credential in a key or URL.
fn options_digest(url: &Url, options: &[(String, String)]) -> Option<String> {
    if options.is_empty() || url.scheme() != "s3" {
        return None;
    }
    let mut digest = blake3::Hasher::new();
    for (key, value) in options {
        for part in [key, value] {
            digest.update(&(part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
    }
    Some(digest.finalize().to_hex().to_string())
}

/// Where a table's own client is cached: its bucket and the digest of its options.
fn own_client_key(url: &Url, digest: &str) -> String {
    format!("{}#{digest}", store_url(url))
}

impl ObjectStoreRegistry for GuardedRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let key = store_url(url).to_string();
        self.stores.write().insert(key, store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = store_url(url).to_string();
        self.stores
            .write()
            .remove(&key)
            .ok_or_else(|| DataFusionError::Execution(format!("no object store for {key}")))
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if url.username().is_empty() {
            return self.guarded(url, false);
        }
        // A table's own client, made when the table was created or last scanned.
        let key = own_client_key(url, url.username());
        let inner = self.stores.read().get(&key).cloned();
        let inner = inner.ok_or_else(|| {
            let bucket = url.host_str().unwrap_or_default();
            DataFusionError::Execution(format!(
                "no S3 client for a table on bucket '{bucket}' with its own aws.* options"
            ))
        })?;
        Ok(self.wrap(inner, url, false))
    }
}

/// A store that checks every path against the allowed roots before passing the call on.
#[derive(Debug, Clone)]
struct GuardedStore {
    inner: Arc<dyn ObjectStore>,
    base: Url,
    roots: Arc<AllowedRoots>,
    /// The engine's own handle: the store's folders are reachable.
    internal: bool,
    listings: Arc<Listings>,
}

impl fmt::Display for GuardedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guarded({})", self.inner)
    }
}

impl GuardedStore {
    fn check(&self, path: &Path, access: Access) -> object_store::Result<()> {
        self.roots
            .check_object(&self.base, path, access, self.internal)
            .map(|_| ())
            .map_err(|e| object_store::Error::PermissionDenied {
                path: format!("{}{path}", self.base),
                source: Box::new(e),
            })
    }

    fn check_prefix(&self, prefix: Option<&Path>) -> object_store::Result<()> {
        self.check(prefix.unwrap_or(&Path::from("")), Access::Read)
    }

    /// Drops listed objects that may not be read (e.g. symlinks to outside the roots).
    fn readable(
        &self,
        listed: BoxStream<'static, object_store::Result<ObjectMeta>>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let guard = self.clone();
        listed
            .filter(move |meta| {
                let keep = match meta {
                    Ok(meta) => guard.check(&meta.location, Access::Read).is_ok(),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed()
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
        self.check(location, Access::Write)?;
        let put = self.inner.put_opts(location, payload, opts).await;
        self.listings.forget();
        put
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location, Access::Write)?;
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ListedOnComplete {
            inner: upload,
            listings: Arc::clone(&self.listings),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location, Access::Read)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.check(location, Access::Read)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let guard = self.clone();
        let checked = locations
            .map(move |path| path.and_then(|p| guard.check(&p, Access::Write).map(|()| p)))
            .boxed();
        let listings = Arc::clone(&self.listings);
        self.inner
            .delete_stream(checked)
            .inspect(move |_| listings.forget())
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.readable(self.inner.list(prefix)),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check_prefix(prefix) {
            Ok(()) => self.readable(self.inner.list_with_offset(prefix, offset)),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check_prefix(prefix)?;
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed
            .objects
            .retain(|meta| self.check(&meta.location, Access::Read).is_ok());
        listed
            .common_prefixes
            .retain(|dir| self.check(dir, Access::Read).is_ok());
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from, Access::Read)?;
        self.check(to, Access::Write)?;
        let copied = self.inner.copy_opts(from, to, options).await;
        self.listings.forget();
        copied
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.check(from, Access::Write)?;
        self.check(to, Access::Write)?;
        let renamed = self.inner.rename_opts(from, to, options).await;
        self.listings.forget();
        renamed
    }
}

/// An upload that empties the listings once its object is in place.
#[derive(Debug)]
struct ListedOnComplete {
    inner: Box<dyn MultipartUpload>,
    listings: Arc<Listings>,
}

#[async_trait]
impl MultipartUpload for ListedOnComplete {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await;
        self.listings.forget();
        done
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
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
        let listings = Listings::new(crate::listings::DEFAULT_LISTING_TTL).unwrap();
        let registry = GuardedRegistry::new(Arc::new(roots), Arc::default(), listings);
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
