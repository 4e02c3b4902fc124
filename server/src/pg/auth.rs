//! Users and passwords: a file of salted SCRAM-SHA-256 hashes, one user per line, written by
//! `audiolake user add` and checked by pgwire's SCRAM handler.
//!
//! A line is `NAME:ROLE:SCRAM-SHA-256$ITERATIONS:SALT$SALTED_PASSWORD` (base64), where ROLE is
//! `read-write` or `read-only`. The salted password is what SCRAM needs to verify a client
//! proof; it is not the password, but whoever holds it can log in, so the file is written with
//! mode 0600 and must be kept like a key.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, SCRAM_ITERATIONS};
use datafusion_postgres::pgwire::api::auth::{AuthSource, LoginInfo, Password};
use datafusion_postgres::pgwire::error::PgWireResult;

const SCHEME: &str = "SCRAM-SHA-256";

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything the server allows: queries, DDL, `COPY ... TO` a location.
    ReadWrite,
    /// Queries, `SET`, cursors and `COPY (query) TO STDOUT`; no DDL, no writes.
    ReadOnly,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::ReadWrite => "read-write",
            Role::ReadOnly => "read-only",
        }
    }
}

#[derive(Clone)]
struct Entry {
    role: Role,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The users as last read, with the file's modification time then.
type Loaded = (Option<SystemTime>, Arc<HashMap<String, Entry>>);

/// The users file, re-read when it changes so that `audiolake user add` needs no restart.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl Users {
    /// Loads the file; it must exist and hold at least one user.
    pub fn open(path: &Path) -> Result<Self> {
        let entries = read_file(path)?;
        if entries.is_empty() {
            bail!(
                "the users file {} has no users; add one with `audiolake user add NAME --users {}`",
                path.display(),
                path.display()
            );
        }
        Ok(Self {
            path: path.to_owned(),
            loaded: RwLock::new((modified(path), Arc::new(entries))),
        })
    }

    fn entries(&self) -> Arc<HashMap<String, Entry>> {
        let now = modified(&self.path);
        {
            let loaded = self.loaded.read();
            if loaded.0 == now {
                return Arc::clone(&loaded.1);
            }
        }
        match read_file(&self.path) {
            Ok(entries) => {
                let entries = Arc::new(entries);
                *self.loaded.write() = (now, Arc::clone(&entries));
                entries
            }
            Err(e) => {
                // Keep serving with the users known so far rather than locking everyone out.
                log::warn!("{e:#}; keeping the users loaded before");
                Arc::clone(&self.loaded.read().1)
            }
        }
    }

    /// The role of `user`, or `None` for an unknown user.
    pub fn role(&self, user: &str) -> Option<Role> {
        self.entries().get(user).map(|e| e.role)
    }
}

#[async_trait]
impl AuthSource for Users {
    // The trait declares `&LoginInfo` with its lifetime elided; naming it breaks the match.
    #[allow(elided_lifetimes_in_paths)]
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        Ok(match self.entries().get(user) {
            Some(entry) => Password::new(Some(entry.salt.clone()), entry.salted_password.clone()),
            // An unknown user fails like a wrong password, so names cannot be probed.
            None => Password::new(
                Some(rand::random::<[u8; 16]>().to_vec()),
                rand::random::<[u8; 32]>().to_vec(),
            ),
        })
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_file(path: &Path) -> Result<HashMap<String, Entry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the users file {}", path.display()))?;
    let mut entries = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, entry) = parse_line(line).with_context(|| {
            format!(
                "line {} of the users file {} is not valid",
                number + 1,
                path.display()
            )
        })?;
        entries.insert(name, entry);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Result<(String, Entry)> {
    let mut fields = line.splitn(3, ':');
    let (Some(name), Some(role), Some(secret)) = (fields.next(), fields.next(), fields.next())
    else {
        bail!("expected NAME:ROLE:{SCHEME}$ITERATIONS:SALT$HASH");
    };
    let role = match role {
        "read-write" => Role::ReadWrite,
        "read-only" => Role::ReadOnly,
        other => bail!("unknown role '{other}' (read-write or read-only)"),
    };
    let rest = secret
        .strip_prefix(SCHEME)
        .and_then(|s| s.strip_prefix('$'))
        .with_context(|| format!("the password is not a {SCHEME} hash"))?;
    let (iterations, salts) = rest.split_once(':').context("missing iteration count")?;
    if iterations.parse::<usize>().ok() != Some(SCRAM_ITERATIONS) {
        bail!("{iterations} iterations; this server uses {SCRAM_ITERATIONS}");
    }
    let (salt, hash) = salts.split_once('$').context("missing salt or hash")?;
    Ok((
        name.to_owned(),
        Entry {
            role,
            salt: BASE64.decode(salt).context("salt is not base64")?,
            salted_password: BASE64.decode(hash).context("hash is not base64")?,
        },
    ))
}

/// Adds `name` to the users file at `path` (creating it with mode 0600), or replaces its
/// password and role.
pub fn add_user(path: &Path, name: &str, password: &str, role: Role) -> Result<()> {
    if name.is_empty() || name.contains([':', '\n']) || name.trim() != name {
        bail!("a user name must be non-empty, without ':', line breaks or surrounding spaces");
    }
    if password.is_empty() {
        bail!("the password is empty");
    }
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let salt: [u8; 16] = rand::random();
    let hash = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
    let line = format!(
        "{name}:{}:{SCHEME}${SCRAM_ITERATIONS}:{}${}",
        role.as_str(),
        BASE64.encode(salt),
        BASE64.encode(hash)
    );
    let mut text = String::new();
    for old in existing.lines() {
        if old.split(':').next() != Some(name) {
            text.push_str(old);
            text.push('\n');
        }
    }
    text.push_str(&line);
    text.push('\n');

    // Write beside the file and rename, so a reader never sees half a file.
    let temp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_replace_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        add_user(&path, "ana", "secret", Role::ReadWrite).unwrap();
        add_user(&path, "bo", "other", Role::ReadOnly).unwrap();
        add_user(&path, "ana", "changed", Role::ReadOnly).unwrap();
        let users = Users::open(&path).unwrap();
        assert_eq!(users.role("ana"), Some(Role::ReadOnly));
        assert_eq!(users.role("bo"), Some(Role::ReadOnly));
        assert_eq!(users.role("cy"), None);
        let entries = users.entries();
        let ana = &entries["ana"];
        assert_eq!(
            ana.salted_password,
            gen_salted_password("changed", &ana.salt, SCRAM_ITERATIONS)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            !text.contains("changed"),
            "the password itself is not stored"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# comment\nana:admin:SCRAM-SHA-256$4096:AA==$AA==\n").unwrap();
        let err = format!("{:#}", Users::open(&path).unwrap_err());
        assert!(
            err.contains("line 2 of the users file") && err.contains("unknown role 'admin'"),
            "{err}"
        );
        std::fs::write(&path, "# nobody yet\n").unwrap();
        let err = format!("{:#}", Users::open(&path).unwrap_err());
        assert!(err.contains("has no users"), "{err}");
    }
}
