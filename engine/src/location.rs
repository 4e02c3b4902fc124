//! Locations (local paths, `file://` and `s3://` URLs) and the roots the engine may touch.

use std::path::{Component, Path, PathBuf};

use url::Url;

use crate::error::{EngineError, Result};

/// Turns what a user wrote into an absolute URL: local paths become `file://` URLs (relative to
/// the working directory, symlinks resolved where the path exists, directories with a trailing
/// slash); `file://` and `s3://` URLs are kept. Other schemes are refused.
pub fn resolve_location(location: &str) -> Result<Url> {
    let invalid = |reason: String| EngineError::InvalidLocation {
        location: location.to_string(),
        reason,
    };
    if location.trim().is_empty() {
        return Err(invalid("empty location".to_string()));
    }
    if !location.contains("://") {
        return file_url(Path::new(location)).map_err(invalid);
    }
    let url = Url::parse(location).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|_| invalid("not a local file path".to_string()))?;
            file_url(&path).map_err(invalid)
        }
        "s3" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid(
                    "an s3:// URL needs a bucket: s3://bucket/prefix/".into(),
                ));
            }
            Ok(url)
        }
        other => Err(invalid(format!(
            "scheme '{other}' is not supported; use a local path, file:// or s3://"
        ))),
    }
}

fn file_url(path: &Path) -> std::result::Result<Url, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the working directory: {e}"))?
            .join(path)
    };
    let resolved = std::fs::canonicalize(&absolute).unwrap_or_else(|_| normalize(&absolute));
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

/// The roots under which the engine may read and write; everything else is refused.
#[derive(Debug, Clone, Default)]
pub struct AllowedRoots {
    roots: Vec<Url>,
}

impl AllowedRoots {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a root (a directory or a bucket prefix; the whole subtree is allowed).
    pub fn add(&mut self, location: &str) -> Result<()> {
        let mut url = resolve_location(location)?;
        if !url.path().ends_with('/') {
            let dir = format!("{}/", url.path());
            url.set_path(&dir);
        }
        if !self.roots.contains(&url) {
            self.roots.push(url);
        }
        Ok(())
    }

    pub fn roots(&self) -> &[Url] {
        &self.roots
    }

    pub fn is_allowed(&self, url: &Url) -> bool {
        self.roots.iter().any(|root| {
            root.scheme() == url.scheme()
                && root.host_str() == url.host_str()
                && (url.path().starts_with(root.path())
                    || url.path() == root.path().trim_end_matches('/'))
        })
    }

    /// Refuses `url` unless it lies under one of the roots.
    pub fn check(&self, url: &Url) -> Result<()> {
        if self.is_allowed(url) {
            return Ok(());
        }
        let allowed = if self.roots.is_empty() {
            "none configured".to_string()
        } else {
            self.roots
                .iter()
                .map(Url::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(EngineError::LocationNotAllowed {
            location: url.to_string(),
            allowed,
        })
    }

    /// Resolves what a user wrote and checks it.
    pub fn check_location(&self, location: &str) -> Result<Url> {
        let url = resolve_location(location)?;
        self.check(&url)?;
        Ok(url)
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
}
