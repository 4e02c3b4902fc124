//! The cluster as a user runs it: `audiolake scheduler`, two `audiolake executor`s and
//! `audiolake sql|analyze --cluster`, each its own process, on a store in a real S3 API server
//! (moto); the answers against `audiolake sql` alone. Without `moto_server` on the PATH it
//! prints why and passes.
#![cfg(feature = "distributed")]

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use audiolake_testkit::moto::{upload, Moto};
use audiolake_testkit::paths::music;

const BUCKET: &str = "audiolake-processes";
const TONES: usize = 6;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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

const CREATE: &str =
    "CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION 's3://audiolake-processes/music/'";
// Rounded: a sum in another order may differ in its last bits.
const QUERY: &str =
    "SELECT count(*) AS files, round(avg(bpm), 6) AS bpm, count(error) AS failed FROM music; \
                     SELECT file_name, bpm, error FROM music ORDER BY file_name";

#[test]
fn scheduler_executors_and_client_as_processes() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = moto.client(BUCKET);
        for i in 0..TONES {
            let path = dir.path().join(format!("tone_{i}.wav"));
            audiolake_testkit_audio::tone::write_wav(&path, 5, 330.0 + 40.0 * i as f64);
            upload(&client, &path, &format!("music/tone_{i}.wav")).await;
        }
        for name in ["a_minor_120.mp3", "broken.mp3"] {
            upload(&client, &music().join(name), &format!("music/{name}")).await;
        }
    });

    // The answers of one process alone, on a store of its own.
    let sql = |store: &str, extra: &[&str], statements: &str| {
        let mut cmd = audiolake(&moto, dir.path(), "sql", store);
        cmd.args(extra).args(["--format", "csv", statements]);
        success(cmd.output().unwrap())
    };
    sql("alone", &[], CREATE);
    let expected = sql("alone", &[], QUERY);
    assert!(expected.starts_with("file_name,bpm,error\n"), "{expected}");
    assert_eq!(expected.lines().count(), TONES + 3, "{expected}");

    let port = free_port();
    let scheduler_log = dir.path().join("scheduler.log");
    let mut scheduler = start(
        {
            let mut cmd = audiolake(&moto, dir.path(), "scheduler", "lake");
            cmd.args(["--bind", &format!("127.0.0.1:{port}")]);
            cmd
        },
        dir.path(),
        "scheduler",
    );
    wait_for_port(port, &mut scheduler, &scheduler_log);
    // Ballista logs each task an executor receives at info.
    let executor_log = |i: usize| {
        std::fs::read_to_string(dir.path().join(format!("executor{i}.log"))).unwrap_or_default()
    };
    let _executors: Vec<Running> = (0..2)
        .map(|i| {
            let mut cmd = audiolake(&moto, dir.path(), "executor", "lake");
            cmd.args(["--scheduler", &format!("127.0.0.1:{port}")])
                .args(["--bind", &format!("127.0.0.1:{}", free_port())])
                .args(["--concurrent-tasks", "1"])
                .env("RUST_LOG", "ballista_executor::execution_loop=info");
            start(cmd, dir.path(), &format!("executor{i}"))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..2).all(|i| executor_log(i).contains("Starting poll work loop")) {
        assert!(
            Instant::now() < deadline,
            "{}\n{}",
            executor_log(0),
            executor_log(1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let cluster = format!("df://127.0.0.1:{port}");
    let on_cluster = ["--cluster", cluster.as_str()];
    sql("lake", &on_cluster, CREATE);
    assert_eq!(sql("lake", &on_cluster, QUERY), expected);

    // Both executors ran tasks of the query.
    for i in 0..2 {
        let log = executor_log(i);
        assert!(
            log.contains("Received task"),
            "executor {i} ran no task:\n{log}"
        );
    }

    // `analyze` on the cluster: everything is already stored.
    let mut analyze = audiolake(&moto, dir.path(), "analyze", "lake");
    analyze
        .args(on_cluster)
        .args(["--table", "music", "--groups", "rhythm"]);
    let report = success(analyze.output().unwrap());
    assert!(
        report.starts_with(&format!(
            "music: {} files, 0 analysed, {} from the store, 1 unreadable",
            TONES + 2,
            TONES + 1
        )),
        "{report}"
    );
}
