//! AUDIO tables through the embedded API: values against the fixtures' and the corpus' truth,
//! what each kind of query reads, and the catalog across restarts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use audiolake::datafusion::arrow::array::{Array, AsArray};
use audiolake::datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use audiolake::datafusion::common::stats::Precision;
use audiolake::datafusion::physical_plan::collect;
use audiolake::datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use audiolake::AudioLake;
use audiolake_testkit::paths::fixtures;
use audiolake_testkit::query::{bytes_read, query, strings};
use audiolake_testkit::store::CountingStore;
use audiolake_testkit_audio::corpus;
use audiolake_testkit_audio::tone::write_wav;
use futures::StreamExt;
use object_store::ObjectStore;

async fn open(store: &Path, allow: &[&Path]) -> AudioLake {
    let mut builder = AudioLake::builder()
        .store(store.to_str().unwrap())
        .target_partitions(2);
    for a in allow {
        builder = builder.allow_location(a.to_str().unwrap());
    }
    builder.build().await.unwrap()
}

/// An engine on `store` with table `t` over `dir`, reading local files through a store that
/// counts the bytes read of each.
async fn open_counting(store: &Path, dir: &Path) -> (AudioLake, Arc<CountingStore>) {
    let lake = open(store, &[dir]).await;
    let counting = Arc::new(CountingStore::new());
    lake.engine().session().register_object_store(
        &url::Url::parse("file:///").unwrap(),
        Arc::clone(&counting) as Arc<dyn ObjectStore>,
    );
    lake.sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '{}'",
        dir.display()
    ))
    .await
    .unwrap();
    (lake, counting)
}

/// Rows of a CSV file (fixtures.csv, truth.csv), keyed by column name.
fn read_csv(path: &Path) -> Vec<HashMap<String, String>> {
    csv::Reader::from_path(path)
        .unwrap()
        .deserialize()
        .map(|row| row.unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_values_match_fixtures_csv() {
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), &[&fixtures()]).await;
    let location = fixtures();
    let batch = query(
        &lake,
        &format!(
            "CREATE EXTERNAL TABLE fx STORED AS AUDIO LOCATION '{}'; \
             SELECT path, format, codec, sample_rate, channels, bits_per_sample, duration_s, \
             title, year, error FROM fx",
            location.display()
        ),
    )
    .await;
    let expected = read_csv(&fixtures().join("fixtures.csv"));
    assert_eq!(batch.num_rows(), expected.len());
    let paths = strings(&batch, "path");
    for row in &expected {
        let url = format!("file://{}/{}", location.display(), row["file"]);
        let i = paths
            .iter()
            .position(|p| p.as_deref() == Some(url.as_str()))
            .unwrap_or_else(|| panic!("{url} not listed"));
        let file = &row["file"];
        let error = &strings(&batch, "error")[i];
        if row["bad"] == "true" {
            assert!(error.is_some(), "{file} should be an error row");
            assert!(batch.column_by_name("sample_rate").unwrap().is_null(i));
            assert!(batch.column_by_name("duration_s").unwrap().is_null(i));
            continue;
        }
        assert_eq!(error, &None, "{file}");
        assert_eq!(
            strings(&batch, "format")[i].as_deref(),
            Some(row["format"].as_str()),
            "{file}"
        );
        assert_eq!(
            strings(&batch, "codec")[i].as_deref(),
            Some(row["codec"].as_str()),
            "{file}"
        );
        let int = |col: &str| {
            let a = batch
                .column_by_name(col)
                .unwrap()
                .as_primitive::<Int32Type>();
            if a.is_valid(i) {
                a.value(i).to_string()
            } else {
                Default::default()
            }
        };
        assert_eq!(int("sample_rate"), row["sample_rate"], "{file}");
        assert_eq!(int("channels"), row["channels"], "{file}");
        assert_eq!(int("bits_per_sample"), row["bits_per_sample"], "{file}");
        assert_eq!(int("year"), row["year"], "{file}");
        let duration = batch
            .column_by_name("duration_s")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(i);
        let truth: f64 = row["duration_s"].parse().unwrap();
        // Lossless: exact. Lossy: the encoder's padding when no header says how much.
        let tolerance = if row["bits_per_sample"].is_empty() {
            0.05
        } else {
            1e-9
        };
        assert!(
            (duration - truth).abs() <= tolerance,
            "{file}: duration {duration} vs {truth}"
        );
        let title = strings(&batch, "title")[i].clone().unwrap_or_default();
        assert_eq!(title, row["title"], "{file}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheap_columns_read_only_what_they_need() {
    let music = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(music.path()).unwrap();
    for i in 0..6 {
        write_wav(&dir.join(format!("tone{i}.wav")), 12, 440.0); // ~2 MB each
    }
    let store = tempfile::tempdir().unwrap();
    let (lake, counting) = open_counting(store.path(), &dir).await;
    counting.take();

    // Listing columns: no file is opened.
    let batch = query(
        &lake,
        "SELECT path, file_name, size_bytes, last_modified FROM t",
    )
    .await;
    assert_eq!(batch.num_rows(), 6);
    assert_eq!(
        batch
            .column_by_name("size_bytes")
            .unwrap()
            .as_primitive::<Int64Type>()
            .value(0),
        44 + 44_100 * 12 * 4
    );
    let reads = counting.take();
    assert!(reads.is_empty(), "listing opened files: {reads:?}");

    // Header columns: every file is opened, but only its header blocks are read.
    let batch = query(
        &lake,
        "SELECT file_name, duration_s FROM t ORDER BY file_name",
    )
    .await;
    let durations = batch.column(1).as_primitive::<Float64Type>();
    assert!((0..6).all(|i| durations.value(i) == 12.0));
    let reads = counting.take();
    assert_eq!(reads.len(), 6);
    let file_size = 44 + 44_100 * 12 * 4;
    for (file, bytes) in &reads {
        assert!(
            *bytes <= 256 * 1024 && *bytes * 8 < file_size,
            "{file}: {bytes} bytes read of {file_size}"
        );
    }

    // Headers are stored: asked again, no file is opened.
    query(&lake, "SELECT file_name, duration_s FROM t").await;
    let reads = counting.take();
    assert!(
        reads.is_empty(),
        "stored headers were read again: {reads:?}"
    );

    // Rewritten files are probed again. A filter on a listing column runs before probing: only
    // the matching file is opened.
    for i in 0..6 {
        write_wav(&dir.join(format!("tone{i}.wav")), 12, 440.0);
    }
    let batch = query(
        &lake,
        "SELECT duration_s FROM t WHERE file_name = 'tone3.wav'",
    )
    .await;
    assert_eq!(batch.num_rows(), 1);
    let reads = counting.take();
    assert_eq!(reads.keys().collect::<Vec<_>>().len(), 1, "{reads:?}");
    assert!(reads.keys().all(|k| k.ends_with("tone3.wav")));

    // LIMIT without other filters opens at most that many files: the first two listed, tone0
    // and tone1, whose rewritten headers are not stored yet.
    let batch = query(&lake, "SELECT sample_rate FROM t LIMIT 2").await;
    assert_eq!(batch.num_rows(), 2);
    assert_eq!(counting.take().len(), 2);

    // Analysis columns decode each file once, whole, through only the groups they need.
    let plan = query(&lake, "EXPLAIN SELECT rms_dbfs, bpm FROM t").await;
    let plan: Vec<String> = strings(&plan, "plan").into_iter().flatten().collect();
    let plan = plan.join("\n");
    assert!(plan.contains("reads=audio (rhythm, loudness)"), "{plan}");
    let batch = query(&lake, "SELECT rms_dbfs FROM t").await;
    // A sine of amplitude 3000/32768 in both channels: 20 log10(3000 / 32768 / sqrt 2).
    let expected = 20.0 * (3000.0f64 / 32768.0 / 2f64.sqrt()).log10();
    let rms = batch.column(0).as_primitive::<Float64Type>();
    assert!(
        (0..6).all(|i| (rms.value(i) - expected).abs() < 0.01),
        "{rms:?} vs {expected}"
    );
    let reads = counting.take();
    assert_eq!(reads.len(), 6);
    for (file, bytes) in &reads {
        // The whole file, and at most one block more (the header is read before seeking back).
        assert!(
            (file_size..file_size + 64 * 1024).contains(bytes),
            "{file}: {bytes} bytes read of {file_size}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_survive_a_restart_and_drop_is_recorded() {
    let store = tempfile::tempdir().unwrap();
    let location = fixtures();
    {
        let lake = open(store.path(), &[&location]).await;
        lake.sql(&format!(
            "CREATE EXTERNAL TABLE kept STORED AS AUDIO LOCATION '{}' OPTIONS ('extensions' 'flac'); \
             CREATE EXTERNAL TABLE dropped STORED AS AUDIO LOCATION '{}'",
            location.display(),
            location.display()
        ))
        .await
        .unwrap();
    }
    let lake = open(store.path(), &[&location]).await;
    assert!(
        lake.engine().warnings().is_empty(),
        "{:?}",
        lake.engine().warnings()
    );
    let batch = query(&lake, "SELECT count(*) AS n FROM kept").await;
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 3);
    query(&lake, "DROP TABLE dropped").await;
    drop(lake);

    let lake = open(store.path(), &[&location]).await;
    let err = lake.sql("SELECT * FROM dropped").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("table 'datafusion.public.dropped' not found"),
        "{err}"
    );
    drop(lake);

    // Reopened without the allowed root, the table is not restored, and the user is told why.
    let lake = open(store.path(), &[]).await;
    assert_eq!(lake.engine().warnings().len(), 1);
    assert!(
        lake.engine().warnings()[0].starts_with("table kept was not restored: location 'file://"),
        "{:?}",
        lake.engine().warnings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_headers_match_truth() {
    let Some(corpus) = corpus::find() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), &[&corpus]).await;
    let batch = query(
        &lake,
        &format!(
            "CREATE EXTERNAL TABLE c STORED AS AUDIO LOCATION '{}'; \
             SELECT file_name, format, sample_rate, channels, duration_s, error FROM c",
            corpus.display()
        ),
    )
    .await;
    let truth = read_csv(&corpus.join("truth.csv"));
    assert_eq!(batch.num_rows(), truth.len());
    let names = strings(&batch, "file_name");
    for row in &truth {
        let file = &row["file"];
        let i = names
            .iter()
            .position(|n| n.as_deref() == Some(file.as_str()))
            .unwrap();
        assert_eq!(strings(&batch, "error")[i], None, "{file}");
        let format = strings(&batch, "format")[i].clone().unwrap();
        let expected_format = if row["format"] == "m4a" {
            "mp4"
        } else {
            row["format"].as_str()
        };
        assert_eq!(format, expected_format, "{file}");
        let rate = batch
            .column_by_name("sample_rate")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(i);
        assert_eq!(rate.to_string(), row["sample_rate"], "{file}");
        let ch = batch
            .column_by_name("channels")
            .unwrap()
            .as_primitive::<Int32Type>()
            .value(i);
        assert_eq!(ch.to_string(), row["channels"], "{file}");
        let d = batch
            .column_by_name("duration_s")
            .unwrap()
            .as_primitive::<Float64Type>()
            .value(i);
        let truth: f64 = row["duration_s"].parse().unwrap();
        assert!((d - truth).abs() <= 0.05, "{file}: duration {d} vs {truth}");
    }
}

/// The analysis columns through SQL on the whole corpus: every file analysed without error,
/// tempo and key at the floors the udf crate's corpus test holds its extractors to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_analysis_matches_truth() {
    let Some(truth) = corpus::load() else {
        return;
    };
    let dir = std::fs::canonicalize(corpus::dir()).unwrap();
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), &[&dir]).await;
    let batch = query(
        &lake,
        &format!(
            "CREATE EXTERNAL TABLE c STORED AS AUDIO LOCATION '{}'; \
             SELECT file_name, bpm, key, mode, loudness_lufs, error FROM c",
            dir.display()
        ),
    )
    .await;
    assert_eq!(batch.num_rows(), truth.len());
    let names = strings(&batch, "file_name");
    let (keys, modes) = (strings(&batch, "key"), strings(&batch, "mode"));
    let bpm = batch
        .column_by_name("bpm")
        .unwrap()
        .as_primitive::<Float64Type>();
    let lufs = batch
        .column_by_name("loudness_lufs")
        .unwrap()
        .as_primitive::<Float64Type>();
    let (mut tempo_hits, mut key_hits, mut keyed) = (0, 0, 0);
    for entry in &truth {
        let file = &entry.file;
        let i = names
            .iter()
            .position(|n| n.as_deref() == Some(file.as_str()))
            .unwrap();
        assert_eq!(strings(&batch, "error")[i], None, "{file}");
        assert!(lufs.is_valid(i) && bpm.is_valid(i), "{file}");
        tempo_hits += usize::from(corpus::accuracy2(bpm.value(i), entry.bpm));
        if let Some(key) = entry.key {
            keyed += 1;
            let ours = keys[i]
                .as_deref()
                .and_then(corpus::pitch_class)
                .zip(modes[i].as_deref().map(|m| m == "minor"));
            key_hits += usize::from(ours == Some(key));
        }
    }
    let acc2 = tempo_hits as f64 / truth.len() as f64;
    let exact = key_hits as f64 / keyed as f64;
    assert!(acc2 >= 0.98, "tempo Accuracy2 {acc2:.3}");
    assert!(exact >= 0.80, "key exact {exact:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_is_capped_and_accounted_in_the_memory_pool() {
    let store = tempfile::tempdir().unwrap();
    let music =
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/music")).unwrap();
    let flac = music.join("c_major_90.flac"); // 16 s at 48 kHz: 768,000 samples, 3 MB
    let error = |lake: AudioLake, sql: String| async move {
        match lake.sql(&sql).await {
            Err(e) => e.to_string(),
            Ok(frame) => frame.collect().await.unwrap_err().to_string(),
        }
    };

    // Under a 1 MB memory limit the 6 MB of samples and column are refused, not allocated.
    let small = AudioLake::builder()
        .store(store.path().to_str().unwrap())
        .allow_location(music.to_str().unwrap())
        .memory_limit(1 << 20)
        .build()
        .await
        .unwrap();
    let sql = format!("SELECT decode('{}')", flac.display());
    let message = error(small, sql.clone()).await;
    assert!(
        message.contains("Resources exhausted") && message.contains("decode"),
        "{message}"
    );

    // Without a limit it decodes; a lower decode_max_seconds refuses the file.
    let lake = open(store.path(), &[&music]).await;
    let batch = query(&lake, &sql).await;
    assert_eq!(batch.column(0).as_list::<i32>().value(0).len(), 768_000);
    lake.sql("SET audiolake.decode_max_seconds = 10")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        error(lake, sql).await,
        format!(
            "Execution error: decode('{}'): the file holds more than 10 s of audio at 48000 Hz, \
             the most one call returns; raise audiolake.decode_max_seconds or ask for a lower \
             sample rate",
            flac.display()
        )
    );
}

/// The scan is DataFusion's `DataSourceExec` over the AUDIO file source (the shape Ballista
/// splits into tasks): files in groups by a hash of their path, the row count exact in the
/// statistics, bytes read in `EXPLAIN ANALYZE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_is_a_file_source_grouped_by_path() {
    let music = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(music.path()).unwrap();
    for i in 0..5 {
        write_wav(&dir.join(format!("tone{i}.wav")), 1, 440.0 + f64::from(i));
    }
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), &[&dir]).await;
    lake.sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS AUDIO LOCATION '{}'",
        dir.display()
    ))
    .await
    .unwrap();
    let explain = |sql: &'static str| {
        let lake = &lake;
        async move {
            let plan = query(lake, sql).await;
            let lines: Vec<String> = strings(&plan, "plan").into_iter().flatten().collect();
            lines.join("\n")
        }
    };
    let plan = explain("EXPLAIN SELECT path, bpm FROM t").await;
    assert!(
        plan.contains("DataSourceExec: file_groups={4 groups:"),
        "{plan}"
    );
    assert!(plan.contains("file_type=audio"), "{plan}");
    assert!(plan.contains("reads=audio (rhythm)"), "{plan}");
    let plan = explain("EXPLAIN SELECT path FROM t").await;
    assert!(plan.contains("DataSourceExec: partitions=1"), "{plan}");

    // Five files of 1 s, 16-bit stereo at 44.1 kHz, read whole; then from the store.
    let reading = |sql: &'static str| {
        let lake = &lake;
        async move {
            let frame = lake.sql(sql).await.unwrap();
            let task = Arc::new(frame.task_ctx());
            let plan = frame.create_physical_plan().await.unwrap();
            let rows: usize = collect(Arc::clone(&plan), task)
                .await
                .unwrap()
                .iter()
                .map(|b| b.num_rows())
                .sum();
            (rows, bytes_read(&plan))
        }
    };
    let (rows, bytes) = reading("SELECT path, bpm FROM t").await;
    assert_eq!(rows, 5);
    assert!(bytes >= 5 * 44_100 * 4, "{bytes}");
    assert_eq!(reading("SELECT path, bpm FROM t").await, (5, 0));

    // One row per file: the statistics say how many rows, exactly.
    let frame = lake.sql("SELECT path, bpm FROM t").await.unwrap();
    let mut plan = frame.create_physical_plan().await.unwrap();
    while plan.name() != "DataSourceExec" {
        plan = Arc::clone(plan.children()[0]);
    }
    let statistics = StatisticsContext::new()
        .compute(plan.as_ref(), &StatisticsArgs::new())
        .unwrap();
    assert_eq!(statistics.num_rows, Precision::Exact(5));
    let batch = query(&lake, "SELECT count(*) AS n FROM t").await;
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 5);
}

/// A query dropped while it decodes stops reading the file at the decoder's next read, and
/// stores nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_stops_decoding() {
    let music = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(music.path()).unwrap();
    write_wav(&dir.join("long.wav"), 600, 440.0); // 10 minutes, 106 MB
    let size = 44 + 44_100 * 600 * 4;
    let store = tempfile::tempdir().unwrap();
    let (lake, counting) = open_counting(store.path(), &dir).await;
    let frame = lake
        .sql("SELECT bpm, key, loudness_lufs, spectral_centroid_hz, mfcc FROM t")
        .await
        .unwrap();
    let mut stream = frame.execute_stream().await.unwrap();
    let reading = tokio::spawn(async move { stream.next().await.map(|b| b.map(|b| b.num_rows())) });
    let mut read = 0;
    let started = std::time::Instant::now();
    while read < 4 << 20 {
        assert!(
            started.elapsed().as_secs() < 120,
            "the decode did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        read += counting.take().values().sum::<u64>();
    }
    reading.abort();
    assert!(reading.await.unwrap_err().is_cancelled());
    // The decoder notices at its next read; then nothing more is fetched.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    read += counting.take().values().sum::<u64>();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let after = counting.take();
    assert!(after.is_empty(), "reading went on: {after:?}");
    assert!(read < size, "the whole file was read: {read} bytes");
    let stats = lake.engine().feature_store().stats();
    assert_eq!(stats.analyzed(), 0);
    assert_eq!(
        stats
            .parts_written
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
