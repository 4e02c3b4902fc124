//! S3 credentials kept outside the store. Table definitions are recorded in the store, so
//! `OPTIONS ('aws.secret_access_key' ...)` is refused there; credentials come from the `AWS_*`
//! environment, the instance, or `CREATE SECRET`, which keeps them in a per-user file (mode
//! 0600) that the engine reads when it opens.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use datafusion::sql::sqlparser::ast::{Ident, SecretOption};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Table options that hold credentials and so never go into the store.
pub const CREDENTIAL_OPTIONS: &[&str] = &["aws.secret_access_key", "aws.session_token"];

/// `CREATE SECRET` keys and the table option each one stands for.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("key_id", "aws.access_key_id"),
    ("secret", "aws.secret_access_key"),
    ("session_token", "aws.session_token"),
    ("region", "aws.region"),
    ("endpoint", "aws.endpoint"),
    ("allow_http", "aws.allow_http"),
];

/// A secrets file larger than this is not one.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One named set of S3 settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Secret {
    pub name: String,
    /// The bucket it serves (`s3://bucket/`); `None`: every bucket without a secret of its own.
    pub scope: Option<String>,
    /// Table options (`aws.*`) it sets.
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SecretsFile {
    secrets: Vec<S3Secret>,
}

/// The secrets of this engine, and the file they are kept in.
#[derive(Debug, Default)]
pub struct Secrets {
    file: Option<PathBuf>,
    secrets: RwLock<Vec<S3Secret>>,
}

/// `$XDG_CONFIG_HOME/audiolake/secrets.json`, else `$HOME/.config/audiolake/secrets.json`.
pub fn default_file() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("audiolake").join("secrets.json"))
}

impl Secrets {
    /// Reads `file` if it exists (a missing file holds no secrets).
    pub fn open(file: Option<PathBuf>) -> Result<Self> {
        let mut secrets = Vec::new();
        if let Some(path) = &file {
            if let Some(read) = read_file(path)? {
                secrets = read.secrets;
            }
        }
        Ok(Self {
            file,
            secrets: RwLock::new(secrets),
        })
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The options of the secret for `bucket`: the one scoped to it, else the unscoped one.
    pub fn for_bucket(&self, bucket: &str) -> Vec<(String, String)> {
        let secrets = self.read();
        let scoped = secrets
            .iter()
            .find(|s| s.scope.as_deref().and_then(scope_bucket) == Some(bucket));
        scoped
            .or_else(|| secrets.iter().find(|s| s.scope.is_none()))
            .map(|s| s.options.clone().into_iter().collect())
            .unwrap_or_default()
    }

    /// Adds `secret` and rewrites the file.
    pub fn create(&self, secret: S3Secret, or_replace: bool, if_not_exists: bool) -> Result<()> {
        let mut secrets = self.write();
        if let Some(i) = secrets.iter().position(|s| s.name == secret.name) {
            if if_not_exists {
                return Ok(());
            }
            if !or_replace {
                return Err(EngineError::Secret(format!(
                    "secret \"{}\" already exists; use CREATE OR REPLACE SECRET",
                    secret.name
                )));
            }
            secrets.remove(i);
        }
        let mut next = secrets.clone();
        next.push(secret);
        self.save(&next)?;
        *secrets = next;
        Ok(())
    }

    /// Removes the secret `name`; `false` when there was none.
    pub fn drop_secret(&self, name: &str) -> Result<bool> {
        let mut secrets = self.write();
        let Some(i) = secrets.iter().position(|s| s.name == name) else {
            return Ok(false);
        };
        let mut next = secrets.clone();
        next.remove(i);
        self.save(&next)?;
        *secrets = next;
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<S3Secret>> {
        self.secrets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<S3Secret>> {
        self.secrets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, secrets: &[S3Secret]) -> Result<()> {
        let path = self.file.as_deref().ok_or_else(|| {
            EngineError::Secret(
                "no secrets file: set HOME, or pass --secrets FILE / \
                 AudioLake::builder().secrets_file(...)"
                    .to_string(),
            )
        })?;
        let failed = |e: std::io::Error| {
            EngineError::Secret(format!("cannot write {}: {e}", path.display()))
        };
        let json = serde_json::to_vec_pretty(&SecretsFile {
            secrets: secrets.to_vec(),
        })
        .map_err(|e| EngineError::Secret(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(failed)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".secrets")
            .tempfile_in(dir)
            .map_err(failed)?;
        tmp.write_all(&json).map_err(failed)?;
        tmp.as_file().sync_all().map_err(failed)?;
        tmp.persist(path).map_err(|e| failed(e.error))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed)?;
        Ok(())
    }
}

/// The bucket of a scope such as `s3://bucket/`.
fn scope_bucket(scope: &str) -> Option<&str> {
    scope
        .strip_prefix("s3://")
        .map(|rest| rest.split('/').next().unwrap_or_default())
}

fn read_file(path: &Path) -> Result<Option<SecretsFile>> {
    let bad = |reason: String| EngineError::Secret(format!("{}: {reason}", path.display()));
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(bad(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "readable by other users; run chmod 600 {}",
                path.display()
            )));
        }
    }
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| bad(format!("not a secrets file: {e}")))
}

/// Creates `dir` (and its parents) readable by its owner only, where it is created.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The secret of `CREATE SECRET name (TYPE s3, KEY_ID '...', SECRET '...', SCOPE '...')`.
pub fn parse_create(
    name: Option<&Ident>,
    secret_type: &Ident,
    options: &[SecretOption],
) -> Result<S3Secret> {
    let name = name
        .map(|n| n.value.clone())
        .ok_or_else(|| EngineError::Secret("CREATE SECRET needs a name".to_string()))?;
    if !secret_type.value.eq_ignore_ascii_case("s3") {
        return Err(EngineError::Secret(format!(
            "secret type '{}' is not supported; use TYPE s3",
            secret_type.value
        )));
    }
    let mut secret = S3Secret {
        name,
        scope: None,
        options: BTreeMap::new(),
    };
    for SecretOption { key, value } in options {
        let key = key.value.to_ascii_lowercase();
        let value = value.value.clone();
        if key == "scope" {
            match scope_bucket(&value) {
                Some(bucket) if !bucket.is_empty() => {
                    secret.scope = Some(format!("s3://{bucket}/"));
                }
                _ => {
                    return Err(EngineError::Secret(format!(
                        "SCOPE '{value}' is not a bucket; use SCOPE 's3://bucket/'"
                    )))
                }
            }
            continue;
        }
        let Some((_, option)) = SECRET_KEYS.iter().find(|(k, _)| *k == key) else {
            let valid: Vec<&str> = SECRET_KEYS.iter().map(|(k, _)| *k).collect();
            return Err(EngineError::Secret(format!(
                "unknown secret option '{key}'; valid options: {}, scope",
                valid.join(", ")
            )));
        };
        secret.options.insert(option.to_string(), value);
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_kept_private_and_found_by_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("conf/secrets.json");
        let secrets = Secrets::open(Some(file.clone())).unwrap();
        let option = |k: &str, v: &str| (k.to_string(), v.to_string());
        let scoped = S3Secret {
            name: "archive".into(),
            scope: Some("s3://archive/".into()),
            options: [option("aws.secret_access_key", "s1")].into(),
        };
        let global = S3Secret {
            name: "any".into(),
            scope: None,
            options: [option("aws.secret_access_key", "s2")].into(),
        };
        secrets.create(scoped, false, false).unwrap();
        secrets.create(global, false, false).unwrap();

        let reopened = Secrets::open(Some(file.clone())).unwrap();
        assert_eq!(
            reopened.for_bucket("archive"),
            vec![option("aws.secret_access_key", "s1")]
        );
        assert_eq!(
            reopened.for_bucket("other"),
            vec![option("aws.secret_access_key", "s2")]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Secrets::open(Some(file.clone())).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "secret: {}: readable by other users; run chmod 600 {}",
                    file.display(),
                    file.display()
                )
            );
        }
    }
}
