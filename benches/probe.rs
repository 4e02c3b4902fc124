//! Listing and header probing, files per second, next to ffprobe in the same run.
//!
//! ```sh
//! cargo bench --bench probe                      # 3000 files
//! cargo bench --bench probe -- --files 10000 --runs 5
//! ```
//!
//! Builds a temporary folder of copies of the good fixtures (`tests/data`, every format), then
//! times through `AudioLake`:
//!   * listing only: `SELECT count(*) FROM t` and `SELECT path, size_bytes FROM t`;
//!   * header probing: `SELECT path, duration_s, sample_rate, title FROM t`;
//!
//! and ffprobe doing the same header probing of the same files (duration, sample rate,
//! channels, title), one process per file, with as many processes at once as audiolake has
//! partitions (the number of cores); a last row times `ffprobe -version` alone, to show how
//! much of that is process start-up. AudioLake figures are the median of `--runs` runs after
//! one warm-up; ffprobe runs once after the same warm page cache. Every run checks its
//! results (row counts, no error rows, ffprobe output per file), so a broken run cannot
//! report a fast time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use audiolake::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use audiolake::datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use audiolake::AudioLake;

struct Args {
    files: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        files: 3000,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--files" => args.files = value("--files").max(1),
            "--runs" => args.runs = value("--runs").max(1),
            // `cargo bench` passes `--bench`; ignore it and any filter.
            _ => {}
        }
    }
    args
}

/// The good fixtures (bad = false in fixtures.csv), as paths relative to `tests/data`.
fn good_fixtures(data: &Path) -> Vec<PathBuf> {
    let csv = std::fs::read_to_string(data.join("fixtures.csv")).expect("tests/data/fixtures.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let file_col = header.iter().position(|h| *h == "file").unwrap();
    let bad_col = header.iter().position(|h| *h == "bad").unwrap();
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(bad_col) == Some(&"false"))
        .map(|f| PathBuf::from(f[file_col]))
        .collect()
}

/// Copies the good fixtures round-robin into `dir/dNN/fNNNNN.<ext>` (100 files per folder).
fn populate(dir: &Path, data: &Path, files: usize) -> u64 {
    let sources: Vec<(Vec<u8>, String)> = good_fixtures(data)
        .iter()
        .map(|rel| {
            let bytes = std::fs::read(data.join(rel)).unwrap();
            let ext = rel.extension().unwrap().to_str().unwrap().to_string();
            (bytes, ext)
        })
        .collect();
    assert!(
        !sources.is_empty(),
        "no good fixtures in {}",
        data.display()
    );
    let mut total = 0;
    for i in 0..files {
        let (bytes, ext) = &sources[i % sources.len()];
        let folder = dir.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        std::fs::write(folder.join(format!("f{i:06}.{ext}")), bytes).unwrap();
        total += bytes.len() as u64;
    }
    total
}

async fn collect(lake: &AudioLake, sql: &str) -> Vec<RecordBatch> {
    lake.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Runs `sql` once to warm up, then `runs` times; checks each result; returns the median time.
async fn time_query(
    lake: &AudioLake,
    sql: &str,
    runs: usize,
    check: impl Fn(&[RecordBatch]),
) -> Duration {
    check(&collect(lake, sql).await);
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let batches = collect(lake, sql).await;
        times.push(start.elapsed());
        check(&batches);
    }
    times.sort();
    times[times.len() / 2]
}

/// Every file under `dir`, sorted.
fn list_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn ffprobe_available() -> bool {
    Command::new("ffprobe")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// ffprobe over `files` with `parallelism` processes at once; checks that every file gave a
/// duration and a sample rate. Returns the wall time.
fn time_ffprobe(files: &[PathBuf], parallelism: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..parallelism {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(file) = files.get(i) else { break };
                let out = Command::new("ffprobe")
                    .args([
                        "-v",
                        "error",
                        "-show_entries",
                        "format=duration:stream=sample_rate,channels:format_tags=title",
                        "-of",
                        "csv",
                    ])
                    .arg(file)
                    .stdin(Stdio::null())
                    .output()
                    .expect("ffprobe runs");
                let text = String::from_utf8_lossy(&out.stdout);
                // csv: `stream,<rate>,<channels>` and `format,<duration>[,<title>]`.
                let has_rate = text.lines().any(|l| l.starts_with("stream,"));
                let has_duration =
                    text.lines()
                        .filter_map(|l| l.strip_prefix("format,"))
                        .any(|rest| {
                            rest.split(',')
                                .next()
                                .is_some_and(|d| d.parse::<f64>().is_ok())
                        });
                if !out.status.success() || !has_rate || !has_duration {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{}: {text}", file.display()));
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "ffprobe failed on {} files, e.g. {}",
        failures.len(),
        failures[0]
    );
    elapsed
}

/// `count` runs of `ffprobe -version` with `parallelism` at once: the cost of starting it.
fn time_ffprobe_startup(count: usize, parallelism: usize) -> Duration {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..parallelism {
            scope.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let status = Command::new("ffprobe")
                        .arg("-version")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("ffprobe runs");
                    assert!(status.success());
                }
            });
        }
    });
    start.elapsed()
}

struct Row {
    who: &'static str,
    what: &'static str,
    files: usize,
    time: Duration,
}

impl Row {
    fn files_per_s(&self) -> f64 {
        self.files as f64 / self.time.as_secs_f64()
    }
}

fn main() {
    let args = parse_args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"))
        .expect("tests/data");
    let tmp = tempfile::tempdir().unwrap();
    let music = std::fs::canonicalize(tmp.path()).unwrap().join("music");
    let store = std::fs::canonicalize(tmp.path()).unwrap().join("store");
    let bytes = populate(&music, &data, args.files);
    println!(
        "probe bench: {} files ({:.1} MB, copies of {} good fixtures), {} cores, {} runs (median)",
        args.files,
        bytes as f64 / 1e6,
        good_fixtures(&data).len(),
        cores,
        args.runs
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .unwrap();
    let files = args.files;
    let mut table: Vec<Row> = runtime.block_on(async {
        let lake = AudioLake::builder()
            .store(store.to_str().unwrap())
            .allow_location(music.to_str().unwrap())
            .target_partitions(cores)
            .build()
            .await
            .unwrap();
        collect(
            &lake,
            &format!(
                "CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '{}/'",
                music.display()
            ),
        )
        .await;

        let count = time_query(&lake, "SELECT count(*) FROM t", args.runs, |b| {
            assert_eq!(
                b[0].column(0).as_primitive::<Int64Type>().value(0),
                files as i64
            );
        })
        .await;
        let listing = time_query(&lake, "SELECT path, size_bytes FROM t", args.runs, |b| {
            assert_eq!(rows(b), files);
        })
        .await;
        let probe = time_query(
            &lake,
            "SELECT path, duration_s, sample_rate, title FROM t",
            args.runs,
            |b| {
                assert_eq!(rows(b), files);
                for batch in b {
                    let d = batch.column(1).as_primitive::<Float64Type>();
                    let r = batch.column(2).as_primitive::<Int32Type>();
                    assert_eq!(d.null_count(), 0, "files without a duration");
                    assert_eq!(r.null_count(), 0, "files without a sample rate");
                }
            },
        )
        .await;
        vec![
            Row {
                who: "audiolake",
                what: "SELECT count(*)",
                files,
                time: count,
            },
            Row {
                who: "audiolake",
                what: "SELECT path, size_bytes",
                files,
                time: listing,
            },
            Row {
                who: "audiolake",
                what: "SELECT path, duration_s, sample_rate, title",
                files,
                time: probe,
            },
        ]
    });

    let peer = if ffprobe_available() {
        let paths = list_files(&music);
        assert_eq!(paths.len(), files);
        let time = time_ffprobe(&paths, cores);
        Some(Row {
            who: "ffprobe",
            what: "header probe, same files, one process each",
            files,
            time,
        })
    } else {
        println!("ffprobe not found on the PATH: skipping the peer (apt-get install ffmpeg)");
        None
    };
    let peer_rate = peer.as_ref().map(Row::files_per_s);
    let has_peer = peer.is_some();
    table.extend(peer);
    if has_peer {
        // Context for the ratio: how much of ffprobe's time is process start-up alone.
        let starts = files.min(300);
        table.push(Row {
            who: "ffprobe",
            what: "context: `ffprobe -version` only (start-up)",
            files: starts,
            time: time_ffprobe_startup(starts, cores),
        });
    }

    println!();
    println!(
        "{:<10} {:<46} {:>7} {:>9} {:>11} {:>20}",
        "who", "what", "files", "seconds", "files/s", "audiolake/ffprobe"
    );
    for (i, row) in table.iter().enumerate() {
        // The ratio is meaningful for the header probe only (ffprobe always opens the file).
        let ratio = match peer_rate {
            Some(peer) if i == 2 => format!("{:.2}x", row.files_per_s() / peer),
            _ => "-".to_string(),
        };
        println!(
            "{:<10} {:<46} {:>7} {:>9.3} {:>11.0} {:>20}",
            row.who,
            row.what,
            row.files,
            row.time.as_secs_f64(),
            row.files_per_s(),
            ratio
        );
    }
}
