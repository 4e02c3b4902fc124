//! A point query on a Parquet table sorted by its key reads one row group and the pages that
//! may hold the key, not the whole file, and `EXPLAIN ANALYZE` says what it skipped.

use audiolake::AudioLake;
use audiolake_testkit::query::{ints, query};

#[tokio::test]
async fn a_point_query_on_sorted_parquet_prunes_row_groups_and_pages() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let lake = AudioLake::builder()
        .store(tmp.path().join("store").to_str().unwrap())
        .allow_location(data.to_str().unwrap())
        .build()
        .await
        .unwrap();
    // One file: a folder would get several, written in parallel, each with rows from all over.
    let folder = data.join("tracks");
    query(
        &lake,
        &format!(
            "COPY (SELECT CAST(v AS BIGINT) AS id, CAST(v % 140 AS DOUBLE) AS bpm \
             FROM generate_series(1, 200000) AS t(v) ORDER BY id) TO '{}/part-0.parquet' STORED AS PARQUET \
             OPTIONS ('format.max_row_group_size' '10000', 'format.data_page_row_count_limit' '1000')",
            folder.display()
        ),
    )
    .await;
    query(
        &lake,
        &format!(
            "CREATE EXTERNAL TABLE tracks STORED AS PARQUET LOCATION '{}/' WITH ORDER (id ASC)",
            folder.display()
        ),
    )
    .await;

    let row = query(
        &lake,
        "SELECT CAST(id AS INT) AS id, CAST(bpm AS INT) AS bpm FROM tracks WHERE id = 123456",
    )
    .await;
    assert_eq!(ints(&row, "id"), vec![Some(123_456)]);
    assert_eq!(ints(&row, "bpm"), vec![Some(123_456 % 140)]);

    let plan = query(
        &lake,
        "EXPLAIN ANALYZE SELECT * FROM tracks WHERE id = 123456",
    )
    .await;
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&[plan])
        .unwrap()
        .to_string();
    // 20 row groups of 10,000 rows: the statistics keep one; its page index one of its pages.
    assert!(
        text.contains("row_groups_pruned_statistics=20 total \u{2192} 1 matched"),
        "{text}"
    );
    assert!(
        text.contains("page_index_pages_pruned=9 total \u{2192} 1 matched"),
        "{text}"
    );
}
