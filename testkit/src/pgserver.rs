//! Starts `audiolake serve` for a test, on a free port, over the music fixtures in
//! `tests/music` (table `music`, 5 files), with a users file holding `alice` (read-write) and
//! `bob` (read-only); runs psql against it. Used by the server and client tests, which pass the
//! binary they were built with (`env!("CARGO_BIN_EXE_audiolake")`, known to them only).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const ALICE: (&str, &str) = ("alice", "wonder-land-1");
pub const BOB: (&str, &str) = ("bob", "read-only-2");

/// Whether `program` can be run; tests that need it print why they skip.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: {program} is not installed (.ci/run installs it)");
    }
    found
}

/// A running `audiolake serve`; killed when dropped.
pub struct PgServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub users: PathBuf,
    pub store: PathBuf,
}

/// Writes the users file with alice and bob into `dir`, with the `audiolake` binary `bin`.
pub fn write_users(bin: &str, dir: &Path) -> PathBuf {
    let users = dir.join("users");
    for ((name, password), read_only) in [(ALICE, false), (BOB, true)] {
        let mut args = vec!["user", "add", name, "--users", users.to_str().unwrap()];
        if read_only {
            args.push("--read-only");
        }
        let mut child = Command::new(bin)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        assert!(child.wait().unwrap().success(), "user add {name} failed");
    }
    users
}

/// The port `audiolake serve` says it listens on, in the first line of its standard output
/// (piped).
pub fn listening_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace()
        .find_map(|w| w.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
}

impl PgServer {
    /// The `audiolake` binary `bin` serving, with passwords (the users file) and `extra`
    /// arguments.
    pub fn start(bin: &str, extra: &[&str]) -> PgServer {
        let dir = tempfile::tempdir().unwrap();
        let users = write_users(bin, dir.path());
        let users_arg = users.to_str().unwrap().to_owned();
        let mut args = vec!["--users", users_arg.as_str()];
        args.extend_from_slice(extra);
        Self::start_in(bin, dir, users, &args)
    }

    /// Starts `bin` in `dir` (store `dir/store`), with `args` after the common ones.
    pub fn start_in(bin: &str, dir: tempfile::TempDir, users: PathBuf, args: &[&str]) -> PgServer {
        let store = dir.path().join("store");
        let music = crate::paths::music();
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--store"])
            .arg(&store)
            .arg("--music")
            .arg(&music)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let port = listening_port(&mut child);
        PgServer {
            child,
            port,
            dir,
            users,
            store,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A libpq connection string for `user`.
    pub fn conninfo(&self, (user, password): (&str, &str), sslmode: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=audiolake sslmode={sslmode} connect_timeout=10",
            self.port
        )
    }

    /// Runs psql as `user` with `args` (e.g. `-c`, `-f`), without TLS, unaligned output.
    pub fn psql(&self, user: (&str, &str), args: &[&str]) -> Output {
        Command::new("psql")
            .arg(self.conninfo(user, "disable"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
            .args(args)
            .output()
            .unwrap()
    }

    /// psql on `script` given on standard input, as psql runs files.
    pub fn psql_script(&self, user: (&str, &str), script: &str, extra: &[&str]) -> Output {
        self.psql_script_with("psql", user, script, extra)
    }

    /// [`Self::psql_script`] with the psql binary at `program`.
    pub fn psql_script_with(
        &self,
        program: &str,
        user: (&str, &str),
        script: &str,
        extra: &[&str],
    ) -> Output {
        let mut child = Command::new(program)
            .arg(self.conninfo(user, "disable"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate(Duration::from_secs(10));
        let _ = self.child.kill();
        let _ = self.child.wait();

        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Sends SIGTERM and waits up to `within` for the server to exit; its exit status, or
    /// `None` if it is still running.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate and key for `localhost` in `dir` (openssl must be installed).
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "openssl req failed: {}",
        stderr(&made)
    );
    (cert, key)
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
