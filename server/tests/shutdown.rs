//! Stopping `audiolake serve` with SIGTERM. On a store in a real S3 API server (moto): results
//! analysed but not yet published are published before the server exits, and a second signal
//! while publishing stalls (moto paused) exits at once. An index build under way stops with
//! the process and the previous build stays the index's. Without psql or moto_server a test
//! prints why and passes.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use audiolake_testkit::moto::Moto;
use audiolake_testkit::pgserver::{have, listening_port, stderr};
use datafusion::object_store::ObjectStore;
use futures::TryStreamExt;

const BUCKET: &str = "audiolake-shutdown";

/// `audiolake serve --dev-no-auth` with `args`; killed when dropped.
struct Serving {
    child: Child,
    port: u16,
}

impl Serving {
    /// On `s3://BUCKET/<store>` over the folder `music`.
    fn on_moto(moto: &Moto, store: &str, music: &Path) -> Self {
        let store = format!("s3://{BUCKET}/{store}");
        let music = music.to_str().unwrap();
        Self::start(&["--store", &store, "--music", music], &moto.env())
    }

    fn start(args: &[&str], env: &[(&str, String)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_audiolake"))
            .args(["serve", "--dev-no-auth", "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().cloned())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let port = listening_port(&mut child);
        Self { child, port }
    }

    /// Runs `statements` through psql, one message each.
    fn psql(&self, statements: &[&str]) -> std::process::Output {
        Self::psql_on(self.port, statements)
    }

    fn psql_on(port: u16, statements: &[&str]) -> std::process::Output {
        let mut psql = Command::new("psql");
        psql.arg(format!(
            "host=127.0.0.1 port={port} user=audiolake dbname=audiolake sslmode=disable"
        ))
        .args(["-X", "-A", "-t", "-q"]);
        for statement in statements {
            psql.args(["-c", statement]);
        }
        psql.output().unwrap()
    }

    fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// The exit status within `within`, or `None` while it still runs.
    fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// Four short tones and an hour of clicks (8 kHz mono, 58 MB): a query given two seconds
/// finishes the short ones, whose results stay buffered, and is stopped while it analyses
/// the long one (about ten seconds here, a few in a release build).
fn music(dir: &Path) {
    for i in 0..4 {
        audiolake_testkit_audio::tone::write_wav(
            &dir.join(format!("short_{i}.wav")),
            2,
            330.0 + 40.0 * f64::from(i),
        );
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut long = hound::WavWriter::create(dir.join("long.wav"), spec).unwrap();
    for i in 0..8000 * 3600 {
        long.write_sample(if i % 400 == 0 { 8000i16 } else { 0 })
            .unwrap();
    }
    long.finalize().unwrap();
}

/// Leaves results buffered in the server: a query that times out after the short files.
fn buffer_results(server: &Serving) {
    let out = server.psql(&[
        "SET statement_timeout = '2s'",
        "SELECT count(bpm), count(mfcc), count(key), count(loudness_lufs) FROM music",
    ]);
    assert!(
        stderr(&out).contains("canceling statement due to statement timeout"),
        "the query was meant to time out while analysing the long file: {}",
        stderr(&out)
    );
}

/// The feature parts published in `store`.
fn stored_parts(moto: &Moto, store: &str) -> usize {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let prefix = datafusion::object_store::path::Path::from(format!("{store}/features"));
        moto.client(BUCKET)
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    })
}

#[test]
fn sigterm_publishes_buffered_results_and_a_second_signal_exits_at_once() {
    if !have("psql") {
        return;
    }
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    music(dir.path());

    // Publishing stalls (the store does not answer): the server waits for it...
    let mut server = Serving::on_moto(&moto, "stalled", dir.path());
    buffer_results(&server);
    assert_eq!(
        stored_parts(&moto, "stalled"),
        0,
        "published before the signal"
    );
    signal(moto.pid(), "STOP");
    server.signal("TERM");
    let waited = server.exited(Duration::from_secs(3));
    // ...until a second signal.
    server.signal("TERM");
    let status = server.exited(Duration::from_secs(30));
    signal(moto.pid(), "CONT");
    assert_eq!(
        waited, None,
        "the server did not wait for its buffered results"
    );
    let status = status.expect("the second signal did not stop the server");
    assert_eq!(status.code(), Some(1));
    let err = server.stderr();
    assert!(
        err.contains("shutting down; publishing buffered analysis results")
            && err.contains("stopped at once; results not yet published are lost"),
        "{err}"
    );

    // With the store answering, one signal publishes them, then the server exits.
    let mut server = Serving::on_moto(&moto, "answering", dir.path());
    buffer_results(&server);
    server.signal("TERM");
    let status = server
        .exited(Duration::from_secs(60))
        .expect("the server still runs a minute after SIGTERM");
    assert!(status.success(), "{status}: {}", server.stderr());
    assert!(
        stored_parts(&moto, "answering") > 0,
        "nothing was published"
    );
}

/// `COPY` of rows `ids` with random 16-dimensional vectors to `file`.
fn random_vectors(ids: std::ops::RangeInclusive<u32>, file: &Path) -> String {
    let v = vec!["CAST(random() AS REAL)"; 16].join(", ");
    format!(
        "COPY (SELECT value AS id, make_array({v}) AS v FROM generate_series({}, {})) \
         TO '{}' STORED AS PARQUET",
        ids.start(),
        ids.end(),
        file.display()
    )
}

#[test]
fn sigterm_stops_an_index_build_and_the_previous_build_stays() {
    if !have("psql") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let data = root.join("vectors");
    std::fs::create_dir_all(&data).unwrap();
    let store = root.join("store");
    let args = [
        "--store",
        store.to_str().unwrap(),
        "--allow",
        data.to_str().unwrap(),
    ];
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success() && stderr(&out).is_empty(),
            "{}",
            stderr(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let built = "SELECT rows FROM audiolake_indexes WHERE name = 'vecs_v'";

    let mut server = Serving::start(&args, &[]);
    ok(server.psql(&[
        &random_vectors(1..=200, &data.join("part-0.parquet")),
        &format!(
            "CREATE EXTERNAL TABLE vecs STORED AS PARQUET LOCATION '{}/'",
            data.display()
        ),
        "CREATE INDEX vecs_v ON vecs USING hnsw (v) WITH (m = 100, ef_construction = 1000)",
        &random_vectors(201..=3000, &data.join("part-1.parquet")),
    ]));
    assert_eq!(ok(server.psql(&[built])), "200\n");

    // A slow rebuild on one thread, under way when the signal comes.
    let port = server.port;
    let rebuild = std::thread::spawn(move || {
        Serving::psql_on(
            port,
            &[
                "SET audiolake.index_build_threads = 1",
                "REINDEX INDEX vecs_v",
            ],
        )
    });
    let progress = "SELECT files_done FROM audiolake_progress \
                    WHERE job = 'build index vecs_v' AND NOT finished";
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(ok(server.psql(&[progress])).trim().parse::<u32>(), Ok(n) if n > 0) {
        assert!(Instant::now() < deadline, "the rebuild never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.signal("TERM");
    let status = server
        .exited(Duration::from_secs(60))
        .expect("the server still runs a minute after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!rebuild.join().unwrap().status.success());

    // Restarted, the index is the build from before, and answers.
    let server = Serving::start(&args, &[]);
    assert_eq!(ok(server.psql(&[built])), "200\n");
    let explain = ok(server.psql(&[
        "EXPLAIN SELECT id FROM vecs ORDER BY v <-> (SELECT v FROM vecs WHERE id = 2500) LIMIT 5",
    ]));
    assert!(explain.contains("HnswIndexScan: index=vecs_v"), "{explain}");
    let nearest = ok(server.psql(&[
        "SELECT id FROM vecs ORDER BY v <-> (SELECT v FROM vecs WHERE id = 2500) LIMIT 1",
    ]));
    assert_eq!(nearest, "2500\n");
}
