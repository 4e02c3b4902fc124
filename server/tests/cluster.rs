//! The cluster as a user runs it: `audiolake scheduler`, two `audiolake executor`s and
//! `audiolake sql|analyze --cluster`, each its own process, on a store in a real S3 API server
//! (moto); the answers against `audiolake sql` alone. Without `moto_server` on the PATH it
//! prints why and passes.
#![cfg(feature = "distributed")]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use audiolake_testkit::moto::{free_port, upload, Moto};
use audiolake_testkit::paths::music;

const BUCKET: &str = "audiolake-processes";
const TONES: usize = 6;

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `audiolake <command>` on the store `s3://BUCKET/<store>`, reaching moto through `AWS_*`.
fn audiolake(moto: &Moto, dir: &Path, command: &str, store: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audiolake"));
    cmd.arg(command)
        .args(["--store", &format!("s3://{BUCKET}/{store}")])
        .args(["--allow", &format!("s3://{BUCKET}/music/")])
        .arg("--secrets")
        .arg(dir.join("secrets.json"))
        .envs(moto.env())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn start(mut cmd: Command, dir: &Path, name: &str) -> Running {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log);
    Running(cmd.spawn().unwrap())
}

fn wait_for_port(port: u16, process: &mut Running, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = process.0.try_wait().unwrap() {
            panic!(
                "exited ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn success(out: Output) -> String {
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stderr, "", "a healthy run prints nothing on stderr");
    stdout
}

/// A scheduler and two executors (one task at a time each) on the store `lake`.
struct Cluster {
    port: u16,
    dir: std::path::PathBuf,
    _scheduler: Running,
    executors: Vec<Option<Running>>,
}

impl Cluster {
    fn start(moto: &Moto, dir: &Path) -> Self {
        let port = free_port();
        let mut cmd = audiolake(moto, dir, "scheduler", "lake");
        cmd.args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--executor-timeout", "10"]);
        let mut scheduler = start(cmd, dir, "scheduler");
        wait_for_port(port, &mut scheduler, &dir.join("scheduler.log"));
        // Ballista logs each task an executor receives at info.
        let executors = (0..2)
            .map(|i| {
                let mut cmd = audiolake(moto, dir, "executor", "lake");
                cmd.args(["--scheduler", &format!("127.0.0.1:{port}")])
                    .args(["--bind", &format!("127.0.0.1:{}", free_port())])
                    .args(["--concurrent-tasks", "1"])
                    .env("RUST_LOG", "ballista_executor::execution_loop=info");
                Some(start(cmd, dir, &format!("executor{i}")))
            })
            .collect();
        let cluster = Self {
            port,
            dir: dir.to_path_buf(),
            _scheduler: scheduler,
            executors,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(0..2).all(|i| cluster.executor_log(i).contains("Starting poll work loop")) {
            assert!(
                Instant::now() < deadline,
                "{}\n{}",
                cluster.executor_log(0),
                cluster.executor_log(1)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn executor_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("executor{i}.log"))).unwrap_or_default()
    }

    /// Tasks executor `i` has received so far.
    fn tasks(&self, i: usize) -> usize {
        self.executor_log(i).matches("Received task").count()
    }

    fn kill(&mut self, i: usize) {
        self.executors[i] = None;
    }
}

const CREATE: &str =
    "CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION 's3://audiolake-processes/music/'";
// Rounded: a sum in another order may differ in its last bits.
const QUERY: &str =
    "SELECT count(*) AS files, round(avg(bpm), 6) AS bpm, count(error) AS failed FROM music; \
                     SELECT file_name, bpm, error FROM music ORDER BY file_name";

/// Uploads `tones` tones of `seconds` each, then the two files of tests/music, under `music/`.
fn upload_music(moto: &Moto, dir: &Path, tones: usize, seconds: u32) {
    moto.create_bucket(BUCKET);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = moto.client(BUCKET);
        for i in 0..tones {
            let path = dir.join(format!("tone_{i}.wav"));
            audiolake_testkit_audio::tone::write_wav(&path, seconds, 330.0 + 40.0 * i as f64);
            upload(&client, &path, &format!("music/tone_{i}.wav")).await;
        }
        for name in ["a_minor_120.mp3", "broken.mp3"] {
            upload(&client, &music().join(name), &format!("music/{name}")).await;
        }
    });
}

/// `audiolake sql --format csv` on `store`, which must succeed quietly.
fn sql(moto: &Moto, dir: &Path, store: &str, extra: &[&str], statements: &str) -> String {
    let mut cmd = audiolake(moto, dir, "sql", store);
    cmd.args(extra).args(["--format", "csv", statements]);
    success(cmd.output().unwrap())
}

fn analyze_rhythm(moto: &Moto, dir: &Path, cluster: &str) -> Command {
    let mut cmd = audiolake(moto, dir, "analyze", "lake");
    cmd.args(["--cluster", cluster])
        .args(["--table", "music", "--groups", "rhythm"]);
    cmd
}

#[test]
fn scheduler_executors_and_client_as_processes() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    upload_music(&moto, dir, TONES, 5);

    // The answers of one process alone, on a store of its own.
    sql(&moto, dir, "alone", &[], CREATE);
    let expected = sql(&moto, dir, "alone", &[], QUERY);
    assert!(expected.starts_with("file_name,bpm,error\n"), "{expected}");
    assert_eq!(expected.lines().count(), TONES + 3, "{expected}");

    let cluster = Cluster::start(&moto, dir);
    let url = format!("df://127.0.0.1:{}", cluster.port);
    let on_cluster = ["--cluster", url.as_str()];
    sql(&moto, dir, "lake", &on_cluster, CREATE);
    assert_eq!(sql(&moto, dir, "lake", &on_cluster, QUERY), expected);
    for i in 0..2 {
        assert!(
            cluster.tasks(i) > 0,
            "executor {i} ran no task:\n{}",
            cluster.executor_log(i)
        );
    }

    // `analyze` on the cluster: everything is already stored.
    let report = success(analyze_rhythm(&moto, dir, &url).output().unwrap());
    assert!(
        report.starts_with(&format!(
            "music: {} files, 0 analysed, {} from the store, 1 unreadable",
            TONES + 2,
            TONES + 1
        )),
        "{report}"
    );
}

/// An executor killed in the middle of `analyze`: the job completes on the other one or fails
/// with a message; either way what was published stays, and a rerun analyses only the rest.
#[test]
fn an_executor_killed_during_analyze() {
    let Some(moto) = Moto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    const LONG_TONES: usize = 16;
    upload_music(&moto, dir, LONG_TONES, 20);
    let files = LONG_TONES + 2;

    let mut cluster = Cluster::start(&moto, dir);
    let url = format!("df://127.0.0.1:{}", cluster.port);
    sql(&moto, dir, "lake", &["--cluster", &url], CREATE);
    let first = analyze_rhythm(&moto, dir, &url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while cluster.tasks(0) == 0 {
        assert!(Instant::now() < deadline, "{}", cluster.executor_log(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill(0);
    let first = first.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    match first.status.success() {
        true => assert!(
            stdout.starts_with(&format!("music: {files} files")),
            "{stdout}"
        ),
        // Ballista's client warns of its retries before the error.
        false => assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error: cannot analyse table music: ")),
            "{stderr}"
        ),
    }

    // The rerun, on the executor left, decodes only what was not published. Until the
    // scheduler has dropped the killed executor (its timeout) a job may still be sent there and
    // fail the same way: then it is run again, a few times at most.
    let mut attempts = 0;
    let report = loop {
        attempts += 1;
        let out = analyze_rhythm(&moto, dir, &url).output().unwrap();
        if out.status.success() || attempts == 4 {
            break success(out);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error: cannot analyse table music: ")),
            "{stderr}"
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    let counts: Vec<usize> = report
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .take(4)
        .collect();
    let [total, analysed, stored, unreadable] = counts[..] else {
        panic!("{report}")
    };
    assert_eq!((total, unreadable), (files, 1), "{report}");
    assert_eq!(analysed + stored, files - 1, "{report}");
    // A job that finished published everything; one that failed kept what its finished tasks
    // published (nothing, when it failed before any task finished).
    if first.status.success() {
        assert_eq!(analysed, 0, "{report}\n{stdout}");
    }
    assert!(cluster.tasks(1) > 0, "{}", cluster.executor_log(1));
}
