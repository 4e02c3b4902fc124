//! `audiolake analyze` as a user runs it: killed mid-way it resumes without redoing published
//! work, and two processes analysing one collection at once leave a store that is whole.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn analyze(store: &Path, music: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_audiolake"));
    cmd.arg("analyze")
        .arg("--store")
        .arg(store)
        .arg("--music")
        .arg(music)
        .args([
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

/// Files whose results are stored for every feature group.
fn complete(store: &Path) -> usize {
    let out = Command::new(env!("CARGO_BIN_EXE_audiolake"))
        .args(["sql", "--format", "csv", "--store"])
        .arg(store)
        .arg(
            "SELECT count(*) AS n FROM features_rhythm r \
             JOIN features_tonal t ON t.path = r.path \
             JOIN features_loudness l ON l.path = r.path \
             JOIN features_spectral s ON s.path = r.path \
             JOIN features_timbre m ON m.path = r.path",
        )
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    stdout.lines().nth(1).unwrap().parse().unwrap()
}

fn parquet_parts(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() {
                parquet_parts(&path)
            } else {
                usize::from(path.extension().is_some_and(|x| x == "parquet"))
            }
        })
        .sum()
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

#[test]
fn a_killed_analysis_resumes_where_it_stopped() {
    let music = collection();
    let store = tempfile::tempdir().unwrap();
    let rhythm: PathBuf = store.path().join("features/rhythm");
    let child = analyze(store.path(), music.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed = kill_when(child, || parquet_parts(&rhythm) >= 4);
    assert!(killed, "the analysis ended before it could be killed");

    let published = complete(store.path());
    // The kill may land between one group's part and the next: such a file is not complete.
    assert!(
        (1..FILES).contains(&published),
        "{published} files published"
    );
    let (analysed, from_store) = summary(&analyze(store.path(), music.path()).output().unwrap());
    assert_eq!(from_store, published, "every published file is reused");
    assert_eq!(analysed, FILES - published, "only the rest is analysed");

    let (analysed, from_store) = summary(&analyze(store.path(), music.path()).output().unwrap());
    assert_eq!((analysed, from_store), (0, FILES));
}

#[test]
fn two_writers_at_once_leave_a_whole_store() {
    let music = collection();
    let store = tempfile::tempdir().unwrap();
    let spawn = || {
        analyze(store.path(), music.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (analysed_a, _) = summary(&a);
    let (analysed_b, _) = summary(&b);
    assert!(analysed_a + analysed_b >= FILES);

    assert_eq!(complete(store.path()), FILES);
    let (analysed, from_store) = summary(&analyze(store.path(), music.path()).output().unwrap());
    assert_eq!((analysed, from_store), (0, FILES));
}
