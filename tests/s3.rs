//! AUDIO tables on S3, against a real S3 API server (moto's server mode, see
//! `testkit/src/moto.rs`): the listing, header values and tags of the fixtures read over HTTP
//! range requests, bad files as error rows, tables restored from the catalog with their `aws.*`
//! options, and the allowed-locations guard on buckets and prefixes.
//!
//! Without `moto_server` on the PATH every test prints why and passes; CI installs moto.

use std::collections::HashMap;
use std::path::Path;

use audiolake::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use audiolake::datafusion::arrow::datatypes::Int64Type;
use audiolake::AudioLake;
use audiolake_testkit::moto::{upload_fixtures, Moto};
use audiolake_testkit::paths::fixtures;
use audiolake_testkit::query::{count, floats, ints, query, strings};

const BUCKET: &str = "audiolake-music";

/// fixtures.csv, one map per file.
fn expected_rows() -> Vec<HashMap<String, String>> {
    csv::Reader::from_path(fixtures().join("fixtures.csv"))
        .unwrap()
        .deserialize()
        .map(|row| row.unwrap())
        .collect()
}

/// A lake with a local store in `dir` that may read `s3://<BUCKET>/fixtures/`; its secrets
/// file is in `dir` too, beside the store.
async fn open_lake(dir: &Path) -> AudioLake {
    AudioLake::builder()
        .store(dir.join("lake").to_str().unwrap())
        .secrets_file(dir.join("secrets.json"))
        .allow_location(format!("s3://{BUCKET}/fixtures/"))
        .target_partitions(2)
        .build()
        .await
        .unwrap()
}

/// Moto with the fixtures uploaded under `s3://<BUCKET>/fixtures/`.
async fn moto_with_fixtures() -> Option<Moto> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET);
    let uploaded = upload_fixtures(&moto.client(BUCKET), "fixtures").await;
    // The upload itself must carry what the listing has to skip or find.
    for must in [".hidden.wav", "notes.txt", "sub/dir/nested.flac"] {
        assert!(uploaded.iter().any(|f| f == must), "{must} not uploaded");
    }
    Some(moto)
}

fn create_table_sql(moto: &Moto, name: &str) -> String {
    format!(
        "{}; CREATE EXTERNAL TABLE {name} STORED AS AUDIO LOCATION 's3://{BUCKET}/fixtures/' {}",
        moto.create_secret(),
        moto.table_options()
    )
}

/// Checks every row of `batch` (all header and tag columns, plus path, file_name, size_bytes
/// and error) against fixtures.csv.
fn assert_matches_fixtures(batch: &RecordBatch) {
    let expected = expected_rows();
    assert_eq!(
        batch.num_rows(),
        expected.len(),
        "rows: hidden and non-audio files skipped, nested file listed"
    );
    let paths = strings(batch, "path");
    let mut listed: Vec<String> = paths.iter().map(|p| p.clone().unwrap()).collect();
    listed.sort();
    let mut wanted: Vec<String> = expected
        .iter()
        .map(|r| format!("s3://{BUCKET}/fixtures/{}", r["file"]))
        .collect();
    wanted.sort();
    assert_eq!(listed, wanted);

    let sizes = batch
        .column_by_name("size_bytes")
        .unwrap()
        .as_primitive::<Int64Type>();
    let text_columns = ["format", "codec", "title", "artist", "album", "tag_genre"];
    let int_columns = [
        "sample_rate",
        "channels",
        "bits_per_sample",
        "track_number",
        "year",
    ];
    for row in &expected {
        let file = row["file"].as_str();
        let url = format!("s3://{BUCKET}/fixtures/{file}");
        let i = paths
            .iter()
            .position(|p| p.as_deref() == Some(url.as_str()))
            .unwrap();
        let local_size = std::fs::metadata(fixtures().join(file)).unwrap().len();
        assert_eq!(sizes.value(i) as u64, local_size, "{file}: size_bytes");
        let name = file.rsplit('/').next().unwrap();
        assert_eq!(
            strings(batch, "file_name")[i].as_deref(),
            Some(name),
            "{file}"
        );
        let error = strings(batch, "error")[i].clone();

        if row["bad"] == "true" {
            let error = error.unwrap_or_else(|| panic!("{file}: bad file without an error"));
            assert!(!error.trim().is_empty(), "{file}: empty error message");
            for col in text_columns
                .iter()
                .chain(&int_columns)
                .chain(&["duration_s"])
            {
                assert!(
                    batch.column_by_name(col).unwrap().is_null(i),
                    "{file}: {col} should be NULL on an error row"
                );
            }
            continue;
        }

        assert_eq!(error, None, "{file}: unexpected error");
        for col in text_columns {
            // fixtures.csv leaves missing tags empty; the table has NULL there. Its `genre`
            // is the table's `tag_genre`.
            let csv_column = if col == "tag_genre" { "genre" } else { col };
            let want = Some(row[csv_column].as_str()).filter(|v| !v.is_empty());
            assert_eq!(strings(batch, col)[i].as_deref(), want, "{file}: {col}");
        }
        for col in int_columns {
            let want = Some(row[col].as_str())
                .filter(|v| !v.is_empty())
                .map(|v| v.parse::<i32>().unwrap());
            assert_eq!(ints(batch, col)[i], want, "{file}: {col}");
        }
        let duration =
            floats(batch, "duration_s")[i].unwrap_or_else(|| panic!("{file}: duration_s is NULL"));
        let truth: f64 = row["duration_s"].parse().unwrap();
        let lossless = !row["bits_per_sample"].is_empty();
        // Lossless: frames / rate exactly. Lossy: within a frame or two of encoder padding.
        let tolerance = if lossless { 1e-9 } else { 0.06 };
        assert!(
            (duration - truth).abs() <= tolerance,
            "{file}: duration_s {duration} vs {truth} (tolerance {tolerance})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_table_lists_and_probes_the_fixtures() {
    let Some(moto) = moto_with_fixtures().await else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let lake = open_lake(store.path()).await;
    lake.sql(&create_table_sql(&moto, "s3music"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    // Listing only.
    let n = count(&query(&lake, "SELECT count(*) FROM s3music").await);
    assert_eq!(n, expected_rows().len() as i64);
    let batch = query(
        &lake,
        "SELECT path FROM s3music WHERE file_name LIKE '%.flac' ORDER BY path",
    )
    .await;
    assert_eq!(
        strings(&batch, "path"),
        ["sub/dir/nested.flac", "tagged.flac", "truncated.flac"]
            .map(|f| Some(format!("s3://{BUCKET}/fixtures/{f}")))
            .to_vec()
    );

    // Headers and tags of every file, read through ranged GETs.
    let batch = query(
        &lake,
        "SELECT path, file_name, size_bytes, format, codec, sample_rate, channels, \
         bits_per_sample, duration_s, title, artist, album, tag_genre, track_number, year, error \
         FROM s3music",
    )
    .await;
    assert_matches_fixtures(&batch);

    // A filter on a header column runs after probing and still sees the right values.
    let batch = query(
        &lake,
        "SELECT file_name FROM s3music WHERE sample_rate = 44100 ORDER BY file_name",
    )
    .await;
    assert_eq!(
        strings(&batch, "file_name"),
        ["cbr.mp3", "tagged.aiff", "tagged.m4a", "tagged.ogg"]
            .map(|f| Some(f.to_string()))
            .to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_table_with_options_is_restored_from_the_catalog() {
    let Some(moto) = moto_with_fixtures().await else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    {
        let lake = open_lake(store.path()).await;
        lake.sql(&create_table_sql(&moto, "s3music"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
    }
    // Reopened, the table comes back with its endpoint and credentials, and reads the same.
    let lake = open_lake(store.path()).await;
    assert!(
        lake.engine().warnings().is_empty(),
        "{:?}",
        lake.engine().warnings()
    );
    let batch = query(
        &lake,
        "SELECT path, file_name, size_bytes, format, codec, sample_rate, channels, \
         bits_per_sample, duration_s, title, artist, album, tag_genre, track_number, year, error \
         FROM s3music",
    )
    .await;
    assert_matches_fixtures(&batch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_locations_outside_the_allowed_roots_are_refused() {
    let Some(moto) = moto_with_fixtures().await else {
        return;
    };
    // Another bucket with a real audio file in it, so that only the guard can refuse it.
    let other = "audiolake-private";
    moto.create_bucket(other);
    let bytes = std::fs::read(fixtures().join("cbr.mp3")).unwrap();
    object_store::ObjectStoreExt::put(
        moto.client(other).as_ref(),
        &object_store::path::Path::from("music/cbr.mp3"),
        bytes.into(),
    )
    .await
    .unwrap();

    let store = tempfile::tempdir().unwrap();
    let lake = open_lake(store.path()).await;
    for location in [
        format!("s3://{other}/music/"),
        format!("s3://{BUCKET}/private/"),
        format!("s3://{BUCKET}/fixtures-other/"),
    ] {
        let sql = format!(
            "CREATE EXTERNAL TABLE refused STORED AS AUDIO LOCATION '{location}' {}",
            moto.table_options()
        );
        let err = match lake.sql(&sql).await {
            Ok(frame) => frame.collect().await.map(|_| ()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!(
                "location '{location}' is outside the allowed locations (file://"
            )) && err.contains(&format!("s3://{BUCKET}/fixtures/)")),
            "{location}: {err}"
        );
    }
    let err = lake
        .sql("SELECT count(*) FROM refused")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table 'datafusion.public.refused' not found"),
        "{err}"
    );

    // The same bucket is readable once allowed: the refusal above was the guard's.
    let lake = AudioLake::builder()
        .store(store.path().join("lake").to_str().unwrap())
        .secrets_file(store.path().join("secrets.json"))
        .allow_location(format!("s3://{other}/music/"))
        .build()
        .await
        .unwrap();
    let batch = query(
        &lake,
        &format!(
            "{}; CREATE EXTERNAL TABLE allowed STORED AS AUDIO \
             LOCATION 's3://{other}/music/' {}; SELECT file_name, sample_rate, title FROM allowed",
            moto.create_secret(),
            moto.table_options()
        ),
    )
    .await;
    assert_eq!(strings(&batch, "file_name"), [Some("cbr.mp3".to_string())]);
    assert_eq!(ints(&batch, "sample_rate"), [Some(44100)]);
    assert_eq!(strings(&batch, "title"), [Some("Fixture CBR".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tables_endpoint_reaches_that_table_only() {
    // Two S3 servers with a bucket of the same name: the fixtures on one, a single file on
    // the other.
    let Some(full) = moto_with_fixtures().await else {
        return;
    };
    let Some(single) = Moto::start() else {
        return;
    };
    single.create_bucket(BUCKET);
    let bytes = std::fs::read(fixtures().join("cbr.mp3")).unwrap();
    object_store::ObjectStoreExt::put(
        single.client(BUCKET).as_ref(),
        &object_store::path::Path::from("fixtures/only.mp3"),
        bytes.into(),
    )
    .await
    .unwrap();

    let store = tempfile::tempdir().unwrap();
    let counts = |lake: AudioLake| async move {
        let mut counts = Vec::new();
        for table in ["on_full", "on_single", "on_full"] {
            let batch = query(&lake, &format!("SELECT count(*) FROM {table}")).await;
            counts.push(count(&batch));
        }
        counts
    };
    let fixtures_count = expected_rows().len() as i64;
    {
        let lake = open_lake(store.path()).await;
        query(&lake, &create_table_sql(&full, "on_full")).await;
        query(&lake, &create_table_sql(&single, "on_single")).await;
        assert_eq!(counts(lake).await, [fixtures_count, 1, fixtures_count]);
    }
    // Restored from the catalog, each table still reads its own server.
    assert_eq!(
        counts(open_lake(store.path()).await).await,
        [fixtures_count, 1, fixtures_count]
    );
}
