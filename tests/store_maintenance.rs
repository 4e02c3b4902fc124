//! Maintenance and concurrency of the store on a local directory: compaction beside readers,
//! retention of replaced parts, folders of newer binaries left alone, two compactions at once,
//! malformed parts and index definitions set aside, and index rebuilds beside queries and each
//! other.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use audiolake::datafusion::arrow::array::{
    ArrayRef, AsArray, Float32Builder, Int64Array, ListBuilder, RecordBatch,
};
use audiolake::datafusion::arrow::compute::concat_batches;
use audiolake::datafusion::arrow::datatypes::Int64Type;
use audiolake::datafusion::physical_plan::collect;
use audiolake::{AudioLake, FlushPolicy};
use audiolake_testkit::query::{explain, query};
use audiolake_testkit_audio::tone::write_wav;

struct Setup {
    _dir: tempfile::TempDir,
    music: PathBuf,
    vectors: PathBuf,
    store: PathBuf,
}

/// Four one-second tones, a folder for vector tables and a store.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let music = root.join("music");
    let vectors = root.join("vectors");
    std::fs::create_dir_all(&music).unwrap();
    std::fs::create_dir_all(&vectors).unwrap();
    for i in 0..4 {
        write_wav(
            &music.join(format!("tone{i}.wav")),
            1,
            220.0 * f64::from(i + 1),
        );
    }
    Setup {
        store: root.join("store"),
        music,
        vectors,
        _dir: dir,
    }
}

/// An engine over the store, publishing after every file, with table `t` over the music.
async fn open_with(setup: &Setup, retention: Duration) -> AudioLake {
    let lake = AudioLake::builder()
        .store(setup.store.to_str().unwrap())
        .allow_location(setup.music.to_str().unwrap())
        .allow_location(setup.vectors.to_str().unwrap())
        .target_partitions(2)
        .flush_policy(FlushPolicy {
            files: 1,
            ..FlushPolicy::default()
        })
        .compact_retention(retention)
        .build()
        .await
        .unwrap();
    lake.register_audio_table("t", setup.music.to_str().unwrap())
        .await
        .unwrap();
    lake
}

async fn open(setup: &Setup) -> AudioLake {
    open_with(setup, audiolake::DEFAULT_RETENTION).await
}

/// The batch as text lines, for comparing results.
fn lines(batch: &RecordBatch) -> Vec<String> {
    datafusion::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))
        .unwrap()
        .to_string()
        .lines()
        .map(str::to_owned)
        .collect()
}

const LOUDNESS: &str = "SELECT path, rms_dbfs, analyzed_at FROM features_loudness ORDER BY path";

/// The folder of the loudness group's current version.
fn loudness_dir(store: &Path) -> PathBuf {
    let group = store.join("features/loudness");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&group)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    versions.remove(0)
}

/// File names in `dir` ending with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_parts_stay_for_readers_until_their_retention_is_over() {
    let setup = setup();
    let lake = open(&setup).await;
    query(&lake, "SELECT file_name, rms_dbfs FROM t").await;
    let dir = loudness_dir(&setup.store);
    let before = files(&dir, ".parquet");
    assert!(before.len() >= 2, "{before:?}");

    // Another engine plans a read of the parts (it lists them), then the compaction runs.
    let reader = open(&setup).await;
    let expected = query(&reader, LOUDNESS).await;
    assert_eq!(expected.num_rows(), 4);
    let frame = reader.sql(LOUDNESS).await.unwrap();
    let task = Arc::new(frame.task_ctx());
    let planned = frame.create_physical_plan().await.unwrap();
    let report = lake.engine().compact_store().await.unwrap();
    assert_eq!(report.parts_merged, before.len());
    assert_eq!(report.rows_kept, 4);
    assert_eq!(report.replaced_parts_removed, 0);
    let read = collect(planned, task).await.unwrap();
    let schema = read[0].schema();
    assert_eq!(
        lines(&concat_batches(&schema, &read).unwrap()),
        lines(&expected)
    );

    // The replaced parts are still there, named in one record, and no longer read.
    let after = files(&dir, ".parquet");
    assert_eq!(after.len(), before.len() + 1);
    assert!(before.iter().all(|p| after.contains(p)));
    assert_eq!(files(&dir, ".json").len(), 1);
    let fresh = open(&setup).await;
    assert_eq!(lines(&query(&fresh, LOUDNESS).await), lines(&expected));
    let plan = explain(&fresh, LOUDNESS).await;
    assert_eq!(plan.matches(".parquet").count(), 1, "{plan}");

    // Past the retention (zero here), the next compaction removes them and the record.
    let impatient = open_with(&setup, Duration::ZERO).await;
    let report = impatient.engine().compact_store().await.unwrap();
    assert_eq!(report.replaced_parts_removed, before.len());
    assert_eq!(report.parts_merged, 0);
    assert_eq!(files(&dir, ".parquet").len(), 1);
    assert_eq!(files(&dir, ".json"), Vec::<String>::new());
    assert_eq!(lines(&query(&fresh, LOUDNESS).await), lines(&expected));
    assert_eq!(fresh.engine().store_problems(), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_leaves_folders_it_does_not_know() {
    let setup = setup();
    let lake = open_with(&setup, Duration::ZERO).await;
    query(&lake, "SELECT file_name, rms_dbfs FROM t").await;
    let features = setup.store.join("features");
    let newer = features.join("loudness/v99");
    let unknown = features.join("texture/v1");
    let older = features.join("loudness/v0");
    for dir in [&newer, &unknown, &older] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("part-1.parquet"), b"from another binary").unwrap();
    }
    let report = lake.engine().compact_store().await.unwrap();
    assert_eq!(report.stale_objects_removed, 1);
    assert_eq!(files(&newer, ".parquet"), ["part-1.parquet"]);
    assert_eq!(files(&unknown, ".parquet"), ["part-1.parquet"]);
    assert_eq!(files(&older, ".parquet"), Vec::<String>::new());
    assert_eq!(query(&lake, LOUDNESS).await.num_rows(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactions_at_once_keep_every_row_once() {
    let setup = setup();
    let writer = open(&setup).await;
    query(&writer, "SELECT file_name, rms_dbfs FROM t").await;
    let expected = query(&writer, LOUDNESS).await;
    for round in 0..3 {
        // New parts each round: a file rewritten and analysed again.
        write_wav(&setup.music.join("tone0.wav"), 1, 300.0 + f64::from(round));
        query(&writer, "SELECT file_name, rms_dbfs FROM t").await;
        let (a, b) = (
            open_with(&setup, Duration::ZERO).await,
            open_with(&setup, Duration::ZERO).await,
        );
        let (ra, rb) = tokio::join!(a.engine().compact_store(), b.engine().compact_store());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra.parts_merged + rb.parts_merged >= 2, "{ra:?} {rb:?}");
    }
    let reader = open(&setup).await;
    let counts = query(
        &reader,
        "SELECT count(*), count(DISTINCT path) FROM features_loudness",
    )
    .await;
    assert_eq!(counts.column(0).as_primitive::<Int64Type>().value(0), 4);
    assert_eq!(counts.column(1).as_primitive::<Int64Type>().value(0), 4);
    let now = query(&reader, LOUDNESS).await;
    assert_eq!(now.num_rows(), expected.num_rows());
    // Everything is still answered from the store.
    query(&reader, "SELECT file_name, rms_dbfs FROM t").await;
    assert_eq!(reader.engine().feature_store().stats().analyzed(), 0);
    assert_eq!(reader.engine().store_problems(), Vec::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_parts_are_set_aside_and_reported() {
    let setup = setup();
    let lake = open(&setup).await;
    let expected = query(
        &lake,
        "SELECT file_name, rms_dbfs FROM t ORDER BY file_name",
    )
    .await;
    let good = query(&lake, LOUDNESS).await;
    drop(lake);

    let dir = loudness_dir(&setup.store);
    std::fs::write(dir.join("part-empty.parquet"), b"").unwrap();
    std::fs::write(
        dir.join("part-garbage.parquet"),
        b"PAR1 not parquet at all PAR1",
    )
    .unwrap();
    // A real Parquet file of another shape.
    let other = setup.vectors.join("other.parquet");
    let lake = open(&setup).await;
    query(
        &lake,
        &format!(
            "COPY (SELECT 1 AS x, 'a' AS path) TO '{}' STORED AS PARQUET",
            other.display()
        ),
    )
    .await;
    std::fs::copy(&other, dir.join("part-wrong.parquet")).unwrap();

    assert_eq!(
        lines(
            &query(
                &lake,
                "SELECT file_name, rms_dbfs FROM t ORDER BY file_name"
            )
            .await
        ),
        lines(&expected)
    );
    assert_eq!(lake.engine().feature_store().stats().analyzed(), 0);
    assert_eq!(lines(&query(&lake, LOUDNESS).await), lines(&good));
    let mut problems: Vec<String> = lake
        .engine()
        .store_problems()
        .into_iter()
        .map(|p| {
            assert!(
                p.problem
                    .starts_with("not a readable part of feature group loudness"),
                "{p:?}"
            );
            Path::new(&p.object)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    problems.sort();
    assert_eq!(
        problems,
        [
            "part-empty.parquet",
            "part-garbage.parquet",
            "part-wrong.parquet"
        ]
    );

    // Compaction merges the good parts and leaves the bad ones where they are.
    let impatient = open_with(&setup, Duration::ZERO).await;
    impatient.engine().compact_store().await.unwrap();
    let left = files(&dir, ".parquet");
    assert_eq!(left.len(), 4, "{left:?}");
    for bad in [
        "part-empty.parquet",
        "part-garbage.parquet",
        "part-wrong.parquet",
    ] {
        assert!(left.iter().any(|p| p == bad), "{left:?}");
    }
    assert_eq!(lines(&query(&impatient, LOUDNESS).await), lines(&good));
}

// Vector indexes.

const DIMS: usize = 8;

/// Row `id`'s vector: repeatable, spread over a few clusters.
fn vector(id: i64) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id as u64 + 1);
    (0..DIMS)
        .map(|d| {
            state ^= state >> 29;
            state = state.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            ((id % 5) as f32) * 2.0 + (state >> 40) as f32 / (1u64 << 24) as f32 + d as f32 * 0.01
        })
        .collect()
}

/// Writes rows `ids` as the Parquet file `name` of table `vecs`.
async fn write_vectors(lake: &AudioLake, setup: &Setup, name: &str, ids: std::ops::Range<i64>) {
    let mut lists = ListBuilder::new(Float32Builder::new());
    for id in ids.clone() {
        lists.values().append_slice(&vector(id));
        lists.append(true);
    }
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef,
        ),
        ("v", Arc::new(lists.finish()) as ArrayRef),
    ])
    .unwrap();
    let ctx = lake.engine().session();
    ctx.deregister_table("rows_source").unwrap();
    ctx.register_batch("rows_source", batch).unwrap();
    query(
        lake,
        &format!(
            "COPY (SELECT * FROM rows_source) TO '{}' STORED AS PARQUET",
            setup.vectors.join(name).display()
        ),
    )
    .await;
}

async fn create_vecs(lake: &AudioLake, setup: &Setup) {
    query(
        lake,
        &format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS vecs STORED AS PARQUET LOCATION '{}/'",
            setup.vectors.display()
        ),
    )
    .await;
}

async fn try_run(lake: &AudioLake, sql: &str) -> Result<(), String> {
    let frame = lake.sql(sql).await.map_err(|e| e.to_string())?;
    frame.collect().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The ids of the 10 rows nearest `id`'s vector by L2, from the index.
async fn nearest(lake: &AudioLake, id: i64) -> Vec<i64> {
    query(lake, "SET hnsw.ef_search = 400").await;
    let q: Vec<String> = vector(id).iter().map(f32::to_string).collect();
    let batch = query(
        lake,
        &format!(
            "SELECT id FROM vecs ORDER BY v <-> '[{}]' LIMIT 10",
            q.join(",")
        ),
    )
    .await;
    batch
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

fn brute_force(rows: std::ops::Range<i64>, id: i64) -> Vec<i64> {
    let q = vector(id);
    let mut scored: Vec<(f64, i64)> = rows
        .map(|r| {
            let d: f64 = vector(r)
                .iter()
                .zip(&q)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum();
            (d, r)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    scored.into_iter().take(10).map(|(_, r)| r).collect()
}

/// Every build file the stored definition of `name` names exists.
fn check_builds(store: &Path, name: &str) {
    let text = std::fs::read_to_string(store.join(format!("indexes/{name}.json"))).unwrap();
    let definition: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut builds = vec![definition["build"].as_i64().unwrap()];
    builds.extend(definition["previous"].as_i64());
    for build in builds {
        for suffix in ["hnsw", "keys.json"] {
            let file = store.join(format!("indexes/{name}/{build}.{suffix}"));
            assert!(file.exists(), "{} is missing", file.display());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_on_the_previous_build_still_answers_after_a_rebuild() {
    let setup = setup();
    let a = open(&setup).await;
    write_vectors(&a, &setup, "part-0.parquet", 0..300).await;
    create_vecs(&a, &setup).await;
    query(
        &a,
        "CREATE INDEX vecs_l2 ON vecs USING hnsw (v vector_l2_ops)",
    )
    .await;
    // B knows the first build but has not loaded it yet; A rebuilds after rows are added.
    let b = open(&setup).await;
    write_vectors(&a, &setup, "part-1.parquet", 300..600).await;
    assert_eq!(nearest(&a, 7).await, brute_force(0..600, 7));
    assert_eq!(nearest(&b, 7).await, brute_force(0..600, 7));
    check_builds(&setup.store, "vecs_l2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilds_at_once_leave_a_usable_index() {
    let setup = setup();
    let a = open(&setup).await;
    write_vectors(&a, &setup, "part-0.parquet", 0..200).await;
    create_vecs(&a, &setup).await;
    // Two creations of one index at once, in one engine and in two.
    let b = open(&setup).await;
    let create = "CREATE INDEX vecs_l2 ON vecs USING hnsw (v vector_l2_ops)";
    let (x, y, z) = tokio::join!(
        try_run(&a, create),
        try_run(&a, create),
        try_run(&b, create)
    );
    for result in [x, y, z] {
        // An engine that sees the index published already says so; no other failure.
        if let Err(e) = result {
            assert_eq!(
                e,
                "Error during planning: relation \"vecs_l2\" already exists"
            );
        }
    }
    check_builds(&setup.store, "vecs_l2");
    // Rebuilds at once, each engine finding the table changed.
    for (round, rows) in [(1, 200..400), (2, 400..600), (3, 600..800)] {
        write_vectors(&a, &setup, &format!("part-{round}.parquet"), rows.clone()).await;
        let (x, y) = tokio::join!(nearest(&a, 3), nearest(&b, 3));
        assert_eq!(x, brute_force(0..rows.end, 3));
        assert_eq!(y, brute_force(0..rows.end, 3));
        check_builds(&setup.store, "vecs_l2");
    }
    let fresh = open(&setup).await;
    assert_eq!(nearest(&fresh, 11).await, brute_force(0..800, 11));
    assert_eq!(fresh.engine().store_problems(), Vec::new());
    assert!(!setup.store.join("indexes/vecs_l2.lock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_index_definition_is_set_aside() {
    let setup = setup();
    let a = open(&setup).await;
    write_vectors(&a, &setup, "part-0.parquet", 0..200).await;
    create_vecs(&a, &setup).await;
    query(
        &a,
        "CREATE INDEX vecs_l2 ON vecs USING hnsw (v vector_l2_ops)",
    )
    .await;
    let garbage = setup.store.join("indexes/broken.json");
    std::fs::write(&garbage, b"{\"name\": \"broken\", \"table\": ").unwrap();

    let b = open(&setup).await;
    assert_eq!(b.engine().warnings(), Vec::<String>::new());
    assert_eq!(nearest(&b, 5).await, brute_force(0..200, 5));
    let problems = b.engine().store_problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].object.ends_with("indexes/broken.json"),
        "{problems:?}"
    );
    assert!(
        problems[0]
            .problem
            .starts_with("not an index definition: EOF while parsing"),
        "{problems:?}"
    );
    let indexes = query(&b, "SELECT count(*) FROM audiolake_indexes").await;
    assert_eq!(indexes.column(0).as_primitive::<Int64Type>().value(0), 1);
    assert!(garbage.exists());
}
