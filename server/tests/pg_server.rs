//! `audiolake serve` with psql, the PostgreSQL command-line client: authentication, TLS,
//! meta-commands, errors, read-only users, limits, persistence and metrics. Each test skips
//! with a message when psql is not installed (`.ci/run` installs it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audiolake_testkit::moto::free_port;
use audiolake_testkit::paths::music;
use audiolake_testkit::pgserver::{self, have, stderr, stdout, PgServer, ALICE, BOB};

/// The binary under test.
const AUDIOLAKE: &str = env!("CARGO_BIN_EXE_audiolake");

fn serve_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(AUDIOLAKE)
        .args(["serve", "--store"])
        .arg(dir.path().join("store"))
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the server started with {args:?}");
    stderr(&output)
}

#[test]
fn refuses_to_start_without_authentication_or_with_bad_tls() {
    let err = serve_fails(&["--listen", "127.0.0.1:0"]);
    assert!(
        err.contains("refusing to start without authentication"),
        "{err}"
    );
    let err = serve_fails(&["--dev-no-auth", "--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("--dev-no-auth listens on loopback only"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let users = pgserver::write_users(AUDIOLAKE, dir.path());
    let users = users.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let err = serve_fails(&[
        "--users",
        users,
        "--tls-cert",
        missing,
        "--tls-key",
        missing,
    ]);
    assert!(err.contains("cannot read the TLS certificate"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let err = serve_fails(&[
        "--users",
        users,
        "--tls-cert",
        garbage,
        "--tls-key",
        garbage,
    ]);
    assert!(err.contains("holds no certificate"), "{err}");
    let err = serve_fails(&["--users", users, "--tls-cert", garbage]);
    assert!(err.contains("--tls-key"), "{err}");
}

#[test]
fn passwords_are_checked_with_scram() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let ok = server.psql(ALICE, &["-c", "SELECT count(*) FROM music"]);
    assert_eq!(stdout(&ok).trim(), "5", "{}", stderr(&ok));
    for user in [(ALICE.0, "wrong"), ("mallory", "guess")] {
        let refused = server.psql(user, &["-c", "SELECT 1"]);
        assert!(!refused.status.success());
        let err = stderr(&refused);
        assert!(
            err.contains(&format!(
                "FATAL:  password authentication failed for user \"{}\"",
                user.0
            )),
            "{err}"
        );
    }
    // The file holds verifiers, not anything a client could answer with.
    let users = std::fs::read_to_string(&server.users).unwrap();
    let alice = users.lines().find(|l| l.starts_with("alice:")).unwrap();
    let (_, keys) = alice.rsplit_once('$').unwrap();
    assert_eq!(keys.split(':').count(), 2, "StoredKey:ServerKey in {alice}");
}

#[test]
fn a_users_file_with_salted_passwords_is_refused_until_converted() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    // As older versions wrote it: the salted password of "secret" (salt 16 x 0x01).
    std::fs::write(
        &users,
        "ana:read-write:SCRAM-SHA-256$4096:AQEBAQEBAQEBAQEBAQEBAQ==$\
         SfJm5Wy58MxhkzmN8IoyXofaZbb+VHesG2Mb+6UAqVM=\n",
    )
    .unwrap();
    let err = serve_fails(&["--users", users.to_str().unwrap()]);
    assert!(
        err.contains("line 1 of the users file")
            && err.contains("holds a salted password")
            && err.contains("audiolake user add NAME --users"),
        "{err}"
    );
}

/// psql 16, which has `\\bind` (Debian bookworm's psql is 15): the one PyPI's `pgserver`
/// bundles, which `.ci/run` installs.
fn psql16() -> Option<String> {
    let found = Command::new("python3")
        .args([
            "-c",
            "import os, pgserver; print(os.path.join(os.path.dirname(pgserver.__file__), 'pginstall', 'bin', 'psql'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if found.is_none() {
        eprintln!("skipped: psql 16 (python3 -m pip install pgserver) is not installed (.ci/run installs it)");
    }
    found
}

#[test]
fn psql16_bind_uses_the_extended_protocol() {
    let Some(psql) = psql16() else {
        return;
    };
    let server = PgServer::start(AUDIOLAKE, &[]);
    let script = "SELECT file_name FROM music WHERE sample_rate = $1 ORDER BY file_name \\bind 44100 \\g\n\
                  SELECT file_name FROM music ORDER BY file_name LIMIT $1 OFFSET $2 \\bind 1 2 \\g\n\
                  SELECT $1::int + 1 AS n, $2 AS n \\bind 41 text \\g\n\
                  SELECT * FROM no_such_table WHERE x = $1 \\bind 1 \\g\n\
                  SELECT count(*) FROM music \\bind \\g\n";
    let out = server.psql_script_with(&psql, ALICE, script, &[]);
    assert_eq!(
        stdout(&out),
        "a_minor_120.mp3\nd_minor_140.ogg\nc_major_90.flac\n42|text\n5\n",
        "{}",
        stderr(&out)
    );
    let errors = stderr(&out);
    assert_eq!(errors.matches("ERROR:").count(), 1, "{errors}");
    assert!(errors.contains("no_such_table"), "{errors}");
}

#[test]
fn psql_meta_commands_and_copy() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let tables = server.psql(ALICE, &["-c", "\\dt"]);
    assert!(
        stdout(&tables).contains("public|music|table|"),
        "{}{}",
        stdout(&tables),
        stderr(&tables)
    );
    let columns = server.psql(ALICE, &["-c", "\\d music"]);
    let columns = stdout(&columns);
    for line in [
        "path|text|",
        "size_bytes|bigint|",
        "sample_rate|integer|",
        "duration_s|double precision|",
        "mfcc|real[]|",
    ] {
        assert!(columns.contains(line), "no {line} in {columns}");
    }
    let databases = server.psql(ALICE, &["-c", "\\l"]);
    assert!(
        stdout(&databases).contains("audiolake|"),
        "{}{}",
        stdout(&databases),
        stderr(&databases)
    );
    let functions = server.psql(ALICE, &["-c", "\\df"]);
    assert!(functions.status.success(), "{}", stderr(&functions));
    let repeated = server.psql_script(
        ALICE,
        "\\pset tuples_only off\nSELECT 1 AS a, 2 AS a, current_database();\n",
        &[],
    );
    assert_eq!(
        stdout(&repeated),
        "a|a|current_database\n1|2|audiolake\n(1 row)\n",
        "{}",
        stderr(&repeated)
    );
    let schemas = server.psql(ALICE, &["-c", "\\dn"]);
    assert!(stdout(&schemas).contains("public|"), "{}", stdout(&schemas));

    let csv = server.dir.path().join("out.csv");
    let script = format!(
        "\\x on\n\
         SELECT file_name, sample_rate FROM music WHERE file_name = 'c_major_90.flac';\n\
         \\x off\n\
         \\copy (SELECT file_name, sample_rate FROM music WHERE file_name IN ('c_major_90.flac', 'g_major_100.m4a') ORDER BY file_name) TO '{}' csv header\n",
        csv.display()
    );
    let out = server.psql_script(ALICE, &script, &[]);
    let text = stdout(&out);
    assert!(
        text.contains("file_name|c_major_90.flac\nsample_rate|48000"),
        "expanded output: {text}{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "file_name,sample_rate\nc_major_90.flac,48000\ng_major_100.m4a,22050\n"
    );
}

#[test]
fn errors_carry_sqlstates_and_the_session_goes_on() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let script = "\\set VERBOSITY verbose\n\
                  SELECT * FROM no_such_table;\n\
                  SELECT no_such_column FROM music;\n\
                  SELEC 1;\n\
                  SELECT 1/0;\n\
                  SELECT no_such_function(1);\n\
                  BEGIN;\n\
                  SELECT 1/0;\n\
                  SELECT 'ignored';\n\
                  ROLLBACK;\n\
                  SELECT 'still here';\n";
    let out = server.psql_script(ALICE, script, &[]);
    let err = stderr(&out);
    for code in [
        "ERROR:  42P01:",
        "ERROR:  42703:",
        "ERROR:  42601:",
        "ERROR:  22012:",
        "ERROR:  42883:",
        "ERROR:  25P02:",
    ] {
        assert!(err.contains(code), "no {code} in {err}");
    }
    assert_eq!(stdout(&out).trim(), "BEGIN\nROLLBACK\nstill here");
}

#[test]
fn read_only_users_read_but_cannot_write() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let music = music();
    let target = server.dir.path().join("copy.parquet");
    let script = format!(
        "\\set VERBOSITY verbose\n\
         CREATE EXTERNAL TABLE more STORED AS AUDIO LOCATION '{}/';\n\
         CREATE TABLE t AS SELECT 1 AS x;\n\
         COPY (SELECT 1 AS x) TO '{}';\n\
         SET statement_timeout = 5000;\n\
         SET datafusion.execution.target_partitions = 1;\n\
         SET datafusion.execution.target_partitions = 100000;\n\
         SET datafusion.runtime.memory_limit = '1T';\n\
         SET audiolake.device = 'cpu';\n\
         SET audiolake.index_build_threads = 1;\n\
         REINDEX INDEX music_sound;\n\
         SELECT 1 AS x INTO made;\n\
         PREPARE make AS SELECT 1 AS x INTO made;\n\
         SELECT count(*) FROM music;\n\
         COPY (SELECT file_name FROM music ORDER BY file_name LIMIT 1) TO STDOUT;\n",
        music.display(),
        target.display()
    );
    let out = server.psql_script(BOB, &script, &[]);
    let err = stderr(&out);
    assert_eq!(
        err.matches("ERROR:  42501: permission denied: user bob is read-only")
            .count(),
        10,
        "{err}"
    );
    assert_eq!(err.matches("ERROR:").count(), 10, "{err}");
    for refused in [
        "target_partitions = 100000",
        "memory_limit = '1T'",
        "audiolake.device = 'cpu'",
        "audiolake.index_build_threads = 1",
        "VACUUM REINDEX music_sound",
        "SELECT 1 AS x INTO made",
    ] {
        assert!(err.contains(refused), "{refused} not refused: {err}");
    }
    assert_eq!(stdout(&out), "SET\nSET\n5\na_minor_120.mp3\n", "{err}");
    assert!(!target.exists());

    // The same through the extended protocol (psql 16's \bind).
    if let Some(psql) = psql16() {
        let script = "SELECT $1::int AS x INTO made \\bind 1 \\g\n\
                      SELECT count(*) FROM music \\bind \\g\n";
        let out = server.psql_script_with(&psql, BOB, script, &[]);
        let err = stderr(&out);
        assert_eq!(err.matches("ERROR:").count(), 1, "{err}");
        assert!(err.contains("user bob is read-only"), "{err}");
        assert_eq!(stdout(&out), "5\n", "{err}");
    }
    // Nor through a cursor.
    let script = "BEGIN;\nDECLARE r CURSOR FOR SELECT file_name FROM music ORDER BY file_name;\n\
                  FETCH 1 FROM r;\nCOMMIT;\n\
                  BEGIN;\nDECLARE w CURSOR FOR SELECT 1 AS x INTO made;\nFETCH 1 FROM w;\nROLLBACK;\n";
    let out = server.psql_script(BOB, script, &["-t", "-A"]);
    let err = stderr(&out);
    assert!(
        err.starts_with(
            "ERROR:  permission denied: user bob is read-only and cannot run: DECLARE w CURSOR"
        ),
        "{err}"
    );
    assert!(stdout(&out).contains("a_minor_120.mp3"), "{}", stdout(&out));
    // Nothing was made.
    let out = server.psql(ALICE, &["-c", "SELECT * FROM made"]);
    assert!(stderr(&out).contains("made"), "{}", stdout(&out));
    assert_eq!(stdout(&out), "");
}

/// SIGTERM does not wait for the statements running: their connections close, and the server
/// exits once buffered results are published.
#[test]
fn sigterm_stops_the_server_with_statements_running() {
    if !have("psql") {
        return;
    }
    let mut server = PgServer::start(AUDIOLAKE, &[]);
    let sleeping = Command::new("psql")
        .arg(server.conninfo(ALICE, "disable"))
        .args(["-X", "-c", "SELECT pg_sleep(600)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Time to connect and start sleeping; a client that had not connected would fail with
    // another message below.
    std::thread::sleep(Duration::from_secs(2));
    let status = server
        .terminate(Duration::from_secs(60))
        .expect("the server still runs a minute after SIGTERM");
    assert!(status.success(), "{status}");
    let client = sleeping.wait_with_output().unwrap();
    assert!(!client.status.success());
    assert!(
        stderr(&client).contains("server closed the connection unexpectedly"),
        "{}",
        stderr(&client)
    );
}

#[test]
fn tables_created_over_the_wire_survive_a_restart_and_locations_are_guarded() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let script = format!(
        "\\set VERBOSITY verbose\n\
         CREATE EXTERNAL TABLE songs STORED AS AUDIO LOCATION '{}/';\n\
         CREATE EXTERNAL TABLE secrets STORED AS CSV LOCATION '/etc/passwd';\n",
        music().display()
    );
    let out = server.psql_script(ALICE, &script, &["-q"]);
    assert_eq!(stdout(&out).trim(), "", "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "ERROR:  42501: location 'file:///etc/passwd' is outside the allowed locations"
        ),
        "{err}"
    );
    assert_eq!(err.matches("ERROR").count(), 1, "{err}");

    let users = server.users.clone();
    let dir = server.stop();
    let users_arg = users.to_str().unwrap().to_owned();
    let server = PgServer::start_in(AUDIOLAKE, dir, users, &["--users", &users_arg]);
    let out = server.psql(ALICE, &["-c", "SELECT count(*) FROM songs"]);
    assert_eq!(stdout(&out).trim(), "5", "{}", stderr(&out));
}

#[test]
fn cursors_transactions_and_copy_to_stdout() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let script = "BEGIN;\n\
                  DECLARE c CURSOR FOR SELECT file_name FROM music ORDER BY file_name;\n\
                  FETCH 2 FROM c;\n\
                  FETCH 2 FROM c;\n\
                  CLOSE c;\n\
                  COMMIT;\n\
                  COPY (SELECT file_name, sample_rate, title FROM music WHERE file_name LIKE '%.flac' OR file_name LIKE '%.ogg' ORDER BY 1) TO STDOUT WITH (FORMAT csv, HEADER);\n\
                  COPY (SELECT file_name, title FROM music WHERE file_name = 'broken.mp3') TO STDOUT;\n";
    let out = server.psql_script(ALICE, script, &["-q"]);
    assert_eq!(
        stdout(&out),
        "a_minor_120.mp3\nbroken.mp3\nc_major_90.flac\nd_minor_140.ogg\n\
         file_name,sample_rate,title\nc_major_90.flac,48000,\nd_minor_140.ogg,44100,\n\
         broken.mp3\t\\N\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn statement_timeout_and_memory_limit_stop_one_query_only() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &["--memory-limit", "32MiB"]);
    let script = "\\set VERBOSITY verbose\n\
                  SET statement_timeout = 300;\n\
                  SELECT count(*) FROM generate_series(1, 10000000000) t(v) WHERE v % 7 = 3;\n\
                  SET statement_timeout = 0;\n\
                  SELECT 'after timeout';\n\
                  SELECT count(DISTINCT v) FROM (SELECT array_agg(v) AS v FROM generate_series(1, 50000000) t(v) GROUP BY v % 3) q;\n\
                  SELECT 'after memory';\n";
    let started = Instant::now();
    let out = server.psql_script(ALICE, script, &["-q"]);
    let err = stderr(&out);
    assert!(
        err.contains("ERROR:  57014: canceling statement due to statement timeout"),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  53200:") && err.contains("Resources exhausted"),
        "{err}"
    );
    assert_eq!(stdout(&out), "after timeout\nafter memory\n", "{err}");
    assert!(started.elapsed() < Duration::from_secs(120));
}

/// psql kept open on a pipe, for tests that need a connection to stay.
struct OpenPsql {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl OpenPsql {
    fn connect(server: &PgServer) -> Self {
        let mut child = Command::new("psql")
            .arg(server.conninfo(ALICE, "disable"))
            .args(["-X", "-A", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    fn query(&mut self, sql: &str) -> Option<String> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").ok()?;
        stdin.flush().ok()?;
        self.lines.recv_timeout(Duration::from_secs(30)).ok()
    }

    fn close(mut self) -> String {
        drop(self.child.stdin.take());
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        self.child.wait().unwrap();
        err
    }
}

#[test]
fn a_silent_connection_gives_its_slot_back() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(
        AUDIOLAKE,
        &["--max-connections", "1", "--authentication-timeout", "1"],
    );
    // A client that connects and never logs in holds the only slot...
    let mut silent = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let refused = server.psql(ALICE, &["-c", "SELECT 1"]);
    assert!(
        stderr(&refused).contains("sorry, too many clients already"),
        "{}",
        stderr(&refused)
    );
    // ...until the authentication timeout closes it.
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 16];
    match silent.read(&mut buf) {
        // Closed, in order or by a reset.
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the server did not close it: {other:?}"),
    }
    let ok = server.psql(ALICE, &["-c", "SELECT 2"]);
    assert_eq!(stdout(&ok).trim(), "2", "{}", stderr(&ok));
    // A logged-in connection outlives the timeout.
    let mut open = OpenPsql::connect(&server);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        open.query("SELECT 'still here';").as_deref(),
        Some("still here")
    );
}

#[test]
fn max_connections_and_idle_timeout() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(
        AUDIOLAKE,
        &["--max-connections", "1", "--idle-timeout", "2"],
    );
    let mut first = OpenPsql::connect(&server);
    assert_eq!(first.query("SELECT 'first';").as_deref(), Some("first"));
    let second = server.psql(ALICE, &["-c", "SELECT 1"]);
    assert!(!second.status.success());
    assert!(
        stderr(&second).contains("sorry, too many clients already (the server allows 1"),
        "{}",
        stderr(&second)
    );
    // Idle past the timeout: the server closes the first connection, freeing the slot.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(first.query("SELECT 'late';"), None);
    let err = first.close();
    assert!(
        err.contains("server closed the connection unexpectedly"),
        "{err}"
    );
    let third = server.psql(ALICE, &["-c", "SELECT 3"]);
    assert_eq!(stdout(&third).trim(), "3", "{}", stderr(&third));
}

#[test]
fn tls_with_passwords_and_no_plaintext() {
    if !have("psql") || !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = pgserver::self_signed_cert(dir.path());
    let server = PgServer::start(
        AUDIOLAKE,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let secure = Command::new("psql")
        .arg(format!(
            "{} channel_binding=require",
            server.conninfo(ALICE, "require")
        ))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT count(*) FROM music",
            "-c",
            "\\conninfo",
        ])
        .output()
        .unwrap();
    let text = stdout(&secure);
    assert!(text.starts_with("5\n"), "{text}{}", stderr(&secure));
    assert!(text.contains("SSL connection (protocol: TLSv1.3"), "{text}");
    // Channel binding (SCRAM-SHA-256-PLUS) still checks the password.
    let wrong = Command::new("psql")
        .arg(format!(
            "{} channel_binding=require",
            server.conninfo((ALICE.0, "wrong"), "require")
        ))
        .args(["-X", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(
        stderr(&wrong).contains("password authentication failed for user \"alice\""),
        "{}",
        stderr(&wrong)
    );
    let plain = server.psql(ALICE, &["-c", "SELECT 1"]);
    assert!(!plain.status.success());
    assert!(
        stderr(&plain).contains("accepts TLS connections only"),
        "{}",
        stderr(&plain)
    );
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

#[test]
fn prometheus_metrics() {
    if !have("psql") {
        return;
    }
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = PgServer::start(AUDIOLAKE, &["--metrics-listen", &listen]);
    let ok = server.psql(ALICE, &["-c", "SELECT count(*) FROM music"]);
    assert_eq!(stdout(&ok).trim(), "5");
    let failed = server.psql(ALICE, &["-c", "SELECT * FROM nowhere"]);
    assert!(!failed.status.success());
    let text = http_get(port, "/metrics");
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert_eq!(metric(&text, "audiolake_connections_total "), 2.0);
    assert_eq!(
        metric(&text, "audiolake_queries_total{outcome=\"ok\"} "),
        1.0
    );
    assert_eq!(
        metric(&text, "audiolake_queries_total{outcome=\"error\"} "),
        1.0
    );
    assert_eq!(
        metric(&text, "audiolake_query_duration_seconds_count "),
        2.0
    );
    assert_eq!(metric(&text, "audiolake_files_analysed_total "), 0.0);
    assert!(text.contains("audiolake_store_hits_total "), "{text}");
    // `SELECT * FROM nowhere` read no file; the progress of scans and jobs is there anyway.
    assert_eq!(metric(&text, "audiolake_scan_files_done_total "), 0.0);
    assert_eq!(metric(&text, "audiolake_scan_files_announced_total "), 0.0);
    assert!(http_get(port, "/other").contains("404"));
}

/// Plans are shared by the connections and reused (psql 16's `\bind` sends the same statement
/// text each time, through the extended protocol), never once what they read has changed: a
/// table made again, a view replaced, a setting, the connected database; rows added are read,
/// `now()` moves on.
#[test]
fn cached_plans_follow_tables_settings_and_time() {
    let Some(psql) = psql16() else {
        return;
    };
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = PgServer::start(AUDIOLAKE, &["--metrics-listen", &listen]);
    let count = "SELECT count(*) FROM t WHERE x > $1 \\bind 0 \\g\n";
    let row = "SELECT * FROM t WHERE x = $1 \\bind 10 \\g\n";
    let upper = "SELECT count(*) FROM T WHERE x > $1 \\bind 0 \\g\n";
    let clock = "SELECT CAST(extract(epoch FROM now()) * 1000000 AS BIGINT) + $1 \\bind 0 \\g\n";
    let script = [
        "CREATE TABLE t AS SELECT 10 AS x;\n",
        count,
        count,
        row,
        "INSERT INTO t VALUES (20);\n",
        count,
        "DROP TABLE t;\n",
        "CREATE TABLE t AS SELECT 10 AS x, 'ten' AS name UNION ALL SELECT 30, 'thirty' UNION ALL SELECT 40, 'forty';\n",
        count,
        row,
        upper,
        "SET datafusion.sql_parser.enable_ident_normalization = false;\n",
        upper,
        "SET datafusion.sql_parser.enable_ident_normalization = true;\n",
        upper,
        clock,
        "SELECT pg_sleep(0.01);\n",
        clock,
        "SELECT current_database() \\bind \\g\n",
        "\\c other\n",
        "SELECT current_database() \\bind \\g\n",
        "CREATE VIEW w AS SELECT x FROM t;\n",
        "SELECT count(*) FROM w WHERE x > $1 \\bind 0 \\g\n",
        "CREATE OR REPLACE VIEW w AS SELECT x FROM t WHERE x > 20;\n",
        "SELECT count(*) FROM w WHERE x > $1 \\bind 0 \\g\n",
        // In one message: psql sends statements joined by `\;` as one simple query.
        "SELECT count(*) FROM w \\; CREATE OR REPLACE VIEW w AS SELECT x FROM t WHERE x > 35 \\; SELECT count(*) FROM w;\n",
    ]
    .concat();
    let out = server.psql_script_with(&psql, ALICE, &script, &["-q"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let errors = stderr(&out);
    assert_eq!(
        lines[..8],
        ["1", "1", "10", "2", "3", "10|ten", "3", "3"][..],
        "{lines:?} {errors}"
    );
    // With identifiers kept as written, `T` is not `t`.
    assert_eq!(errors.matches("ERROR:").count(), 1, "{errors}");
    assert!(errors.contains("T"), "{errors}");
    let times: Vec<i64> = lines[8..10].iter().map(|l| l.parse().unwrap()).collect();
    assert!(times[1] > times[0], "now() was frozen: {lines:?}");
    // A view replaced is read anew (plans hold a copy of its query).
    assert_eq!(
        lines[10..],
        ["audiolake", "other", "3", "2", "2", "1"],
        "{lines:?}"
    );
    let text = http_get(port, "/metrics");
    assert!(
        metric(&text, "audiolake_plan_cache_hits_total ") >= 2.0,
        "{text}"
    );
    assert!(
        metric(&text, "audiolake_plan_cache_misses_total ") >= 1.0,
        "{text}"
    );
}

#[test]
fn vector_search_through_psql() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let script = "\\set VERBOSITY verbose\n\
         CREATE TABLE pts AS SELECT * FROM (VALUES (1, [1.0, 0.0]), (2, [0.0, 1.0]), (3, [1.0, 1.0])) AS t(id, v);\n\
         CREATE INDEX pts_v ON pts USING hnsw (v vector_l2_ops) WITH (m = 4, ef_construction = 8);\n\
         SET hnsw.ef_search = 10;\n\
         SHOW hnsw.ef_search;\n\
         EXPLAIN SELECT id FROM pts ORDER BY v <-> '[1,0]' LIMIT 1;\n\
         SELECT id FROM pts ORDER BY v <-> '[0.9,0.2]' LIMIT 2;\n\
         SELECT id FROM pts WHERE id <> 1 ORDER BY v <-> '[0.9,0.2]' LIMIT 1;\n\
         SELECT id FROM pts ORDER BY v <+> '[0,1]' LIMIT 1;\n\
         SELECT count(*) FROM similar('pts', '[1,0]', 10000000000);\n\
         SELECT name, rows FROM audiolake_indexes;\n\
         REINDEX INDEX pts_v;\n\
         REINDEX INDEX nope;\n\
         SELECT similarity('Georgy Porgy', 'Georgy Porgy (remix)') = 0.625, 'Georgy Porgy' % 'Georgy Porgy (remix)';\n\
         CREATE INDEX bad ON pts USING hnsw (v) WITH (m = 300);\n\
         SET audiolake.device = 'tpu';\n\
         DROP INDEX pts_v;\n\
         SELECT count(*) FROM audiolake_indexes;\n";
    let out = server.psql_script(ALICE, script, &["-q"]);
    let err = stderr(&out);
    let (plan, rows) = stdout(&out)
        .strip_prefix("10\n")
        .and_then(|out| out.split_once("\n1\n3\n"))
        .map(|(p, r)| (p.to_string(), format!("1\n3\n{r}")))
        .unwrap_or_else(|| panic!("{}\n{err}", stdout(&out)));
    assert!(plan.contains("HnswIndexScan: index=pts_v"), "{plan}");
    // A crafted k answers with every row, and the server goes on.
    assert_eq!(rows, "1\n3\n3\n2\n3\npts_v|3\nt|t\n0\n", "{err}");
    assert!(
        err.contains("invalid index parameter: m must be between 2 and 100, not 300"),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  22023: invalid setting: audiolake.device: unknown device \"tpu\""),
        "{err}"
    );
    assert!(err.contains("index \"nope\" does not exist"), "{err}");
    assert_eq!(err.matches("ERROR").count(), 3, "{err}");
}
