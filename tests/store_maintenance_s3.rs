//! Maintenance and concurrency of a store on S3 (a real S3 API server, moto): compaction beside
//! a reader that listed the parts, two compactions at once, malformed parts set aside, and two
//! engines creating one index at once (the definition's lock is an `If-None-Match` put).
//!
//! Environment variables are process-wide, so this binary holds a single test that sets them
//! before any runtime thread exists. Without `moto_server` on the PATH it prints why and passes.

use std::sync::Arc;
use std::time::Duration;

use audiolake::datafusion::arrow::array::{
    ArrayRef, AsArray, Float32Builder, Int64Array, ListBuilder, RecordBatch,
};
use audiolake::datafusion::arrow::datatypes::Int64Type;
use audiolake::datafusion::arrow::util::pretty::pretty_format_batches;
use audiolake::datafusion::physical_plan::collect;
use audiolake::{AudioLake, FlushPolicy};
use audiolake_testkit::layout::group_dir;
use audiolake_testkit::moto::{self, Moto};
use audiolake_testkit::query::query;
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const BUCKET: &str = "audiolake-maintenance";

#[test]
fn store_maintenance_on_s3() {
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

async fn open(retention: Duration) -> AudioLake {
    AudioLake::builder()
        .store(format!("s3://{BUCKET}/lake"))
        .allow_location(format!("s3://{BUCKET}/music/"))
        .allow_location(format!("s3://{BUCKET}/vectors/"))
        .target_partitions(2)
        .flush_policy(FlushPolicy {
            files: 1,
            ..FlushPolicy::default()
        })
        .compact_retention(retention)
        .build()
        .await
        .unwrap()
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

async fn keys(client: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = client
        .list(Some(&ObjectPath::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

const LOUDNESS: &str = "SELECT path, rms_dbfs, analyzed_at FROM features_loudness ORDER BY path";
/// Where the loudness group's parts are.
fn parts_dir() -> String {
    format!("lake/features/{}", group_dir("loudness"))
}

async fn run(moto: &Moto) {
    moto.create_bucket(BUCKET);
    let client = moto.client(BUCKET);
    moto::upload_fixtures(&client, "music").await;
    let lake = open(audiolake::DEFAULT_RETENTION).await;
    query(
        &lake,
        &format!("CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION 's3://{BUCKET}/music/'"),
    )
    .await;
    query(&lake, "SELECT rms_dbfs FROM music").await;
    let before = keys(&client, &parts_dir()).await;
    assert!(before.len() >= 2, "{before:?}");

    // A reader plans (lists the parts), a compaction replaces them, the reader reads.
    let reader = open(audiolake::DEFAULT_RETENTION).await;
    let expected = query(&reader, LOUDNESS).await;
    let frame = reader.sql(LOUDNESS).await.unwrap();
    let task = Arc::new(frame.task_ctx());
    let planned = frame.create_physical_plan().await.unwrap();
    let report = lake.engine().compact_store().await.unwrap();
    assert_eq!(report.parts_merged, before.len());
    let read = collect(planned, task).await.unwrap();
    assert_eq!(text(&read), text(std::slice::from_ref(&expected)));
    let after = keys(&client, &parts_dir()).await;
    assert_eq!(
        after.len(),
        before.len() + 2,
        "merged part and record: {after:?}"
    );

    // Two compactions at once, with no retention: both succeed, the rows are all there.
    query(&lake, "SELECT rms_dbfs, spectral_centroid_hz FROM music").await;
    let (a, b) = (open(Duration::ZERO).await, open(Duration::ZERO).await);
    let (ra, rb) = tokio::join!(a.engine().compact_store(), b.engine().compact_store());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.replaced_parts_removed + rb.replaced_parts_removed >= before.len());
    let fresh = open(audiolake::DEFAULT_RETENTION).await;
    assert_eq!(
        text(&[query(&fresh, LOUDNESS).await]),
        text(std::slice::from_ref(&expected))
    );

    // Malformed parts are set aside, left in place, and reported.
    for (name, bytes) in [
        ("part-empty.parquet", &b""[..]),
        ("part-garbage.parquet", &b"garbage"[..]),
    ] {
        client
            .put(
                &ObjectPath::from(format!("{}/{name}", parts_dir())),
                PutPayload::from_static(bytes),
            )
            .await
            .unwrap();
    }
    let fresh = open(audiolake::DEFAULT_RETENTION).await;
    assert_eq!(text(&[query(&fresh, LOUDNESS).await]), text(&[expected]));
    query(&fresh, "SELECT rms_dbfs FROM music").await;
    assert_eq!(fresh.engine().feature_store().stats().analyzed(), 0);
    let mut problems: Vec<String> = fresh
        .engine()
        .store_problems()
        .into_iter()
        .map(|p| p.object)
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        [
            format!("{}/part-empty.parquet", parts_dir()),
            format!("{}/part-garbage.parquet", parts_dir())
        ]
    );

    // Two engines create one index at once; the definition names files that exist.
    write_vectors(&fresh).await;
    query(
        &fresh,
        &format!("CREATE EXTERNAL TABLE vecs STORED AS PARQUET LOCATION 's3://{BUCKET}/vectors/'"),
    )
    .await;
    let (x, y) = (open(Duration::ZERO).await, open(Duration::ZERO).await);
    let create = "CREATE INDEX vecs_l2 ON vecs USING hnsw (v vector_l2_ops)";
    let (rx, ry) = tokio::join!(query(&x, create), query(&y, create));
    drop((rx, ry));
    let definition = client
        .get(&ObjectPath::from("lake/indexes/vecs_l2.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let definition: serde_json::Value = serde_json::from_slice(&definition).unwrap();
    let build = definition["build"].as_i64().unwrap();
    let files = keys(&client, "lake/indexes").await;
    for suffix in ["hnsw", "keys.json"] {
        let file = format!("lake/indexes/vecs_l2/{build}.{suffix}");
        assert!(files.contains(&file), "{file} missing from {files:?}");
    }
    assert!(!files.iter().any(|f| f.ends_with(".lock")), "{files:?}");
    let reader = open(audiolake::DEFAULT_RETENTION).await;
    let near = query(
        &reader,
        "SELECT id FROM vecs ORDER BY v <-> '[3.1,0,0,0]' LIMIT 3",
    )
    .await;
    assert_eq!(
        near.column(0).as_primitive::<Int64Type>().values().to_vec(),
        [3, 4, 2]
    );
}

/// Ten rows `id`, `v = [id, 0, 0, 0]` under `s3://<bucket>/vectors/`.
async fn write_vectors(lake: &AudioLake) {
    let mut lists = ListBuilder::new(Float32Builder::new());
    for id in 0..10 {
        lists.values().append_slice(&[id as f32, 0.0, 0.0, 0.0]);
        lists.append(true);
    }
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..10)) as ArrayRef,
        ),
        ("v", Arc::new(lists.finish()) as ArrayRef),
    ])
    .unwrap();
    lake.engine()
        .session()
        .register_batch("rows_source", batch)
        .unwrap();
    query(
        lake,
        &format!(
            "COPY (SELECT * FROM rows_source) TO 's3://{BUCKET}/vectors/part-0.parquet' \
             STORED AS PARQUET"
        ),
    )
    .await;
}
