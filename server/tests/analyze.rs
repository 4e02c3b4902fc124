//! `audiolake analyze` as a user runs it: killed mid-way it resumes without redoing published
//! work, and two processes analysing one collection at once leave a store that is whole. Each
//! case runs on a local store and on a real S3 API server (moto's server mode; skipped with a
//! message when moto is not installed). `--groups` stores the groups it names and no other.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use audiolake_testkit::moto::{Moto, ACCESS_KEY, REGION, SECRET_KEY};
use audiolake_testkit::paths::fixtures;

const FILES: usize = 30;

/// `FILES` mono tones of 15 s at 22.05 kHz, each of its own pitch.
fn collection() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    for i in 0..FILES {
        let hz = 110.0 + 37.0 * i as f64;
        let path = dir.path().join(format!("tone{i:02}.wav"));
        let mut wav = hound::WavWriter::create(path, spec).unwrap();
        for n in 0..22_050 * 15 {
            let t = f64::from(n) / 22_050.0;
            wav.write_sample(((t * hz * std::f64::consts::TAU).sin() * 8000.0) as i16)
                .unwrap();
        }
        wav.finalize().unwrap();
    }
    dir
}

/// Where the results go: a local directory, or a bucket on moto.
enum Store {
    Local(tempfile::TempDir),
    S3(Moto),
}

impl Store {
    fn local() -> Self {
        Store::Local(tempfile::tempdir().unwrap())
    }

    fn s3() -> Option<Self> {
        let moto = Moto::start()?;
        moto.create_bucket("lake");
        Some(Store::S3(moto))
    }

    /// `audiolake SUBCOMMAND --store ...`, with the S3 settings in the environment.
    fn command(&self, subcommand: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_audiolake"));
        cmd.arg(subcommand).arg("--store");
        match self {
            Store::Local(dir) => {
                cmd.arg(dir.path());
            }
            Store::S3(moto) => {
                cmd.arg("s3://lake/store")
                    .env("AWS_ENDPOINT_URL", moto.endpoint())
                    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env("AWS_REGION", REGION)
                    .env("AWS_ALLOW_HTTP", "true");
            }
        }
        cmd
    }
}

fn analyze(store: &Store, music: &Path) -> Command {
    let mut cmd = store.command("analyze");
    cmd.arg("--music").arg(music).args([
        "--table",
        "music",
        "--flush-files",
        "1",
        "--partitions",
        "1",
    ]);
    cmd
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// (analysed, from the store) from the summary line `music: N files, A analysed, H from ...`.
fn summary(out: &Output) -> (usize, usize) {
    let (stdout, stderr) = text(out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let numbers: Vec<usize> = stdout
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers[0], FILES, "{stdout}");
    (numbers[1], numbers[2])
}

/// The one number a query prints.
fn count(store: &Store, sql: &str) -> usize {
    let out = store
        .command("sql")
        .args(["--format", "csv", sql])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout.lines().nth(1).unwrap().parse().unwrap()
}

/// Files whose results are stored for every feature group, as `path,analysed at` lines.
fn complete(store: &Store) -> Vec<String> {
    let out = store
        .command("sql")
        .args([
            "--format",
            "csv",
            "SELECT r.path, arrow_cast(r.analyzed_at, 'Utf8') AS at FROM features_rhythm r \
             JOIN features_tonal t ON t.path = r.path \
             JOIN features_loudness l ON l.path = r.path \
             JOIN features_spectral s ON s.path = r.path \
             JOIN features_timbre m ON m.path = r.path ORDER BY r.path",
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout.lines().skip(1).map(str::to_string).collect()
}

fn kill_when(mut child: Child, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("analysis neither progressed nor ended");
}

fn killed_analysis_resumes(store: &Store) {
    let music = collection();
    let child = analyze(store, music.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let published = || count(store, "SELECT count(*) FROM features_rhythm");
    let killed = kill_when(child, || published() >= 4);
    assert!(killed, "the analysis ended before it could be killed");

    // The kill may land between one group's part and the next: such a file is not complete.
    let before = complete(store);
    let published = before.len();
    assert!(
        (1..FILES).contains(&published),
        "{published} files published"
    );
    let (analyzed, from_store) = summary(&analyze(store, music.path()).output().unwrap());
    // A published file analysed again has a newer row: name it if the counts differ.
    let after = complete(store);
    let again: Vec<&String> = before.iter().filter(|l| !after.contains(l)).collect();
    assert_eq!(
        from_store, published,
        "every published file is reused; analysed again: {again:?}"
    );
    assert_eq!(analyzed, FILES - published, "only the rest is analysed");

    let (analyzed, from_store) = summary(&analyze(store, music.path()).output().unwrap());
    assert_eq!((analyzed, from_store), (0, FILES));
}

fn concurrent_writers(store: &Store) {
    let music = collection();
    let spawn = || {
        analyze(store, music.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (analyzed_a, _) = summary(&a);
    let (analyzed_b, _) = summary(&b);
    assert!(analyzed_a + analyzed_b >= FILES);

    assert_eq!(complete(store).len(), FILES);
    let (analyzed, from_store) = summary(&analyze(store, music.path()).output().unwrap());
    assert_eq!((analyzed, from_store), (0, FILES));
}

#[test]
fn a_killed_analysis_resumes_where_it_stopped() {
    killed_analysis_resumes(&Store::local());
}

#[test]
fn two_writers_at_once_leave_a_whole_store() {
    concurrent_writers(&Store::local());
}

#[test]
fn on_s3_a_killed_analysis_resumes_where_it_stopped() {
    if let Some(store) = Store::s3() {
        killed_analysis_resumes(&store);
    }
}

#[test]
fn on_s3_two_writers_at_once_leave_a_whole_store() {
    if let Some(store) = Store::s3() {
        concurrent_writers(&store);
    }
}

#[test]
fn groups_names_the_only_groups_stored() {
    let store = Store::local();
    let music = fixtures();
    let fixtures = std::fs::read_to_string(music.join("fixtures.csv")).unwrap();
    let rows: Vec<&str> = fixtures.lines().skip(1).collect();
    let files = rows.len();
    let unreadable = rows.iter().filter(|r| r.ends_with(",true")).count();
    let readable = files - unreadable;
    let out = analyze(&store, &music)
        .args(["--groups", "tonal, RHYTHM"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let mut lines = stdout.lines();
    let line = lines.next().unwrap_or_default();
    assert!(
        line.starts_with(&format!(
            "music: {files} files, {readable} analysed, 0 from the store, {unreadable} \
             unreadable, in "
        )) && line.ends_with(" s; groups rhythm, tonal"),
        "{stdout}"
    );
    // Then the rate: files per second and the tracks per hour it makes.
    let rate = lines.next().unwrap_or_default();
    let numbers: Vec<f64> = rate
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        rate.ends_with(" tracks per hour") && numbers.len() == 2 && numbers[0] > 0.0,
        "{stdout}"
    );
    assert!(
        (numbers[0] * 3600.0 - numbers[1]).abs() <= 0.005 * 3600.0 + 1.0,
        "{rate}"
    );
    let Store::Local(dir) = &store else {
        unreachable!("a local store")
    };
    let mut stored: Vec<String> = std::fs::read_dir(dir.path().join("features"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    stored.sort();
    assert_eq!(stored, ["header", "rhythm", "tonal"]);

    let out = analyze(&store, &music)
        .args(["--groups", "rhythm,beats"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains(
            "unknown feature group \"beats\"; the groups are rhythm, tonal, loudness, \
             spectral, timbre, musicnn"
        ),
        "{stderr}"
    );
}

#[test]
fn help_lists_the_groups() {
    let out = Command::new(env!("CARGO_BIN_EXE_audiolake"))
        .args(["analyze", "--help"])
        .output()
        .unwrap();
    let (help, _) = text(&out);
    assert!(
        help.contains("rhythm, tonal, loudness, spectral, timbre, musicnn"),
        "{help}"
    );
}
