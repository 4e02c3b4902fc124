//! The feature store: a collection analysed once, then answered from Parquet.
//!
//! ```sh
//! cargo bench --bench store                     # 10,000 files
//! cargo bench --bench store -- --files 2000 --runs 5
//! ```
//!
//! Writes a folder of short WAV files, each a tone of its own pitch (1 s, 22.05 kHz mono, so
//! the first run's analysis takes minutes, not hours), then times through `AudioLake`:
//!   * the first, analysing run of `SELECT path, bpm, key FROM music`;
//!   * the same query again on a fresh engine over the same store (the median of `--runs`),
//!     with the bytes it read from audio files (the scan's `bytes_read`), which should be 0.
//!
//! The peer is the first run itself: the ratio says what the store saves. Every run checks its
//! row count and that no value is missing, so a broken run cannot report a fast time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audiolake::datafusion::arrow::array::{Array, RecordBatch};
use audiolake::datafusion::physical_plan::collect;
use audiolake::AudioLake;
use audiolake_testkit::query::bytes_read;

const QUERY: &str = "SELECT path, bpm, key FROM music";

struct Args {
    files: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        files: 10_000,
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

/// `files` WAVs of one second, 16-bit mono at 22.05 kHz, each a tone of its own pitch.
fn populate(dir: &Path, files: usize) {
    let rate = 22_050u32;
    for i in 0..files {
        let hz = 100.0 + i as f64 * 0.37;
        let mut out = Vec::with_capacity(44 + rate as usize * 2);
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + rate * 2).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2).to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(rate * 2).to_le_bytes());
        for n in 0..rate {
            let t = f64::from(n) / f64::from(rate);
            let s = ((t * hz * std::f64::consts::TAU).sin() * 8000.0) as i16;
            out.extend_from_slice(&s.to_le_bytes());
        }
        let sub = dir.join(format!("{:03}", i / 1000));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("tone{i:05}.wav")), out).unwrap();
    }
}

async fn open(store: &Path, music: &Path) -> AudioLake {
    let lake = AudioLake::builder()
        .store(store.to_str().unwrap())
        .allow_location(music.to_str().unwrap())
        .build()
        .await
        .unwrap();
    lake.register_audio_table("music", music.to_str().unwrap())
        .await
        .unwrap();
    lake
}

/// Runs the query; returns its time, its batches and the audio bytes it read.
async fn run(lake: &AudioLake) -> (Duration, Vec<RecordBatch>, usize) {
    let start = Instant::now();
    let frame = lake.sql(QUERY).await.unwrap();
    let task = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await.unwrap();
    let batches = collect(Arc::clone(&plan), task).await.unwrap();
    let elapsed = start.elapsed();
    (elapsed, batches, bytes_read(&plan))
}

fn check(batches: &[RecordBatch], files: usize) {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, files, "row count");
    let missing: usize = batches.iter().map(|b| b.column(2).null_count()).sum();
    assert_eq!(missing, 0, "files without a key");
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let music = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let music_dir = std::fs::canonicalize(music.path()).unwrap();
    let store_dir = std::fs::canonicalize(store.path()).unwrap();
    print!("writing {} one-second WAV files ... ", args.files);
    populate(&music_dir, args.files);
    println!("done");

    let lake = open(&store_dir, &music_dir).await;
    let (first, batches, first_bytes) = run(&lake).await;
    check(&batches, args.files);
    lake.flush().await.unwrap();
    drop(lake);
    println!(
        "first run (analyses every file): {:>9.3} s, {:>12} audio bytes read",
        first.as_secs_f64(),
        first_bytes
    );

    let mut times = Vec::new();
    for _ in 0..args.runs {
        let lake = open(&store_dir, &music_dir).await;
        let (elapsed, batches, bytes) = run(&lake).await;
        check(&batches, args.files);
        let analyzed = lake.engine().feature_store().stats().analyzed();
        assert_eq!(analyzed, 0, "a stored file was analysed again");
        println!(
            "from the store:                  {:>9.3} s, {:>12} audio bytes read",
            elapsed.as_secs_f64(),
            bytes
        );
        times.push(elapsed);
    }
    times.sort();
    let median = times[times.len() / 2];
    println!(
        "median from the store: {:.3} s for {} files (goal: under 1 s for 10,000); {:.0}x faster than the first run",
        median.as_secs_f64(),
        args.files,
        first.as_secs_f64() / median.as_secs_f64()
    );
}
