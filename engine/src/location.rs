//! Locations (local paths, `file://` and `s3://` URLs) and the roots the engine may touch.

use std::path::{Component, Path, PathBuf};

use percent_encoding::percent_decode_str;
use url::Url;

use crate::error::{EngineError, Result};

/// Turns what a user wrote into an absolute URL: local paths become `file://` URLs (relative to
/// the working directory, symlinks resolved where the path exists, directories with a trailing
/// slash); `file://` and `s3://` URLs are kept. Other schemes are refused.
pub fn resolve_location(location: &str) -> Result<Url> {
    resolve(location, true)
}

/// [`resolve_location`] without resolving symlinks: the location as the user wrote it, for
/// messages that must not reveal where a link points.
fn written_location(location: &str) -> Url {
    resolve(location, false)
        .unwrap_or_else(|_| Url::parse("file:///").expect("file:/// is a valid URL"))
}

fn resolve(location: &str, canonical: bool) -> Result<Url> {
    let invalid = |reason: String| EngineError::InvalidLocation {
        location: location.to_string(),
        reason,
    };
    if location.trim().is_empty() {
        return Err(invalid("empty location".to_string()));
    }
    if !location.contains("://") {
        return file_url(Path::new(location), canonical).map_err(invalid);
    }
    let url = Url::parse(location).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|_| invalid("not a local file path".to_string()))?;
            file_url(&path, canonical).map_err(invalid)
        }
        "s3" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid(
                    "an s3:// URL needs a bucket: s3://bucket/prefix/".into(),
                ));
            }
            // User names in store URLs name tables' own S3 clients (object_stores.rs).
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(
                    "an s3:// URL takes no user name or password; give credentials with \
                     CREATE SECRET or the table's aws.* options"
                        .into(),
                ));
            }
            Ok(url)
        }
        other => Err(invalid(format!(
            "scheme '{other}' is not supported; use a local path, file:// or s3://"
        ))),
    }
}

fn file_url(path: &Path, canonical: bool) -> std::result::Result<Url, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?
            .join(path)
    };
    let resolved = canonical
        .then(|| std::fs::canonicalize(&absolute).ok())
        .flatten()
        .unwrap_or_else(|| normalize(&absolute));
    let url = if resolved.is_dir() {
        Url::from_directory_path(&resolved)
    } else {
        Url::from_file_path(&resolved)
    };
    url.map_err(|_| format!("cannot express {} as a URL", resolved.display()))
}

/// Removes `.` and `..` without touching the file system (for paths that do not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The URL of the object store that serves `url`: `file:///` or `s3://bucket`.
pub fn store_url(url: &Url) -> Url {
    let base = match url.scheme() {
        "file" => "file:///".to_string(),
        scheme => format!("{scheme}://{}", url.host_str().unwrap_or_default()),
    };
    Url::parse(&base).expect("scheme and host of a valid URL form a valid URL")
}

/// The object path of `url` inside its store (percent-decoded, no leading slash).
pub fn object_path(url: &Url) -> Result<object_store::path::Path> {
    object_store::path::Path::from_url_path(url.path()).map_err(|e| EngineError::InvalidLocation {
        location: url.to_string(),
        reason: e.to_string(),
    })
}

/// What a caller does at a location: the store's own folders differ for the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The store's own folders. SQL may read none of them except `features/` (through the
/// `features_*` tables) and write none of them.
const STORE_INTERNALS: &[(&str, Access)] = &[
    ("catalog", Access::Read),
    ("indexes", Access::Read),
    ("features", Access::Write),
];

/// The roots under which the engine may read and write; everything else is refused.
///
/// Locations are compared segment by segment, as the object store will open them: a segment
/// that is, or decodes to, `.` or `..`, or holds a `/` or `\\`, is refused, and a local path is checked
/// again after resolving its symlinks (or those of its nearest existing ancestor, for a file
/// about to be written).
#[derive(Debug, Clone, Default)]
pub struct AllowedRoots {
    roots: Vec<Url>,
    /// The store's own folders and the first access refused there (`Read` refuses both).
    internals: Vec<(Url, Access)>,
}

impl AllowedRoots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root (a directory or a bucket prefix; the whole subtree is allowed).
    pub fn add(&mut self, location: &str) -> Result<()> {
        let url = directory(resolve_location(location)?);
        // Roots are compared with object paths, which have no empty segments: refuse
        // `s3://bucket//` rather than read it as the whole bucket.
        object_path(&url)?;
        if !self.roots.contains(&url) {
            self.roots.push(url);
        }
        Ok(())
    }

    /// Adds the store at `store` as a root whose own folders (catalog, indexes, features)
    /// are out of reach of [`AllowedRoots::check_sql`] and of guarded stores.
    pub fn add_store(&mut self, store: &Url) -> Result<()> {
        self.add(store.as_str())?;
        let store = directory(store.clone());
        for (folder, access) in STORE_INTERNALS {
            let url =
                store
                    .join(&format!("{folder}/"))
                    .map_err(|e| EngineError::InvalidLocation {
                        location: store.to_string(),
                        reason: e.to_string(),
                    })?;
            self.internals.push((url, *access));
        }
        Ok(())
    }

    pub fn roots(&self) -> &[Url] {
        &self.roots
    }

    /// Whether `url` lies under a root, segment by segment.
    pub fn is_allowed(&self, url: &Url) -> bool {
        // A user name would pick a table's own S3 client (object_stores.rs).
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let Some(segments) = url_segments(url) else {
            return false;
        };
        self.roots.iter().any(|root| contains(root, url, &segments))
    }

    /// Refuses `url` unless it lies under one of the roots.
    pub fn check(&self, url: &Url) -> Result<()> {
        if self.is_allowed(url) {
            return Ok(());
        }
        Err(self.not_allowed(url))
    }

    fn not_allowed(&self, url: &Url) -> EngineError {
        let allowed = if self.roots.is_empty() {
            "none configured".to_string()
        } else {
            self.roots
                .iter()
                .map(Url::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        EngineError::LocationNotAllowed {
            location: url.to_string(),
            allowed,
        }
    }

    /// Resolves what a user wrote and checks it. A refusal names the location as written.
    pub fn check_location(&self, location: &str) -> Result<Url> {
        let url = resolve_location(location)?;
        if self.is_allowed(&url) {
            return Ok(url);
        }
        Err(self.not_allowed(&written_location(location)))
    }

    /// Checks a location named in SQL (a table's LOCATION, a COPY target): under a root, not
    /// inside the store's own folders, and, for a table, not a folder that holds them.
    pub fn check_sql(&self, location: &str, access: Access) -> Result<Url> {
        let url = self.check_location(location)?;
        // The object path the store will open, segment by segment (`%2E%2E` in a local path
        // is `..` to the store), for a clear error at planning rather than a failed write.
        self.check_object(&store_url(&url), &object_path(&url)?, access, true)?;
        let segments = url_segments(&url).unwrap_or_default();
        for (internal, _) in &self.internals {
            let inside = contains(internal, &url, &segments);
            let holds = access == Access::Read
                && url_segments(internal).is_some_and(|inner| {
                    inner.len() > segments.len() && contains(&url, internal, &inner)
                });
            if inside || holds {
                return Err(EngineError::StoreInternals {
                    location: written_location(location).to_string(),
                });
            }
        }
        self.check_resolved(&url, access)
            .map_err(|_| self.not_allowed(&written_location(location)))?;
        Ok(url)
    }

    /// Checks the object `path` of the store at `base` (`file:///` or `s3://bucket`) before
    /// a store opens it; `internal` lets the engine's own handle reach the store's folders.
    pub fn check_object(
        &self,
        base: &Url,
        path: &object_store::path::Path,
        access: Access,
        internal: bool,
    ) -> Result<Url> {
        let mut url = base.clone();
        let mut parts = Vec::new();
        for part in path.parts() {
            let raw = part.as_ref();
            let decoded = percent_decode_str(raw).decode_utf8_lossy();
            if unsafe_segment(&decoded) {
                return Err(EngineError::InvalidLocation {
                    location: format!("{base}{path}"),
                    reason: format!(
                        "the path segment '{raw}' is not allowed ('.', '..', '/' or '\\')"
                    ),
                });
            }
            // Stores open the part as it is (`%6D` is three characters, not `m`); refusing what
            // it decodes to as well keeps a store that decodes from stepping out.
            parts.push(raw.to_string());
        }
        url.path_segments_mut()
            .map_err(|()| EngineError::InvalidLocation {
                location: base.to_string(),
                reason: "not a hierarchical URL".to_string(),
            })?
            .clear()
            .extend(&parts);
        self.check(&url)?;
        let resolved = self.check_resolved(&url, access)?;
        if !internal {
            for (folder, refused) in &self.internals {
                let blocked = access == *refused || *refused == Access::Read;
                let inside = |u: &Url| url_segments(u).is_some_and(|s| contains(folder, u, &s));
                if blocked && (inside(&url) || resolved.as_ref().is_some_and(inside)) {
                    return Err(EngineError::StoreInternals {
                        location: url.to_string(),
                    });
                }
            }
        }
        Ok(url)
    }

    /// For a local path: resolves symlinks (of the nearest existing ancestor, for a path not
    /// yet there), checks the result too and returns it. The error names `url`, never the
    /// link's target.
    fn check_resolved(&self, url: &Url, access: Access) -> Result<Option<Url>> {
        if url.scheme() != "file" {
            return Ok(None);
        }
        let Ok(path) = url.to_file_path() else {
            return Err(self.not_allowed(url));
        };
        let resolved = match access {
            Access::Read => std::fs::canonicalize(&path).ok(),
            Access::Write => None,
        }
        .or_else(|| resolve_ancestor(&path));
        let Some(resolved) = resolved else {
            return Err(self.not_allowed(url));
        };
        match Url::from_file_path(&resolved) {
            Ok(real) if self.is_allowed(&real) => Ok(Some(real)),
            _ => Err(self.not_allowed(url)),
        }
    }
}

/// `url` with a trailing slash: a folder.
fn directory(mut url: Url) -> Url {
    if !url.path().ends_with('/') {
        let dir = format!("{}/", url.path());
        url.set_path(&dir);
    }
    url
}

/// Whether `url` (with `segments`, its decoded path) lies in the folder `root`.
fn contains(root: &Url, url: &Url, segments: &[String]) -> bool {
    root.scheme() == url.scheme()
        && root.host_str() == url.host_str()
        && root.port() == url.port()
        && url_segments(root).is_some_and(|r| segments.starts_with(&r))
}

/// The decoded, non-empty segments of `url`'s path; `None` when one is unsafe.
fn url_segments(url: &Url) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for raw in url.path().split('/').filter(|s| !s.is_empty()) {
        let decoded = percent_decode_str(raw).decode_utf8().ok()?;
        if unsafe_segment(&decoded) {
            return None;
        }
        out.push(decoded.into_owned());
    }
    Some(out)
}

/// A segment that would step out of its folder once a file system or a URL parser reads it.
fn unsafe_segment(segment: &str) -> bool {
    segment.is_empty()
        || segment == "."
        || segment == ".."
        || segment.contains('/')
        || segment.contains('\\')
}

/// The canonical form of `path`'s nearest existing ancestor, with the missing rest appended.
fn resolve_ancestor(path: &Path) -> Option<PathBuf> {
    let mut missing = Vec::new();
    let mut current = path;
    loop {
        if let Ok(real) = std::fs::canonicalize(current) {
            return Some(missing.iter().rev().fold(real, |p, name| p.join(name)));
        }
        missing.push(current.file_name()?);
        current = current.parent()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_absolute_file_urls() {
        let url = resolve_location("/no/such/dir/../file.mp3").unwrap();
        assert_eq!(url.as_str(), "file:///no/such/file.mp3");
        let tmp = std::env::temp_dir();
        let url = resolve_location(tmp.to_str().unwrap()).unwrap();
        assert!(url.as_str().ends_with('/'), "{url}");
    }

    #[test]
    fn schemes_are_checked() {
        assert_eq!(
            resolve_location("s3://bucket/a/b/").unwrap().as_str(),
            "s3://bucket/a/b/"
        );
        let err = resolve_location("http://example.com/x").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid location 'http://example.com/x': scheme 'http' is not supported; \
             use a local path, file:// or s3://"
        );
        assert!(resolve_location("s3:///nobucket").is_err());
        let err = resolve_location("s3://0123abcd@bucket/a/").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid location 's3://0123abcd@bucket/a/': an s3:// URL takes no user name or \
             password; give credentials with CREATE SECRET or the table's aws.* options"
        );
        assert!(resolve_location("s3://key:secret@bucket/").is_err());
    }

    #[test]
    fn roots_allow_their_subtree_only() {
        let mut roots = AllowedRoots::new();
        roots.add("/music/lib").unwrap();
        roots.add("s3://bucket/masters").unwrap();
        let ok = |s: &str| roots.is_allowed(&Url::parse(s).unwrap());
        assert!(ok("file:///music/lib/a.mp3"));
        assert!(ok("file:///music/lib"));
        assert!(ok("file:///music/lib/sub/b.flac"));
        assert!(!ok("file:///music/library/a.mp3"));
        assert!(!ok("file:///etc/passwd"));
        assert!(ok("s3://bucket/masters/x.wav"));
        assert!(!ok("s3://0123abcd@bucket/masters/x.wav"));
        assert!(!ok("s3://bucket/other/x.wav"));
        assert!(!ok("s3://other/masters/x.wav"));
        let err = roots
            .check_location("/music/lib/../../etc/passwd")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "location 'file:///etc/passwd' is outside the allowed locations \
             (file:///music/lib/, s3://bucket/masters/); allow it with --allow or \
             AudioLake::builder().allow_location(...)"
        );
    }
    #[test]
    fn roots_with_an_empty_segment_are_refused() {
        let mut roots = AllowedRoots::new();
        for root in ["s3://bucket//", "s3://bucket/a//b/"] {
            let err = roots.add(root).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid location '{root}")) && err.contains("empty"),
                "{root}: {err}"
            );
        }
        assert!(roots.roots().is_empty());
        roots.add("s3://bucket/").unwrap();
        roots.add("s3://bucket").unwrap();
        assert_eq!(roots.roots().len(), 1);
    }

    /// What a file system would open for `decoded` (an absolute path): `.` and `..` applied.
    fn opened(decoded: &str) -> String {
        let mut out: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        format!("/{}", out.join("/"))
    }

    const CRAFTED: &[&str] = &[
        "music",
        "lib",
        "..",
        ".",
        "%2E%2E",
        "%2e.",
        "%2E",
        "a%2Fb",
        "%2F",
        "a%5Cb",
        "a\\b",
        "",
        "etc",
        "%252E%252E",
    ];

    /// Every path of up to four crafted segments after `prefix`.
    fn crafted_paths(prefix: &str) -> Vec<String> {
        let mut paths = vec![prefix.to_string()];
        for _ in 0..4 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| CRAFTED.iter().map(move |s| format!("{p}/{s}")))
                .collect();
            paths.extend(longer);
        }
        paths
    }

    #[test]
    fn whatever_is_allowed_lies_under_a_root_segment_by_segment() {
        let mut roots = AllowedRoots::new();
        roots.add("/music/lib").unwrap();
        let mut allowed = 0;
        for path in crafted_paths("/music/lib") {
            let Ok(url) = Url::parse(&format!("file://{path}")) else {
                continue;
            };
            if !roots.is_allowed(&url) {
                continue;
            }
            allowed += 1;
            let decoded = percent_decode_str(url.path()).decode_utf8().unwrap();
            let opened = opened(&decoded.replace('\\', "/"));
            assert!(
                opened == "/music/lib" || opened.starts_with("/music/lib/"),
                "{path} was allowed but opens {opened}"
            );
        }
        assert!(allowed > 100, "only {allowed} crafted paths were allowed");
    }

    #[test]
    fn object_paths_are_checked_as_the_store_opens_them() {
        let mut roots = AllowedRoots::new();
        roots.add("/music/lib").unwrap();
        let base = Url::parse("file:///").unwrap();
        let mut allowed = 0;
        for path in crafted_paths("music/lib") {
            let Ok(object) = object_store::path::Path::parse(&path) else {
                continue;
            };
            if roots
                .check_object(&base, &object, Access::Read, false)
                .is_err()
            {
                continue;
            }
            allowed += 1;
            // The more dangerous reading: a store that opens each part percent-decoded.
            let decoded: Vec<String> = object
                .parts()
                .map(|p| {
                    percent_decode_str(p.as_ref())
                        .decode_utf8_lossy()
                        .into_owned()
                })
                .collect();
            let opened = opened(&format!("/{}", decoded.join("/").replace('\\', "/")));
            assert!(
                opened.starts_with("/music/lib"),
                "{path} was allowed but opens {opened}"
            );
        }
        assert!(allowed > 10, "only {allowed} crafted paths were allowed");
        let escape = object_store::path::Path::parse("music/lib/%2E%2E/%2E%2E/etc/passwd").unwrap();
        let err = roots
            .check_object(&base, &escape, Access::Read, false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid location 'file:///music/lib/%2E%2E/%2E%2E/etc/passwd': the path segment \
             '%2E%2E' is not allowed ('.', '..', '/' or '\\')"
        );
    }

    #[test]
    fn store_folders_are_out_of_reach_of_sql() {
        let mut roots = AllowedRoots::new();
        let store = Url::parse("s3://lake/data/").unwrap();
        roots.add_store(&store).unwrap();
        let err = roots
            .check_sql("s3://lake/data/catalog/", Access::Read)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "location 's3://lake/data/catalog/' is inside the store's own files (catalog/, \
             indexes/, features/), which SQL cannot read or write; read results through the \
             features_* tables and write exports to another allowed location"
        );
        assert!(roots.check_sql("s3://lake/data/", Access::Read).is_err());
        assert!(roots
            .check_sql("s3://lake/data/features/x.parquet", Access::Write)
            .is_err());
        assert!(roots
            .check_sql("s3://lake/data/exports/x.parquet", Access::Write)
            .is_ok());
        let object = |p: &str| object_store::path::Path::parse(p).unwrap();
        let base = Url::parse("s3://lake").unwrap();
        let features = object("data/features/rhythm/v1/part.parquet");
        assert!(roots
            .check_object(&base, &features, Access::Read, false)
            .is_ok());
        assert!(roots
            .check_object(&base, &features, Access::Write, false)
            .is_err());
        assert!(roots
            .check_object(&base, &features, Access::Write, true)
            .is_ok());
        let record = object("data/catalog/tables/music.json");
        assert!(roots
            .check_object(&base, &record, Access::Read, false)
            .is_err());
        assert!(roots
            .check_object(&base, &record, Access::Read, true)
            .is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_a_root_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let (root, outside) = (dir.join("root"), dir.join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("file.txt")).unwrap();
        let mut roots = AllowedRoots::new();
        roots.add(root.to_str().unwrap()).unwrap();
        let base = Url::parse("file:///").unwrap();
        let object = |p: &Path| object_store::path::Path::parse(p.to_str().unwrap()).unwrap();

        for (path, access) in [
            (root.join("file.txt"), Access::Read),
            (root.join("link/secret.txt"), Access::Read),
            (root.join("link/new/out.csv"), Access::Write),
        ] {
            let err = roots
                .check_object(&base, &object(&path), access, false)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("location 'file://{}'", path.display())),
                "{err}"
            );
            assert!(!err.contains("outside/"), "{err}");
        }
        let written = format!("{}/link/out.csv", root.display());
        let err = roots
            .check_sql(&written, Access::Write)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("location 'file://{written}'")),
            "{err}"
        );
        let table = format!("{}/link/", root.display());
        let err = roots
            .check_sql(&table, Access::Read)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("location 'file://{table}'")),
            "{err}"
        );
        assert!(roots
            .check_object(
                &base,
                &object(&root.join("new/ok.csv")),
                Access::Write,
                false
            )
            .is_ok());
    }
}
