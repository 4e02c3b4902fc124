//! Users and passwords: a file of SCRAM-SHA-256 verifiers, one user per line, written by
//! `audiolake user add` and checked by [`super::scram`].
//!
//! A line is `NAME:ROLE:SCRAM-SHA-256$ITERATIONS:SALT$STORED_KEY:SERVER_KEY` (base64, RFC 5802,
//! the format of PostgreSQL's `pg_authid`), where ROLE is `read-write` or `read-only`. The keys
//! verify a client's proof but cannot produce one, so the file does not let its reader log in;
//! it is still written with mode 0600, since it allows guessing passwords offline.
//!
//! Files of older versions held the salted password itself, from which one can log in. The
//! server refuses them; `audiolake user add` converts every line of such a file.
//!
//! Beside the users file, `USERS.mock-key` holds the secret from which unknown users' salts are
//! derived (made by the server on first use).

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use datafusion_postgres::pgwire::api::auth::sasl::scram::{gen_salted_password, SCRAM_ITERATIONS};
use ring::{digest, hmac};

const SCHEME: &str = "SCRAM-SHA-256";

/// Iteration counts accepted in the file: at least RFC 7677's minimum, and bounded so that a
/// crafted file cannot make clients hash for hours.
const ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=10_000_000;

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

/// What SCRAM needs to check a password without knowing it (RFC 5802).
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: [u8; 32],
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: [u8; 32],
}

impl Verifier {
    /// The verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        let salt: [u8; 16] = rand::random();
        let iterations = SCRAM_ITERATIONS as u32;
        let salted = gen_salted_password(password, &salt, iterations as usize);
        Self::from_salted_password(iterations, salt.to_vec(), &salted)
    }

    pub(super) fn from_salted_password(
        iterations: u32,
        salt: Vec<u8>,
        salted_password: &[u8],
    ) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, salted_password);
        let client_key = hmac::sign(&key, b"Client Key");
        let mut verifier = Self {
            iterations,
            salt,
            stored_key: [0; 32],
            server_key: [0; 32],
        };
        verifier
            .stored_key
            .copy_from_slice(digest::digest(&digest::SHA256, client_key.as_ref()).as_ref());
        verifier
            .server_key
            .copy_from_slice(hmac::sign(&key, b"Server Key").as_ref());
        verifier
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

#[derive(Clone)]
struct Entry {
    role: Role,
    verifier: Verifier,
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
    /// Key of the made-up salts of unknown users, read from the file beside the users file (see
    /// [`mock_key`]): a name's salt stays the same from one try, and one restart, to the next,
    /// as a real user's does, so it does not tell that the user is unknown.
    mock_key: hmac::Key,
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
            mock_key: hmac::Key::new(hmac::HMAC_SHA256, &mock_key(path)?),
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

    /// The verifier of `user`. An unknown user gets one that no proof matches, with a salt
    /// derived from the name, so that the exchange looks the same as for a known user.
    pub fn verifier(&self, user: &str) -> Verifier {
        if let Some(entry) = self.entries().get(user) {
            return entry.verifier.clone();
        }
        let salt = hmac::sign(&self.mock_key, user.as_bytes()).as_ref()[..16].to_vec();
        Verifier {
            iterations: SCRAM_ITERATIONS as u32,
            salt,
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

/// Bytes of the secret of unknown users' salts.
const MOCK_KEY_LEN: usize = 32;

/// The secret of unknown users' salts, kept in `USERS.mock-key` beside the users file `users`
/// (as PostgreSQL keeps its mock authentication nonce in the cluster) and made on first use.
/// It is written under another name and renamed, so a crash leaves no half-written key.
fn mock_key(users: &Path) -> Result<[u8; MOCK_KEY_LEN]> {
    let mut name = users.file_name().unwrap_or_default().to_owned();
    name.push(".mock-key");
    let path = users.with_file_name(&name);
    match std::fs::File::open(&path) {
        Ok(file) => {
            let size = file
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            // Never more than the key is read, whatever the file holds.
            let mut bytes = Vec::with_capacity(MOCK_KEY_LEN);
            file.take(MOCK_KEY_LEN as u64)
                .read_to_end(&mut bytes)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return <[u8; MOCK_KEY_LEN]>::try_from(bytes.as_slice())
                .ok()
                .filter(|_| size == MOCK_KEY_LEN as u64)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "the key file {} of unknown users' salts has {size} bytes, not \
                         {MOCK_KEY_LEN}; remove it to make a new key (unknown users' salts \
                         then change once)",
                        path.display(),
                    )
                });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let key: [u8; MOCK_KEY_LEN] = rand::random();
    name.push(format!(".{}.tmp", std::process::id()));
    let temp = users.with_file_name(name);
    write_private(&temp, &key)?;
    std::fs::rename(&temp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// Writes `bytes` to `path` (made with mode 0600 if missing), synced to disk.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
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
        let (name, entry, legacy) = parse_line(line).with_context(|| {
            format!(
                "line {} of the users file {} is not valid",
                number + 1,
                path.display()
            )
        })?;
        if legacy {
            bail!(
                "line {} of the users file {} holds a salted password (written by an older \
                 audiolake), with which anyone who reads the file can log in as {name}; convert \
                 the file to stored keys with `audiolake user add NAME --users {}` (adding or \
                 re-adding any one user rewrites every line)",
                number + 1,
                path.display(),
                path.display()
            );
        }
        entries.insert(name, entry);
    }
    Ok(entries)
}

/// A line's user name and entry, and whether the entry came from the older format (the salted
/// password), converted.
fn parse_line(line: &str) -> Result<(String, Entry, bool)> {
    let mut fields = line.splitn(3, ':');
    let (Some(name), Some(role), Some(secret)) = (fields.next(), fields.next(), fields.next())
    else {
        bail!("expected NAME:ROLE:{SCHEME}$ITERATIONS:SALT$STORED_KEY:SERVER_KEY");
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
    let iterations = iterations
        .parse::<u32>()
        .ok()
        .filter(|i| ITERATIONS.contains(i))
        .with_context(|| {
            format!(
                "the iteration count {iterations} is not between {} and {}",
                ITERATIONS.start(),
                ITERATIONS.end()
            )
        })?;
    let (salt, keys) = salts.split_once('$').context("missing salt or keys")?;
    let salt = BASE64.decode(salt).context("the salt is not base64")?;
    if salt.is_empty() || salt.len() > 64 {
        bail!("the salt has {} bytes (1 to 64 expected)", salt.len());
    }
    let key = |text: &str, what: &str| -> Result<[u8; 32]> {
        let bytes = BASE64
            .decode(text)
            .with_context(|| format!("the {what} is not base64"))?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| anyhow::anyhow!("the {what} has {} bytes, not 32", bytes.len()))
    };
    let (verifier, legacy) = match keys.split_once(':') {
        Some((stored, server)) => (
            Verifier {
                iterations,
                salt,
                stored_key: key(stored, "stored key")?,
                server_key: key(server, "server key")?,
            },
            false,
        ),
        None => {
            let salted = key(keys, "salted password")?;
            (
                Verifier::from_salted_password(iterations, salt, &salted),
                true,
            )
        }
    };
    Ok((name.to_owned(), Entry { role, verifier }, legacy))
}

/// Adds `name` to the users file at `path` (creating it with mode 0600), or replaces its
/// password and role; lines in the older format are rewritten as stored keys.
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
    let line = |name: &str, role: Role, verifier: &Verifier| {
        format!("{name}:{}:{verifier}\n", role.as_str())
    };
    let mut text = String::new();
    for (number, old) in existing.lines().enumerate() {
        let trimmed = old.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            text.push_str(old);
            text.push('\n');
            continue;
        }
        let (old_name, entry, _) = parse_line(trimmed).with_context(|| {
            format!(
                "line {} of the users file {} is not valid; fix or remove it first",
                number + 1,
                path.display()
            )
        })?;
        if old_name != name {
            text.push_str(&line(&old_name, entry.role, &entry.verifier));
        }
    }
    text.push_str(&line(name, role, &Verifier::new(password)));

    // Write beside the file and rename, so a reader never sees half a file.
    let temp = path.with_extension("tmp");
    write_private(&temp, text.as_bytes())?;
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
        let ana = users.verifier("ana");
        let salted = gen_salted_password("changed", &ana.salt, SCRAM_ITERATIONS);
        assert!(ana == Verifier::from_salted_password(4096, ana.salt.clone(), &salted));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(
            !text.contains("changed") && !text.contains(&BASE64.encode(&salted)),
            "neither the password nor the salted password is stored: {text}"
        );
        let ana_line = text.lines().find(|l| l.starts_with("ana:")).unwrap();
        assert_eq!(ana_line, format!("ana:read-only:{ana}"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn unknown_users_get_a_stable_salt_and_no_matching_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        add_user(&path, "ana", "secret", Role::ReadWrite).unwrap();
        let users = Users::open(&path).unwrap();
        let first = users.verifier("mallory");
        let again = users.verifier("mallory");
        let other = users.verifier("eve");
        assert_eq!(first.salt, again.salt);
        assert_ne!(first.salt, other.salt);
        assert_eq!(first.salt.len(), 16);
        assert_ne!(first.stored_key, again.stored_key);
    }

    #[test]
    fn unknown_users_keep_their_salt_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.txt");
        add_user(&path, "ana", "secret", Role::ReadWrite).unwrap();
        let first = Users::open(&path).unwrap().verifier("mallory").salt;
        let key_path = dir.path().join("users.txt.mock-key");
        let key = std::fs::read(&key_path).unwrap();
        assert_eq!(key.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["users.txt", "users.txt.mock-key"],
            "no temporary file is left"
        );

        // A restart reads the same key, so the same salt.
        let again = Users::open(&path).unwrap().verifier("mallory").salt;
        assert_eq!(first, again);
        assert_eq!(std::fs::read(&key_path).unwrap(), key);
        // The salt comes from the key: a new key gives another.
        std::fs::remove_file(&key_path).unwrap();
        let renewed = Users::open(&path).unwrap().verifier("mallory").salt;
        assert_ne!(first, renewed);
    }

    #[test]
    fn a_key_file_of_the_wrong_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        add_user(&path, "ana", "secret", Role::ReadWrite).unwrap();
        let key_path = dir.path().join("users.mock-key");
        std::fs::write(&key_path, [7u8; 31]).unwrap();
        let err = format!("{:#}", Users::open(&path).unwrap_err());
        assert_eq!(
            err,
            format!(
                "the key file {} of unknown users' salts has 31 bytes, not 32; remove it to \
                 make a new key (unknown users' salts then change once)",
                key_path.display()
            )
        );
        assert_eq!(
            std::fs::read(&key_path).unwrap(),
            [7u8; 31],
            "left as it was"
        );
        // A larger one is refused after reading no more than a key's bytes of it.
        std::fs::write(&key_path, [7u8; 4096]).unwrap();
        let err = format!("{:#}", Users::open(&path).unwrap_err());
        assert!(err.contains("has 4096 bytes, not 32"), "{err}");
    }

    #[test]
    fn files_with_salted_passwords_are_refused_then_converted_by_user_add() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let salt = [7u8; 16];
        let salted = gen_salted_password("old secret", &salt, SCRAM_ITERATIONS);
        let legacy = format!(
            "# kept\nana:read-write:SCRAM-SHA-256$4096:{}${}\n",
            BASE64.encode(salt),
            BASE64.encode(&salted)
        );
        std::fs::write(&path, &legacy).unwrap();
        let err = format!("{:#}", Users::open(&path).unwrap_err());
        assert!(
            err.contains("line 2 of the users file")
                && err.contains("holds a salted password")
                && err.contains("audiolake user add NAME --users"),
            "{err}"
        );
        add_user(&path, "bo", "new", Role::ReadOnly).unwrap();
        let users = Users::open(&path).unwrap();
        assert_eq!(users.role("ana"), Some(Role::ReadWrite), "ana is kept");
        let ana = users.verifier("ana");
        assert!(ana == Verifier::from_salted_password(4096, salt.to_vec(), &salted));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# kept\n"), "{text}");
        assert!(!text.contains(&BASE64.encode(&salted)), "{text}");
    }

    #[test]
    fn crafted_lines_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let key = BASE64.encode([1u8; 32]);
        for (secret, expected) in [
            (
                format!("SCRAM-SHA-256$4095:AA==${key}:{key}"),
                "iteration count 4095",
            ),
            (
                format!("SCRAM-SHA-256$99999999999:AA==${key}:{key}"),
                "iteration count",
            ),
            (
                format!("SCRAM-SHA-256$4096:${key}:{key}"),
                "the salt has 0 bytes",
            ),
            (
                format!("SCRAM-SHA-256$4096:AA==$AA==:{key}"),
                "stored key has 1 bytes",
            ),
            (
                format!("SCRAM-SHA-256$4096:AA==${key}:!"),
                "server key is not base64",
            ),
            ("md5abc".to_owned(), "not a SCRAM-SHA-256 hash"),
        ] {
            std::fs::write(&path, format!("ana:read-write:{secret}\n")).unwrap();
            let err = format!("{:#}", Users::open(&path).unwrap_err());
            assert!(err.contains(expected), "{secret}: {err}");
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
