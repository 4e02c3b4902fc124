//! Queries on a Ballista cluster: a scheduler and two executors in this process, each an engine
//! of its own on one store in a real S3 API server (moto), against one engine alone.
//!
//! Environment variables are process-wide (the store is reached through `AWS_*`), so this
//! binary holds a single test that sets them before any runtime thread exists. Without
//! `moto_server` on the PATH it prints why and passes.
#![cfg(feature = "distributed")]

use std::net::SocketAddr;
use std::sync::Arc;

use audiolake::cluster::{ExecutorOptions, DEFAULT_EXECUTOR_TIMEOUT};
use audiolake::datafusion::arrow::array::RecordBatch;
use audiolake::AudioLake;
use audiolake_testkit::moto::{free_port, upload, Moto};
use audiolake_testkit::paths::music;
use audiolake_testkit::query::{count, floats, query, strings};
use futures::TryStreamExt;
use object_store::ObjectStore;

const BUCKET: &str = "audiolake-cluster";
/// Tones written for the test, besides the two files of tests/music.
const TONES: usize = 6;
const FILES: usize = TONES + 2;

async fn upload_music(moto: &Moto) {
    let client = moto.client(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for i in 0..TONES {
        let path = dir.path().join(format!("tone_{i}.wav"));
        audiolake_testkit_audio::tone::write_wav(&path, 6, 220.0 + 55.0 * i as f64);
        files.push(path);
    }
    for name in ["a_minor_120.mp3", "broken.mp3"] {
        files.push(music().join(name));
    }
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        upload(&client, &file, &format!("music/{name}")).await;
    }
}

async fn open(store: &str, cluster: Option<u16>) -> AudioLake {
    let mut builder = AudioLake::builder()
        .store(format!("s3://{BUCKET}/{store}"))
        .allow_location(format!("s3://{BUCKET}/music/"))
        .target_partitions(2);
    if let Some(port) = cluster {
        builder = builder.cluster(format!("df://127.0.0.1:{port}"));
    }
    builder.build().await.unwrap()
}

/// Starts a scheduler and two executors (one task at a time each); returns the scheduler's
/// port and the executors' engines.
async fn start_cluster() -> (u16, Vec<Arc<AudioLake>>) {
    let scheduler = Arc::new(open("lake", None).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        scheduler
            .engine()
            .run_scheduler(listener, DEFAULT_EXECUTOR_TIMEOUT)
            .await
    });
    let mut executors = Vec::new();
    for _ in 0..2 {
        let executor = Arc::new(open("lake", None).await);
        let options = ExecutorOptions {
            scheduler: format!("127.0.0.1:{port}"),
            bind: SocketAddr::from(([127, 0, 0, 1], free_port())),
            external_host: None,
            concurrent_tasks: 1,
        };
        let running = Arc::clone(&executor);
        tokio::spawn(async move { running.engine().run_executor(options).await });
        executors.push(executor);
    }
    (port, executors)
}

fn files_done(lake: &AudioLake) -> u64 {
    lake.engine().progress().snapshot().0
}

const CREATE: &str =
    "CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION 's3://audiolake-cluster/music/'";
const SUMMARY: &str = "SELECT count(*) AS n, avg(bpm) AS bpm FROM music";
const ROWS: &str = "SELECT path, bpm, error FROM music ORDER BY path";

fn rows(batch: &RecordBatch) -> Vec<(Option<String>, Option<f64>, Option<String>)> {
    let (paths, bpms, errors) = (
        strings(batch, "path"),
        floats(batch, "bpm"),
        strings(batch, "error"),
    );
    (0..batch.num_rows())
        .map(|i| (paths[i].clone(), bpms[i], errors[i].clone()))
        .collect()
}

async fn run(moto: &Moto) {
    moto.create_bucket(BUCKET);
    upload_music(moto).await;
    let music_gets = format!("/{BUCKET}/music/");

    // One engine alone, on a store of its own.
    let alone = open("alone", None).await;
    query(&alone, CREATE).await;
    let expected_summary = query(&alone, SUMMARY).await;
    let expected_rows = rows(&query(&alone, ROWS).await);
    assert_eq!(count(&expected_summary), FILES as i64);
    let a_minor = expected_rows
        .iter()
        .find(|(p, _, _)| p.as_deref().is_some_and(|p| p.ends_with("a_minor_120.mp3")))
        .unwrap();
    assert!((a_minor.1.unwrap() - 120.0).abs() < 2.0, "{a_minor:?}");

    let (port, executors) = start_cluster().await;
    let client = open("lake", Some(port)).await;
    query(&client, CREATE).await;
    let gets_before = moto.gets_under(&music_gets).len();
    let summary = query(&client, SUMMARY).await;
    assert_eq!(count(&summary), FILES as i64);
    let (bpm, expected_bpm) = (
        floats(&summary, "bpm")[0],
        floats(&expected_summary, "bpm")[0],
    );
    assert!(
        (bpm.unwrap() - expected_bpm.unwrap()).abs() < 1e-9,
        "{bpm:?} vs {expected_bpm:?}"
    );
    // The files were read by the executors, each file by one of them.
    let done: Vec<u64> = executors.iter().map(|e| files_done(e)).collect();
    assert!(done.iter().all(|&d| d >= 1), "files per executor: {done:?}");
    assert_eq!(
        done.iter().sum::<u64>(),
        FILES as u64,
        "files per executor: {done:?}"
    );
    assert_eq!(files_done(&client), 0, "the client read no file");
    assert!(moto.gets_under(&music_gets).len() > gets_before);
    assert_eq!(rows(&query(&client, ROWS).await), expected_rows);

    // The executors published what they read: the same answers again, and no audio read.
    let gets_before = moto.gets_under(&music_gets);
    let again = query(&client, SUMMARY).await;
    assert_eq!(count(&again), FILES as i64);
    // Sums in another order may differ in the last bits.
    assert!((floats(&again, "bpm")[0].unwrap() - expected_bpm.unwrap()).abs() < 1e-9);
    assert_eq!(rows(&query(&client, ROWS).await), expected_rows);
    let gets = moto.gets_under(&music_gets);
    assert!(
        gets.len() == gets_before.len(),
        "audio read again: {:?}",
        &gets[gets_before.len()..]
    );

    // `analyze` over the cluster: a new group is computed by the executors for every readable
    // file; a group already stored is computed for none.
    let readable = (FILES - 1) as u64;
    for (group, analyzed, from_store) in [("tonal", readable, 0), ("rhythm", 0, readable)] {
        let report = client
            .analyze_table_groups("music", &[group])
            .await
            .unwrap();
        let counts = (
            report.files,
            report.analyzed,
            report.from_store,
            report.unreadable,
        );
        assert_eq!(counts, (FILES as u64, analyzed, from_store, 1), "{group}");
    }

    // A query on tables of this process only (system and memory tables) runs here; one that
    // mixes them with an AUDIO table too, reading the files here.
    assert_eq!(
        count(&query(&client, "SELECT count(*) FROM audiolake_indexes").await),
        0
    );
    let done: Vec<u64> = executors.iter().map(|e| files_done(e)).collect();
    query(&client, "CREATE TABLE one_row AS VALUES (1)").await;
    let mixed = "SELECT count(bpm) * max(column1) FROM music CROSS JOIN one_row";
    assert_eq!(count(&query(&client, mixed).await), (FILES - 1) as i64);
    assert_eq!(
        executors.iter().map(|e| files_done(e)).collect::<Vec<_>>(),
        done
    );
    assert_eq!(files_done(&client), FILES as u64);

    // Path functions run where their rows are.
    let bpm = query(
        &client,
        "SELECT path, bpm(path) AS bpm FROM music WHERE path LIKE '%tone_0.wav'",
    )
    .await;
    let tone = expected_rows
        .iter()
        .find(|(p, _, _)| p.as_deref().is_some_and(|p| p.ends_with("tone_0.wav")))
        .unwrap();
    assert_eq!(floats(&bpm, "bpm"), vec![tone.1]);

    tasks_read_the_parts_of_their_buckets(moto).await;
}

/// Whether a part's name says which buckets its rows are in (`...-b3of8.parquet`).
fn names_buckets(key: &str) -> bool {
    let tag = key.trim_end_matches(".parquet").rsplit('-').next().unwrap();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    tag.strip_prefix('b')
        .and_then(|t| t.split_once("of"))
        .is_some_and(|(r, m)| digits(r) && digits(m))
}

/// A new cluster on the same store: each task reads only the stored parts that can hold its
/// own files, so the parts the first cluster's tasks wrote are read once, not once per executor.
async fn tasks_read_the_parts_of_their_buckets(moto: &Moto) {
    let rhythm = format!("/{BUCKET}/lake/features/rhythm/");
    let listed: Vec<String> = moto
        .client(BUCKET)
        .list(Some(&object_store::path::Path::from(
            "lake/features/rhythm",
        )))
        .map_ok(|meta| format!("/{BUCKET}/{}", meta.location))
        .try_collect()
        .await
        .unwrap();
    let (narrow, every): (Vec<String>, Vec<String>) = listed
        .into_iter()
        .filter(|key| key.ends_with(".parquet"))
        .partition(|key| names_buckets(key));
    assert!(narrow.len() >= 2, "parts of one task's buckets: {narrow:?}");

    let (port, executors) = start_cluster().await;
    let client = open("lake", Some(port)).await;
    let gets_before = moto.gets_under(&rhythm).len();
    let audio_before = moto.gets_under(&format!("/{BUCKET}/music/")).len();
    assert_eq!(count(&query(&client, SUMMARY).await), FILES as i64);
    assert_eq!(
        moto.gets_under(&format!("/{BUCKET}/music/")).len(),
        audio_before,
        "audio read again"
    );
    let read: Vec<String> = moto.gets_under(&rhythm)[gets_before..]
        .iter()
        .map(|line| {
            let request = line.split("\"GET ").nth(1).unwrap();
            request.split(' ').next().unwrap().to_string()
        })
        .collect();
    let times = |key: &String| read.iter().filter(|r| *r == key).count();
    for key in &narrow {
        assert_eq!(times(key), 1, "{key} in {read:#?}");
    }
    // Parts of every bucket (written by the client's own scans) are read by every executor that
    // ran a task.
    for key in &every {
        assert!(
            (1..=executors.len()).contains(&times(key)),
            "{key} in {read:#?}"
        );
    }
    assert_eq!(
        read.len(),
        narrow.len() + every.iter().map(times).sum::<usize>()
    );
}

#[test]
fn a_cluster_answers_as_one_engine_does() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.export_env();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(&moto));
}
