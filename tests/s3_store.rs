//! The store itself on S3 (`.store("s3://bucket/lake")`): the catalog and the feature store,
//! configured only by the standard `AWS_*` environment variables, against a real S3 API server
//! (moto's server mode).
//!
//! Environment variables are process-wide, so this binary holds a single test that sets them
//! before any runtime thread exists. Without `moto_server` on the PATH it prints why and passes.

use std::sync::Arc;

use audiolake::datafusion::arrow::array::{Array, AsArray};
use audiolake::datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use audiolake::{AudioLake, AudioLakeBuilder};
use audiolake_testkit::layout::group_dir;
use audiolake_testkit::moto::{self, Moto};
use audiolake_testkit::query::query;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

const BUCKET: &str = "audiolake-store";

fn builder(allow_music: bool) -> AudioLakeBuilder {
    let builder = AudioLake::builder()
        .store(format!("s3://{BUCKET}/lake"))
        .target_partitions(2);
    match allow_music {
        true => builder.allow_location(format!("s3://{BUCKET}/music/")),
        false => builder,
    }
}

async fn open(allow_music: bool) -> AudioLake {
    builder(allow_music).build().await.unwrap()
}

async fn catalog_keys(client: &Arc<dyn ObjectStore>) -> Vec<String> {
    let prefix = ObjectPath::from("lake/catalog/tables");
    let mut keys: Vec<String> = client
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Reads the table the way the first engine did and checks a few known values.
async fn check_music(lake: &AudioLake) {
    let batch = query(
        lake,
        "SELECT file_name, sample_rate, channels, duration_s, title, error FROM music \
         WHERE file_name IN ('tagged.flac', 'nested.flac', 'garbage.ogg') ORDER BY file_name",
    )
    .await;
    let names = batch
        .column_by_name("file_name")
        .unwrap()
        .as_string::<i32>();
    let names: Vec<&str> = (0..names.len()).map(|i| names.value(i)).collect();
    assert_eq!(names, ["garbage.ogg", "nested.flac", "tagged.flac"]);
    let rates = batch
        .column_by_name("sample_rate")
        .unwrap()
        .as_primitive::<Int32Type>();
    let channels = batch
        .column_by_name("channels")
        .unwrap()
        .as_primitive::<Int32Type>();
    let durations = batch
        .column_by_name("duration_s")
        .unwrap()
        .as_primitive::<Float64Type>();
    let titles = batch.column_by_name("title").unwrap().as_string::<i32>();
    let errors = batch.column_by_name("error").unwrap().as_string::<i32>();
    // garbage.ogg: an error row.
    assert!(errors.is_valid(0) && rates.is_null(0) && durations.is_null(0));
    // sub/dir/nested.flac: 32 kHz mono, 1.0 s.
    assert_eq!((rates.value(1), channels.value(1)), (32000, 1));
    assert_eq!(durations.value(1), 1.0);
    assert_eq!(titles.value(1), "Nested FLAC");
    assert!(errors.is_null(1));
    // tagged.flac: 48 kHz stereo, 1.5 s.
    assert_eq!((rates.value(2), channels.value(2)), (48000, 2));
    assert_eq!(durations.value(2), 1.5);
    assert_eq!(titles.value(2), "Fixture FLAC");
    assert!(errors.is_null(2));

    let batch = query(lake, "SELECT count(*) FROM music").await;
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 14);
}

#[test]
fn store_on_s3_from_environment_variables() {
    let Some(moto) = Moto::start() else {
        return;
    };
    // While this is the only thread of the test binary's test (one test in this file).
    moto.export_env();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(&moto));
}

/// Analysis columns of every file (the fixtures that are not audio give NULLs).
const ANALYSIS: &str = "SELECT file_name, rms_dbfs, decoded_duration_s FROM music ORDER BY path";

/// The three files whose MFCCs are nearest to tagged.flac's, through the index.
const NEAREST: &str = "SELECT file_name FROM music ORDER BY mfcc <-> \
    (SELECT mfcc FROM music WHERE file_name = 'tagged.flac') LIMIT 3";

async fn run(moto: &Moto) {
    let analyzed;
    let nearest;
    moto.create_bucket(BUCKET);
    let client = moto.client(BUCKET);
    moto::upload_fixtures(&client, "music").await;

    {
        let lake = open(true).await;
        assert!(lake.engine().warnings().is_empty());
        assert_eq!(
            lake.engine().store_url().as_str(),
            format!("s3://{BUCKET}/lake")
        );
        // No aws.* options: the table reads with the same environment as the store.
        query(
            &lake,
            &format!("CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION 's3://{BUCKET}/music/'"),
        )
        .await;
        check_music(&lake).await;
        analyzed = query(&lake, ANALYSIS).await;
        let stats = lake.engine().feature_store().stats();
        assert_eq!((stats.analyzed(), stats.from_store()), (14, 0));
    }

    // The results went to the bucket as Parquet parts.
    let parts: Vec<String> = client
        .list(Some(&ObjectPath::from(format!(
            "lake/features/{}",
            group_dir("loudness")
        ))))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    assert!(
        !parts.is_empty() && parts.iter().all(|p| p.ends_with(".parquet")),
        "{parts:?}"
    );

    // The catalog was written into the bucket, next to nothing else.
    assert_eq!(
        catalog_keys(&client).await,
        ["lake/catalog/tables/music.json"]
    );
    let record = client
        .get(&ObjectPath::from("lake/catalog/tables/music.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let record = String::from_utf8(record.to_vec()).unwrap();
    assert!(
        record.contains(&format!("LOCATION 's3://{BUCKET}/music/'")),
        "{record}"
    );

    // A second engine on the same store finds the table.
    let build_cache = tempfile::tempdir().unwrap();
    {
        let lake = builder(true)
            .index_cache(build_cache.path())
            .build()
            .await
            .unwrap();
        assert!(
            lake.engine().warnings().is_empty(),
            "{:?}",
            lake.engine().warnings()
        );
        check_music(&lake).await;
        // ... and the analysis results: nothing is decoded again.
        assert_eq!(query(&lake, ANALYSIS).await, analyzed);
        let stats = lake.engine().feature_store().stats();
        assert_eq!((stats.analyzed(), stats.from_store()), (0, 14));
        let stored = query(&lake, "SELECT count(*) FROM features_loudness").await;
        assert_eq!(stored.column(0).as_primitive::<Int64Type>().value(0), 14);
        query(&lake, "CREATE INDEX music_mfcc ON music USING hnsw (mfcc)").await;
        nearest = query(&lake, NEAREST).await;
        assert_eq!(nearest.num_rows(), 3);
    }
    // The build's graph was written into the cache folder, then uploaded from there whole.
    let [written] = std::fs::read_dir(build_cache.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let uploaded: Vec<_> = client
        .list(Some(&ObjectPath::from("lake/indexes/music_mfcc")))
        .try_collect()
        .await
        .unwrap();
    let graph = uploaded
        .iter()
        .find(|m| m.location.as_ref().ends_with(".hnsw"))
        .unwrap();
    assert_eq!(graph.size, std::fs::metadata(&written).unwrap().len());
    let bytes = client
        .get(&graph.location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes, std::fs::read(&written).unwrap());

    // A fresh engine maps a copy of the index's graph in its cache folder and answers the
    // same; dropping the index deletes the copy.
    {
        let cache = tempfile::tempdir().unwrap();
        let lake = AudioLake::builder()
            .store(format!("s3://{BUCKET}/lake"))
            .allow_location(format!("s3://{BUCKET}/music/"))
            .index_cache(cache.path())
            .build()
            .await
            .unwrap();
        let copies = || std::fs::read_dir(cache.path()).unwrap().flatten().count();
        assert_eq!(copies(), 0);
        assert_eq!(query(&lake, NEAREST).await, nearest);
        assert_eq!(copies(), 1);
        query(&lake, "DROP INDEX music_mfcc").await;
        assert_eq!(copies(), 0);
    }

    // Without the music prefix allowed the table is not restored, and the warning says why.
    {
        let lake = open(false).await;
        let warnings = lake.engine().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!(
                "table music was not restored: location 's3://{BUCKET}/music/' is outside the allowed locations (s3://{BUCKET}/lake/)"
            )),
            "{warnings:?}"
        );
    }

    // DROP TABLE removes the record from the bucket; the next engine has no table.
    {
        let lake = open(true).await;
        query(&lake, "DROP TABLE music").await;
    }
    assert!(catalog_keys(&client).await.is_empty());
    let lake = open(true).await;
    let err = lake
        .sql("SELECT * FROM music")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table 'datafusion.public.music' not found"),
        "{err}"
    );
}
