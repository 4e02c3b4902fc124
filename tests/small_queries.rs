//! A query over a small in-memory or single-file table runs in one partition instead of
//! fanning out to `target_partitions` tasks; large inputs and audio work still fan out.

use audiolake::AudioLake;
use audiolake_testkit::query::{count, explain, ints, query};

async fn lake(dir: &std::path::Path) -> AudioLake {
    let lake = AudioLake::builder()
        .store(dir.join("store").to_str().unwrap())
        .allow_location(dir.join("data").to_str().unwrap())
        .target_partitions(2)
        .build()
        .await
        .unwrap();
    for (name, rows) in [("small", 10_000), ("large", 200_000)] {
        query(
            &lake,
            &format!(
                "CREATE TABLE {name} AS SELECT CAST(v AS BIGINT) AS id, \
                 '/nowhere/' || CAST(v AS TEXT) || '.wav' AS path \
                 FROM generate_series(1, {rows}) AS t(v)"
            ),
        )
        .await;
    }
    lake
}

#[tokio::test]
async fn small_inputs_run_in_one_partition_and_large_ones_fan_out() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path()).await;

    // The table was written by two partitions; its point query reads them as one.
    let plan = explain(&lake, "SELECT * FROM small WHERE id = 5").await;
    assert!(plan.contains("partitions=1"), "{plan}");
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    let row = query(
        &lake,
        "SELECT CAST(id AS INT) AS id FROM small WHERE id = 5",
    )
    .await;
    assert_eq!(ints(&row, "id"), vec![Some(5)]);

    // A grouped aggregate keeps its hash repartition and its answer.
    let groups = query(
        &lake,
        "SELECT CAST(id % 3 AS INT) AS r, CAST(count(*) AS INT) AS n FROM small GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(ints(&groups, "r"), vec![Some(0), Some(1), Some(2)]);
    assert_eq!(ints(&groups, "n"), vec![Some(3333), Some(3334), Some(3333)]);

    // A join of the small table with itself: every row once.
    let joined = query(
        &lake,
        "SELECT count(*) FROM small a JOIN small b ON a.id = b.id WHERE a.id <= 5000",
    )
    .await;
    assert_eq!(count(&joined), 5000);

    // 200,000 rows are more than eight batches: two partitions.
    let plan = explain(&lake, "SELECT * FROM large WHERE id = 5").await;
    assert!(plan.contains("partitions=2"), "{plan}");
    let large = query(&lake, "SELECT count(*) FROM large WHERE id > 100000").await;
    assert_eq!(count(&large), 100_000);
}

#[tokio::test]
async fn audio_work_over_a_small_table_still_fans_out() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = lake(tmp.path()).await;
    let plan = explain(&lake, "SELECT bpm(path) FROM small").await;
    assert!(plan.contains("AsyncFuncExec"), "{plan}");
    assert!(plan.contains("partitions=2"), "{plan}");
}
