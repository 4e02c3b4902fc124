//! CSV, JSON and Parquet tables reuse the listing of their location for a short while: files
//! another process adds show up once it expires, the lake's own writes (and DDL) at once.

use std::path::Path;
use std::time::Duration;

use audiolake::AudioLake;
use audiolake_testkit::query::{count, query};

async fn open(dir: &Path, ttl: Duration) -> AudioLake {
    AudioLake::builder()
        .store(dir.join("store").to_str().unwrap())
        .allow_location(dir.join("data").to_str().unwrap())
        .listing_ttl(ttl)
        .build()
        .await
        .unwrap()
}

/// A folder `data/<name>/` with one CSV file of one row, and table `<name>` over it.
async fn csv_table(lake: &AudioLake, dir: &Path, name: &str) -> std::path::PathBuf {
    let folder = dir.join("data").join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("a.csv"), "a\n1\n").unwrap();
    query(
        lake,
        &format!(
            "CREATE EXTERNAL TABLE {name} (a BIGINT) STORED AS CSV LOCATION '{}/' \
             OPTIONS ('format.has_header' 'true')",
            folder.display()
        ),
    )
    .await;
    folder
}

async fn rows(lake: &AudioLake, table: &str) -> i64 {
    count(&query(lake, &format!("SELECT count(*) FROM {table}")).await)
}

#[tokio::test]
async fn a_listing_is_reused_until_it_expires_or_the_lake_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = open(tmp.path(), Duration::from_secs(3600)).await;
    let folder = csv_table(&lake, tmp.path(), "t").await;
    assert_eq!(rows(&lake, "t").await, 1);

    // Another process adds a file: the hour-long listing does not show it yet.
    std::fs::write(folder.join("b.csv"), "a\n2\n").unwrap();
    assert_eq!(rows(&lake, "t").await, 1);

    // The lake's own write into the table is seen at once, and the other file with it.
    query(&lake, "INSERT INTO t VALUES (3)").await;
    assert_eq!(rows(&lake, "t").await, 3);

    // A write elsewhere (COPY ... TO another folder) empties the listings too.
    std::fs::write(folder.join("c.csv"), "a\n4\n").unwrap();
    assert_eq!(rows(&lake, "t").await, 3);
    let other = tmp.path().join("data/copied/");
    query(
        &lake,
        &format!(
            "COPY (SELECT 1 AS a) TO '{}/' STORED AS CSV",
            other.display()
        ),
    )
    .await;
    assert_eq!(rows(&lake, "t").await, 4);

    // DROP and CREATE under the same name over another folder: the new folder's rows.
    std::fs::write(folder.join("d.csv"), "a\n5\n").unwrap();
    query(&lake, "DROP TABLE t").await;
    let moved = tmp.path().join("data/moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::write(moved.join("only.csv"), "a\n9\n").unwrap();
    query(
        &lake,
        &format!(
            "CREATE EXTERNAL TABLE t (a BIGINT) STORED AS CSV LOCATION '{}/' \
             OPTIONS ('format.has_header' 'true')",
            moved.display()
        ),
    )
    .await;
    assert_eq!(rows(&lake, "t").await, 1);
}

#[tokio::test]
async fn an_expired_listing_or_none_at_all_sees_other_processes_files() {
    let tmp = tempfile::tempdir().unwrap();
    let lake = open(tmp.path(), Duration::from_millis(200)).await;
    let folder = csv_table(&lake, tmp.path(), "t").await;
    assert_eq!(rows(&lake, "t").await, 1);
    std::fs::write(folder.join("b.csv"), "a\n2\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rows(&lake, "t").await, 2);

    let uncached = tempfile::tempdir().unwrap();
    let lake = open(uncached.path(), Duration::ZERO).await;
    let folder = csv_table(&lake, uncached.path(), "u").await;
    assert_eq!(rows(&lake, "u").await, 1);
    std::fs::write(folder.join("b.csv"), "a\n2\n").unwrap();
    assert_eq!(rows(&lake, "u").await, 2);
}

#[tokio::test]
async fn a_lifetime_past_the_clock_is_refused_or_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = Duration::from_secs(u64::MAX);
    let refused = AudioLake::builder()
        .store(tmp.path().join("store").to_str().unwrap())
        .listing_ttl(huge)
        .build()
        .await
        .err()
        .expect("a lifetime of u64::MAX seconds is refused");
    assert_eq!(
        refused.to_string(),
        format!(
            "invalid setting: the listing lifetime must be at most 86400 s, not {} s",
            u64::MAX
        )
    );

    // Through SQL the runtime setting reaches the shared cache: bounded, and queries go on.
    let lake = open(tmp.path(), Duration::from_secs(1)).await;
    csv_table(&lake, tmp.path(), "t").await;
    query(
        &lake,
        &format!(
            "SET datafusion.runtime.list_files_cache_ttl = '{}s'",
            u64::MAX
        ),
    )
    .await;
    assert_eq!(rows(&lake, "t").await, 1);
    assert_eq!(rows(&lake, "t").await, 1);
}
