//! Analysis on a Ballista cluster against one engine: files per second with 1, 2 and 4
//! executors (scheduler and executors in this process, each an engine of its own) and with the
//! engine alone, all on one store in a real S3 API server (moto) and on the same files: the
//! audio files of the shared corpus.
//!
//! ```sh
//! cargo bench --bench cluster
//! cargo bench --bench cluster -- --files 12
//! ```
//!
//! Every configuration analyses the files afresh (a store prefix of its own) with
//! `SELECT least(count(bpm), count(key)) FROM music` (the rhythm and tonal groups). Executors run
//! `cores / executors` tasks at once (at least one), so each configuration has as many tasks
//! as the machine has cores: on a small machine the figures are the cluster's overhead, not a
//! speed-up. Needs `moto_server` and the corpus; without either it says why and stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use audiolake::cluster::{ExecutorOptions, DEFAULT_EXECUTOR_TIMEOUT};
use audiolake::AudioLake;
use audiolake_testkit::moto::{free_port, upload, Moto};
use audiolake_testkit::query::{count, query};
use audiolake_testkit_audio::corpus;

const BUCKET: &str = "audiolake-bench";
const QUERY: &str = "SELECT least(count(bpm), count(key)) AS analysed FROM music";

fn files_arg() -> usize {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--files" {
            return args
                .next()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .expect("--files needs a positive number");
        }
    }
    usize::MAX
}

async fn open(store: &str, cluster: Option<u16>) -> AudioLake {
    let mut builder = AudioLake::builder()
        .store(format!("s3://{BUCKET}/{store}"))
        .allow_location(format!("s3://{BUCKET}/music/"));
    if let Some(port) = cluster {
        builder = builder.cluster(format!("df://127.0.0.1:{port}"));
    }
    builder.build().await.unwrap()
}

/// Starts a scheduler and `executors` executors on the store `store`; returns the scheduler's
/// port. They run until the runtime is shut down.
async fn start_cluster(store: &str, executors: usize, cores: usize) -> u16 {
    let scheduler = Arc::new(open(store, None).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let engine = scheduler.engine();
        engine
            .run_scheduler(listener, DEFAULT_EXECUTOR_TIMEOUT)
            .await
    });
    for _ in 0..executors {
        let executor = Arc::new(open(store, None).await);
        let options = ExecutorOptions {
            scheduler: format!("127.0.0.1:{port}"),
            bind: SocketAddr::from(([127, 0, 0, 1], free_port())),
            external_host: None,
            concurrent_tasks: cores.div_ceil(executors),
        };
        tokio::spawn(async move { executor.engine().run_executor(options).await });
    }
    port
}

/// Runs the query once; returns the seconds it took and the files analysed.
async fn analyse(lake: &AudioLake) -> (f64, i64) {
    let started = Instant::now();
    let batch = query(lake, QUERY).await;
    (started.elapsed().as_secs_f64(), count(&batch))
}

fn main() {
    let Some(dir) = corpus::find() else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.export_env();
    moto.create_bucket(BUCKET);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            ["mp3", "wav", "flac", "ogg"].contains(&ext)
        })
        .collect();
    files.sort();
    files.truncate(files_arg());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = || tokio::runtime::Runtime::new().unwrap();
    runtime().block_on(async {
        let client = moto.client(BUCKET);
        for file in &files {
            let name = file.file_name().unwrap().to_str().unwrap();
            upload(&client, file, &format!("music/{name}")).await;
        }
    });
    let create =
        format!("CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION 's3://{BUCKET}/music/'");
    println!(
        "cluster bench: {} files of the corpus, {cores} cores, store on moto",
        files.len()
    );

    let alone = runtime().block_on(async {
        let lake = open("alone", None).await;
        query(&lake, &create).await;
        analyse(&lake).await
    });
    let rate = |(seconds, analysed): (f64, i64)| analysed as f64 / seconds;
    println!(
        "one engine:   {:6.2} files/s ({} files in {:.1} s)",
        rate(alone),
        alone.1,
        alone.0
    );
    for executors in [1, 2, 4] {
        let rt = runtime();
        let run = rt.block_on(async {
            let store = format!("cluster{executors}");
            let port = start_cluster(&store, executors, cores).await;
            let lake = open(&store, Some(port)).await;
            query(&lake, &create).await;
            analyse(&lake).await
        });
        rt.shutdown_background();
        assert_eq!(run.1, alone.1, "the cluster analysed other files");
        println!(
            "{executors} executor{}: {:6.2} files/s ({} files in {:.1} s), {:.2}x one engine",
            if executors == 1 { " " } else { "s" },
            rate(run),
            run.1,
            run.0,
            rate(run) / rate(alone)
        );
    }
}
