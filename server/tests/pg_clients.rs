//! Real PostgreSQL clients against `audiolake serve`: psycopg 3, psycopg2, SQLAlchemy with pandas,
//! pgJDBC, node-postgres and pgbench. Each test starts a server over tests/music, runs one script of
//! server/tests/clients with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE),
//! and fails with the script's output when the script fails. A test whose client is not installed
//! prints why and passes: `.ci/clients.sh` installs them all.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audiolake_testkit::paths::{music, workspace};
use audiolake_testkit::pgserver::{self, have, PgServer, ALICE, BOB};

/// The binary under test.
const AUDIOLAKE: &str = env!("CARGO_BIN_EXE_audiolake");

/// How long one client script may run before it is killed and the test fails.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

fn clients_dir() -> PathBuf {
    workspace().join("server/tests/clients")
}

/// Whether `python3` can import every module of `modules`.
fn have_python(modules: &[&str]) -> bool {
    if !have("python3") {
        return false;
    }
    let ok = Command::new("python3")
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "skipped: python3 cannot import {} (.ci/clients.sh installs them)",
            modules.join(", ")
        );
    }
    ok
}

/// The libpq environment for `user` on `server`, plus what the scripts compare with.
fn client_env(cmd: &mut Command, server: &PgServer, (user, password): (&str, &str), sslmode: &str) {
    for var in [
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGPASSFILE",
        "PGOPTIONS",
        "PGSSLROOTCERT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGHOST", "127.0.0.1")
        .env("PGPORT", server.port.to_string())
        .env("PGUSER", user)
        .env("PGPASSWORD", password)
        .env("PGDATABASE", "audiolake")
        .env("PGSSLMODE", sslmode)
        .env("PGCONNECT_TIMEOUT", "10")
        .env("AUDIOLAKE_MUSIC", music())
        .env("AUDIOLAKE_RO_USER", BOB.0)
        .env("AUDIOLAKE_RO_PASSWORD", BOB.1)
        .current_dir(clients_dir());
}

/// Runs `cmd` to the end (killing it after SCRIPT_TIMEOUT) and returns (success, stdout, stderr).
fn run(mut cmd: Command) -> (bool, String, String) {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, mut stderr) = (out.join().unwrap(), err.join().unwrap());
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {SCRIPT_TIMEOUT:?})"));
    }
    (status.is_some_and(|s| s.success()), stdout, stderr)
}

/// Runs `cmd` and fails the test with its output unless it succeeds.
fn run_ok(name: &str, cmd: Command) -> String {
    let (ok, stdout, stderr) = run(cmd);
    assert!(
        ok,
        "{name} failed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    println!("{stdout}");
    if !stderr.trim().is_empty() {
        println!("--- {name} stderr ---\n{stderr}");
    }
    stdout
}

fn python_client(server: &PgServer, script: &str, sslmode: &str) -> String {
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join(script));
    client_env(&mut cmd, server, ALICE, sslmode);
    run_ok(script, cmd)
}

#[test]
fn psycopg3() {
    if !have_python(&["psycopg"]) {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    python_client(&server, "psycopg3_client.py", "disable");
}

/// A server with TLS on a self-signed certificate (kept in the returned directory).
fn tls_server() -> (PgServer, tempfile::TempDir) {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = pgserver::self_signed_cert(certs.path());
    let server = PgServer::start(
        AUDIOLAKE,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    (server, certs)
}

/// psycopg 3 again, over TLS (sslmode=require) to a server with a self-signed certificate,
/// logging in with SCRAM-SHA-256-PLUS (libpq's channel_binding=require).
#[test]
fn psycopg3_tls() {
    if !have_python(&["psycopg"]) || !have("openssl") {
        return;
    }
    let (server, _certs) = tls_server();
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("psycopg3_client.py"));
    client_env(&mut cmd, &server, ALICE, "require");
    cmd.env("PGCHANNELBINDING", "require");
    let out = run_ok("psycopg3_client.py", cmd);
    assert!(out.contains("ssl=True"), "not over TLS:\n{out}");
}

#[test]
fn psycopg2() {
    if !have_python(&["psycopg2"]) {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    python_client(&server, "psycopg2_client.py", "disable");
}

#[test]
fn sqlalchemy_pandas() {
    if !have_python(&["psycopg2", "psycopg", "sqlalchemy", "pandas"]) {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    python_client(&server, "sqlalchemy_client.py", "disable");
}

#[test]
fn jdbc() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    if !have("java") || !have("javac") {
        return;
    }
    if !jar.exists() {
        eprintln!(
            "skipped: {} is missing (apt-get install libpostgresql-jdbc-java; .ci/clients.sh does)",
            jar.display()
        );
        return;
    }
    let classes = tempfile::tempdir().unwrap();
    let mut javac = Command::new("javac");
    javac
        .arg("-d")
        .arg(classes.path())
        .arg(clients_dir().join("JdbcClient.java"));
    run_ok("javac JdbcClient.java", javac);
    // Over TLS, where the server offers SCRAM-SHA-256-PLUS too: this pgJDBC (42.5) does not
    // bind channels and must still log in with SCRAM-SHA-256.
    let (server, _certs) = tls_server();
    let mut java = Command::new("java");
    java.arg("-cp")
        .arg(format!("{}:{}", classes.path().display(), jar.display()))
        .arg("JdbcClient");
    client_env(&mut java, &server, ALICE, "require");
    run_ok("JdbcClient", java);
}

#[test]
fn node_postgres() {
    if !have("node") {
        return;
    }
    if !clients_dir().join("node_modules/pg/package.json").exists() {
        eprintln!("skipped: node's pg is not installed in server/tests/clients (.ci/clients.sh installs it)");
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let mut node = Command::new("node");
    node.arg(clients_dir().join("node_client.js"));
    client_env(&mut node, &server, ALICE, "disable");
    run_ok("node_client.js", node);
}

/// pgbench's custom script, 4 clients × 20 transactions, in each of its three query modes.
#[test]
fn pgbench() {
    if !have("pgbench") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    for mode in ["simple", "extended", "prepared"] {
        let mut cmd = Command::new("pgbench");
        cmd.args(["-n", "-c", "4", "-j", "2", "-t", "20", "-M", mode, "-f"])
            .arg(clients_dir().join("pgbench_script.sql"))
            .arg("audiolake");
        client_env(&mut cmd, &server, ALICE, "disable");
        let out = run_ok(&format!("pgbench -M {mode}"), cmd);
        assert!(
            out.contains("number of transactions actually processed: 80/80"),
            "pgbench -M {mode} did not run all 80 transactions:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0 "),
            "pgbench -M {mode} had failed transactions:\n{out}"
        );
    }
}
