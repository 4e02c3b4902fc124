//! Vector search in SQL: pgvector's operators on hand-computed values, pg_trgm's functions, and
//! HNSW indexes on a Parquet table of 3,000 clustered vectors: the index answers equal brute
//! force, filtered queries return every qualifying row up to k, EXPLAIN shows the index scan,
//! indexes survive a restart and follow rows added and removed, and an unchanged table is
//! answered from the index alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use audiolake::datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Builder, Int64Array, ListBuilder, RecordBatch, StringArray,
};
use audiolake::datafusion::arrow::compute::cast;
use audiolake::datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type};
use audiolake::datafusion::arrow::util::pretty::pretty_format_batches;
use audiolake::AudioLake;
use audiolake_testkit::query::{explain, query_strings};
use audiolake_testkit_audio::tone::write_wav;

const DIMS: usize = 16;
const ROWS: i64 = 3000;

/// A repeatable pseudo-random stream (splitmix64) in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    }
}

/// Rows `ids` of 20 clusters: `id`, `mode` ('minor' for every third id) and `v`.
fn vectors(ids: std::ops::Range<i64>) -> Vec<(i64, Vec<f32>)> {
    let mut centres = Rng(7);
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..DIMS).map(|_| centres.next() * 4.0).collect())
        .collect();
    ids.map(|id| {
        let mut rng = Rng(1000 + id as u64);
        let centre = &centres[(id % 20) as usize];
        (id, centre.iter().map(|c| c + rng.next()).collect())
    })
    .collect()
}

fn batch(rows: &[(i64, Vec<f32>)]) -> RecordBatch {
    let mut lists = ListBuilder::new(Float32Builder::new());
    for (_, v) in rows {
        lists.values().append_slice(v);
        lists.append(true);
    }
    let ids = Int64Array::from_iter_values(rows.iter().map(|(id, _)| *id));
    let modes =
        StringArray::from_iter_values(
            rows.iter()
                .map(|(id, _)| if id % 3 == 0 { "minor" } else { "major" }),
        );
    RecordBatch::try_from_iter([
        ("id", Arc::new(ids) as ArrayRef),
        ("mode", Arc::new(modes) as ArrayRef),
        ("v", Arc::new(lists.finish()) as ArrayRef),
    ])
    .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    1.0 - dot / (na * nb)
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn l1(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .sum()
}

/// The ids of the k rows nearest to `q` by `distance` among those `keep` accepts.
fn brute_force(
    distance: fn(&[f32], &[f32]) -> f64,
    rows: &[(i64, Vec<f32>)],
    q: &[f32],
    k: usize,
    keep: impl Fn(i64) -> bool,
) -> Vec<i64> {
    let mut scored: Vec<(f64, i64)> = rows
        .iter()
        .filter(|(id, _)| keep(*id))
        .map(|(id, v)| (distance(v, q), *id))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    scored.into_iter().take(k).map(|(_, id)| id).collect()
}

fn literal(v: &[f32]) -> String {
    let items: Vec<String> = v.iter().map(|x| x.to_string()).collect();
    format!("'[{}]'", items.join(","))
}

struct Setup {
    _dir: tempfile::TempDir,
    data: PathBuf,
    store: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let data = root.join("vectors");
    std::fs::create_dir_all(&data).unwrap();
    Setup {
        store: root.join("store"),
        data,
        _dir: dir,
    }
}

async fn open(setup: &Setup) -> AudioLake {
    AudioLake::builder()
        .store(setup.store.to_str().unwrap())
        .allow_location(setup.data.to_str().unwrap())
        .target_partitions(2)
        // Files are removed behind the lake's back and must be missed at once.
        .listing_ttl(std::time::Duration::ZERO)
        .build()
        .await
        .unwrap()
}

/// Writes `rows` as the Parquet file `name` in the table's folder.
async fn write_part(lake: &AudioLake, dir: &Path, name: &str, rows: &[(i64, Vec<f32>)]) {
    let ctx = lake.engine().session();
    ctx.deregister_table("part_source").unwrap();
    ctx.register_batch("part_source", batch(rows)).unwrap();
    let file = dir.join(name);
    lake.sql(&format!(
        "COPY (SELECT * FROM part_source) TO '{}' STORED AS PARQUET",
        file.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
}

async fn run(lake: &AudioLake, sql: &str) -> Vec<RecordBatch> {
    lake.sql(sql).await.unwrap().collect().await.unwrap()
}

/// The Parquet table `vecs` over the setup's folder, holding `rows` in its first part.
async fn vecs_table(lake: &AudioLake, setup: &Setup, rows: &[(i64, Vec<f32>)]) {
    write_part(lake, &setup.data, "part-0.parquet", rows).await;
    let create = format!(
        "CREATE EXTERNAL TABLE vecs STORED AS PARQUET LOCATION '{}/'",
        setup.data.display()
    );
    run(lake, &create).await;
}

async fn ids(lake: &AudioLake, sql: &str) -> Vec<i64> {
    let batches = run(lake, sql).await;
    batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

/// `EXPLAIN ANALYZE` of `sql`: the plan with each operator's metrics.
async fn analyze(lake: &AudioLake, sql: &str) -> String {
    explain(lake, &format!("ANALYZE {sql}")).await
}

async fn float(lake: &AudioLake, sql: &str) -> Option<f64> {
    let batches = run(lake, sql).await;
    let column = batches[0].column(0);
    (!column.is_null(0)).then(|| column.as_primitive::<Float64Type>().value(0))
}

async fn error(lake: &AudioLake, sql: &str) -> String {
    match lake.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(frame) => frame.collect().await.unwrap_err().to_string(),
    }
}

#[tokio::test]
async fn operators_follow_pgvector() {
    let setup = setup();
    let lake = open(&setup).await;
    let close = |got: Option<f64>, want: f64| {
        let got = got.expect("a value");
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    };
    // a = [1,2,3], b = [4,6,8]: differences 3, 4, 5; a·b = 40; |a|² = 14, |b|² = 116.
    let (a, b) = ("'[1,2,3]'", "[4.0, 6.0, 8.0]");
    close(
        float(&lake, &format!("SELECT {b} <-> {a}")).await,
        50f64.sqrt(),
    );
    close(float(&lake, &format!("SELECT {b} <#> {a}")).await, -40.0);
    close(float(&lake, &format!("SELECT {b} <+> {a}")).await, 12.0);
    close(
        float(&lake, &format!("SELECT {b} <=> {a}")).await,
        1.0 - 40.0 / (14.0f64 * 116.0).sqrt(),
    );
    close(
        float(&lake, &format!("SELECT inner_product({b}, {a})")).await,
        40.0,
    );
    close(
        float(&lake, &format!("SELECT l2_distance(ARRAY[1, 2, 3], {a})")).await,
        0.0,
    );
    close(float(&lake, "SELECT l2_norm('[3,4]')").await, 5.0);
    assert_eq!(float(&lake, &format!("SELECT NULL <-> {a}")).await, None);
    assert!(error(&lake, "SELECT '[1,2,3]' <-> [1.0, 2.0]")
        .await
        .ends_with("different vector dimensions 3 and 2"));
    assert!(error(&lake, "SELECT l2_distance('[1,x]', '[1,2]')")
        .await
        .ends_with("invalid input syntax for type vector: \"[1,x]\""));
    // Without vectors, <=> keeps its meaning of null-safe equality.
    let batches = run(&lake, "SELECT 1 <=> 1").await;
    assert!(batches[0].column(0).as_boolean().value(0));
}

#[tokio::test]
async fn trigram_functions_follow_pg_trgm() {
    let setup = setup();
    let lake = open(&setup).await;
    let text = |sql: &'static str| {
        let lake = &lake;
        async move {
            let batches = lake
                .sql(&format!("SELECT CAST(({sql}) AS TEXT)"))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            let text = cast(batches[0].column(0), &DataType::Utf8).unwrap();
            text.as_string::<i32>().value(0).to_string()
        }
    };
    // Values printed by PostgreSQL 15's pg_trgm.
    assert_eq!(text("similarity('word', 'two words')").await, "0.36363637");
    assert_eq!(text("word_similarity('word', 'two words')").await, "0.8");
    assert_eq!(text("show_trgm('cat')").await, "[  c,  ca, at , cat]");
    assert_eq!(text("'word' % 'two words'").await, "true");
    run(&lake, "SET pg_trgm.similarity_threshold = 0.5").await;
    assert_eq!(text("'word' % 'two words'").await, "false");
    assert_eq!(text("'word' <% 'two words'").await, "true");
    run(&lake, "SET pg_trgm.similarity_threshold = 2").await;
    assert!(error(&lake, "SELECT 'a' % 'b'")
        .await
        .ends_with("pg_trgm.similarity_threshold must be between 0 and 1, not 2"));
}

#[tokio::test]
async fn hnsw_index_answers_knn_queries_in_sql() {
    let setup = setup();
    let rows = vectors(0..ROWS);
    let lake = open(&setup).await;
    vecs_table(&lake, &setup, &rows).await;
    assert!(
        error(&lake, "CREATE INDEX ON vecs USING hnsw (v) WITH (m = 300)")
            .await
            .ends_with("invalid index parameter: m must be between 2 and 100, not 300")
    );
    run(
        &lake,
        "CREATE INDEX vecs_v ON vecs USING hnsw (v vector_cosine_ops) \
         WITH (m = 16, ef_construction = 100)",
    )
    .await;
    assert!(error(&lake, "CREATE INDEX vecs_v ON vecs USING hnsw (v)")
        .await
        .ends_with("relation \"vecs_v\" already exists"));
    run(&lake, "SET hnsw.ef_search = 400").await;

    let q = &rows[17].1;
    let knn = format!("SELECT id FROM vecs ORDER BY v <=> {} LIMIT 10", literal(q));
    assert!(explain(&lake, &knn)
        .await
        .contains("HnswIndexScan: index=vecs_v"));
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(cosine, &rows, q, 10, |_| true)
    );

    // A filter: the 10 nearest rows that satisfy it, as many as exist.
    let minor = format!(
        "SELECT id FROM vecs WHERE mode = 'minor' ORDER BY v <=> {} LIMIT 10",
        literal(q)
    );
    assert!(explain(&lake, &minor).await.contains("HnswIndexScan"));
    assert_eq!(
        ids(&lake, &minor).await,
        brute_force(cosine, &rows, q, 10, |id| id % 3 == 0)
    );
    let rare = format!(
        "SELECT id FROM vecs WHERE id % 997 = 0 ORDER BY v <=> {} LIMIT 10",
        literal(q)
    );
    assert_eq!(
        ids(&lake, &rare).await,
        brute_force(cosine, &rows, q, 10, |id| id % 997 == 0)
    );
    assert_eq!(
        ids(&lake, &rare).await.len(),
        4,
        "ids 0, 997, 1994 and 2991"
    );

    // A scalar subquery as the query vector.
    let by_row = "SELECT id FROM vecs ORDER BY v <=> (SELECT v FROM vecs WHERE id = 17) LIMIT 5";
    assert!(explain(&lake, by_row).await.contains("HnswIndexScan"));
    assert_eq!(
        ids(&lake, by_row).await,
        brute_force(cosine, &rows, q, 5, |_| true)
    );

    // Other shapes are exact scans with the same answer.
    let l2 = format!("SELECT id FROM vecs ORDER BY v <-> {} LIMIT 3", literal(q));
    assert!(!explain(&lake, &l2).await.contains("HnswIndexScan"));
    assert_eq!(ids(&lake, &l2).await[0], 17);

    // similar(): the row itself first.
    let batches = run(&lake, "SELECT id, distance FROM similar('vecs', '17', 3)").await;
    let found: Vec<String> = batches[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    let want: Vec<String> = brute_force(cosine, &rows, q, 3, |_| true)
        .iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(found, want);
    assert!(
        batches[0]
            .column(1)
            .as_primitive::<Float64Type>()
            .value(0)
            .abs()
            < 1e-6
    );

    // A crafted k is capped by the rows before anything is allocated: every row comes back.
    let huge = float(
        &lake,
        "SELECT CAST(count(*) AS DOUBLE) FROM similar('vecs', '17', 10000000000)",
    )
    .await;
    assert_eq!(huge, Some(ROWS as f64));
    let limit = format!(
        "SELECT id FROM vecs ORDER BY v <=> {} LIMIT 9223372036854775807 OFFSET 3",
        literal(q)
    );
    assert!(explain(&lake, &limit).await.contains("HnswIndexScan"));
    assert_eq!(ids(&lake, &limit).await.len(), ROWS as usize - 3);

    let listed = run(&lake, "SELECT name, table_name, column_name, key_column, opclass, m, ef_construction, rows, dims FROM audiolake_indexes").await;
    assert_eq!(
        pretty_format_batches(&listed).unwrap().to_string(),
        "+--------+------------+-------------+------------+-------------------+----+-----------------+------+------+\n\
         | name   | table_name | column_name | key_column | opclass           | m  | ef_construction | rows | dims |\n\
         +--------+------------+-------------+------------+-------------------+----+-----------------+------+------+\n\
         | vecs_v | vecs       | v           | id         | vector_cosine_ops | 16 | 100             | 3000 | 16   |\n\
         +--------+------------+-------------+------------+-------------------+----+-----------------+------+------+"
    );
    drop(lake);

    // After a restart the index is loaded from the store at first use.
    let lake = open(&setup).await;
    let loaded = "SELECT loaded FROM audiolake_indexes";
    let flag = |batches: Vec<RecordBatch>| batches[0].column(0).as_boolean().value(0);
    assert!(!flag(run(&lake, loaded).await));
    run(&lake, "SET hnsw.ef_search = 400").await;
    assert_eq!(
        ids(&lake, &minor).await,
        brute_force(cosine, &rows, q, 10, |id| id % 3 == 0)
    );
    assert!(flag(run(&lake, loaded).await));

    // Rows added after the build are found; rows removed are not returned.
    let mut near_q = q.clone();
    near_q[0] += 0.05;
    let added = vec![(ROWS, near_q)];
    write_part(&lake, &setup.data, "part-1.parquet", &added).await;
    let mut all = rows.clone();
    all.extend(added);
    let found = ids(&lake, &knn).await;
    assert_eq!(
        found[..2],
        [17, ROWS],
        "the query's own row, then the added one"
    );
    assert_eq!(found, brute_force(cosine, &all, q, 10, |_| true));
    std::fs::remove_file(setup.data.join("part-1.parquet")).unwrap();
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(cosine, &rows, q, 10, |_| true)
    );

    run(&lake, "DROP INDEX vecs_v").await;
    assert!(!explain(&lake, &knn).await.contains("HnswIndexScan"));
    assert!(error(&lake, "DROP INDEX vecs_v")
        .await
        .ends_with("index \"vecs_v\" does not exist"));
    lake.sql("DROP INDEX IF EXISTS vecs_v").await.unwrap();
    let files = std::fs::read_dir(setup.store.join("indexes"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .count();
    assert_eq!(files, 0, "the definition is gone from the store");
}

/// The index files (`<build>.hnsw`) kept for index `name`.
fn graph_files(setup: &Setup, name: &str) -> Vec<PathBuf> {
    std::fs::read_dir(setup.store.join("indexes").join(name))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "hnsw"))
        .collect()
}

#[tokio::test]
async fn l1_indexes_and_builds_that_cannot_be_read() {
    let setup = setup();
    let rows = vectors(0..ROWS);
    let lake = open(&setup).await;
    vecs_table(&lake, &setup, &rows).await;
    run(
        &lake,
        "CREATE INDEX vecs_l1 ON vecs USING hnsw (v vector_l1_ops)",
    )
    .await;
    run(&lake, "SET hnsw.ef_search = 400").await;
    let q = &rows[17].1;
    let knn = format!("SELECT id FROM vecs ORDER BY v <+> {} LIMIT 10", literal(q));
    assert!(explain(&lake, &knn)
        .await
        .contains("HnswIndexScan: index=vecs_l1"));
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(l1, &rows, q, 10, |_| true)
    );
    drop(lake);

    // A build written by hnsw_rs (or damaged) is built again at first use, not an error.
    let [old] = graph_files(&setup, "vecs_l1").try_into().unwrap();
    std::fs::write(&old, b"ALHNSW1\0graph files of hnsw_rs").unwrap();
    let lake = open(&setup).await;
    run(&lake, "SET hnsw.ef_search = 400").await;
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(l1, &rows, q, 10, |_| true)
    );
    let new: Vec<PathBuf> = graph_files(&setup, "vecs_l1")
        .into_iter()
        .filter(|p| *p != old)
        .collect();
    assert_eq!(new.len(), 1, "one new build");
    assert!(std::fs::read(&new[0]).unwrap().starts_with(b"ALHNSW2\0"));
    drop(lake);

    // A damaged vector is not read when the file is opened (it is mapped), but it is checked
    // right after: a later query builds the index again.
    let mut bytes = std::fs::read(&new[0]).unwrap();
    bytes[80 + 5] ^= 0x10; // in the first vector, past the 80-byte header
    std::fs::write(&new[0], bytes).unwrap();
    let lake = open(&setup).await;
    run(&lake, "SET hnsw.ef_search = 400").await;
    let mut rebuilt = false;
    for _ in 0..250 {
        assert_eq!(ids(&lake, &knn).await.len(), 10);
        if graph_files(&setup, "vecs_l1") != [new[0].clone()] {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(rebuilt, "the damaged build was not replaced");
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(l1, &rows, q, 10, |_| true)
    );
}

#[tokio::test]
async fn unchanged_tables_are_answered_from_the_index() {
    let setup = setup();
    let rows = vectors(0..ROWS);
    let lake = open(&setup).await;
    vecs_table(&lake, &setup, &rows).await;
    run(
        &lake,
        "CREATE INDEX vecs_l2 ON vecs USING hnsw (v vector_l2_ops)",
    )
    .await;
    run(&lake, "SET hnsw.ef_search = 400").await;

    // Only the key and the float4 vector are needed: the index has both, exactly.
    let q = &rows[42].1;
    let knn = format!(
        "SELECT id, v FROM vecs ORDER BY v <-> {} LIMIT 10",
        literal(q)
    );
    let want = brute_force(l2, &rows, q, 10, |_| true);
    let batches = run(&lake, &knn).await;
    let found: Vec<(i64, Vec<f32>)> = batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_primitive::<Int64Type>().clone();
            let lists = b.column(1).as_list::<i32>().clone();
            (0..b.num_rows()).map(move |r| {
                let v = lists.value(r);
                (
                    ids.value(r),
                    v.as_primitive::<Float32Type>().values().to_vec(),
                )
            })
        })
        .collect();
    let expected: Vec<(i64, Vec<f32>)> = want
        .iter()
        .map(|id| (*id, rows[*id as usize].1.clone()))
        .collect();
    assert_eq!(found, expected);
    assert!(analyze(&lake, &knn).await.contains("table_reads=0"));

    // Another column, or a filter, is read from the table.
    let with_mode = format!(
        "SELECT id, mode FROM vecs ORDER BY v <-> {} LIMIT 10",
        literal(q)
    );
    assert!(analyze(&lake, &with_mode).await.contains("table_reads=1"));
    let minor = format!(
        "SELECT id FROM vecs WHERE mode = 'minor' ORDER BY v <-> {} LIMIT 10",
        literal(q)
    );
    // Only the keys of the rows that pass are read, and kept while the table is as it is;
    // the rows found come from the index, filtered already.
    let first = analyze(&lake, &minor).await;
    assert!(first.contains("table_reads=1"), "{first}");
    assert_eq!(
        ids(&lake, &minor).await,
        brute_force(l2, &rows, q, 10, |id| id % 3 == 0)
    );
    assert!(analyze(&lake, &minor).await.contains("table_reads=0"));
    assert!(!explain(&lake, &minor).await.contains("FilterExec"));
    // A column the index does not hold is fetched by key, with the WHERE applied there too.
    let minor_modes = minor.replace("SELECT id", "SELECT id, mode");
    let batches = run(&lake, &minor_modes).await;
    let (mut got_ids, mut got_modes) = (Vec::new(), Vec::new());
    for b in &batches {
        got_ids.extend(
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
        let modes = cast(b.column(1), &DataType::Utf8).unwrap();
        got_modes.extend(
            modes
                .as_string::<i32>()
                .iter()
                .map(|m| m.unwrap().to_string()),
        );
    }
    assert_eq!(got_ids, brute_force(l2, &rows, q, 10, |id| id % 3 == 0));
    assert!(got_modes.iter().all(|m| m == "minor"), "{got_modes:?}");

    // A new file is a new version: which rows exist is read again, the new row is inserted
    // into the index and found, and the next query reads nothing again.
    let built_at = query_strings(
        &lake,
        "SELECT arrow_cast(built_at, 'Utf8') FROM audiolake_indexes",
    )
    .await;
    let mut near_q = q.clone();
    near_q[0] += 0.05;
    write_part(&lake, &setup.data, "part-1.parquet", &[(ROWS, near_q)]).await;
    assert_eq!(ids(&lake, &knn).await[..2], [42, ROWS]);
    assert!(analyze(&lake, &knn).await.contains("table_reads=0"));
    // The kept answer of the filter was of the old version: the new row (minor) is read.
    assert!(analyze(&lake, &minor).await.contains("table_reads=1"));
    assert_eq!(ids(&lake, &minor).await[..2], [42, ROWS]);
    let additions = std::fs::read_dir(setup.store.join("indexes").join("vecs_l2"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".added-"))
        .count();
    assert_eq!(additions, 1, "the added row is kept beside the build");
    // `rows` counts the live rows, the inserted one too.
    let listed_rows = "SELECT CAST(rows AS DOUBLE) FROM audiolake_indexes";
    assert_eq!(float(&lake, listed_rows).await, Some(ROWS as f64 + 1.0));

    // After a restart the build and its additions are loaded: still nothing to read.
    drop(lake);
    let lake = open(&setup).await;
    run(&lake, "SET hnsw.ef_search = 400").await;
    assert_eq!(ids(&lake, &knn).await[..2], [42, ROWS]);
    assert!(analyze(&lake, &knn).await.contains("table_reads=0"));

    // Back to the files of the build, after another restart: the added row is gone, and the
    // index answers alone again, from the same build.
    std::fs::remove_file(setup.data.join("part-1.parquet")).unwrap();
    drop(lake);
    let lake = open(&setup).await;
    run(&lake, "SET hnsw.ef_search = 400").await;
    assert_eq!(ids(&lake, &knn).await, want);
    assert!(analyze(&lake, &knn).await.contains("table_reads=0"));
    assert_eq!(float(&lake, listed_rows).await, Some(ROWS as f64));
    assert_eq!(
        query_strings(
            &lake,
            "SELECT arrow_cast(built_at, 'Utf8') FROM audiolake_indexes"
        )
        .await,
        built_at
    );
}

/// A pseudo-random bucket 0..100 of an id, unrelated to its cluster (`id % 20`); the same
/// expression in SQL is `BUCKET`.
fn bucket(id: i64) -> i64 {
    (id * 2_654_435_761) % 1_000_003 % 100
}
const BUCKET: &str = "(id * 2654435761) % 1000003 % 100";

#[tokio::test]
async fn filtered_queries_return_k_rows_at_1_10_and_50_percent() {
    const N: i64 = 10_000;
    let setup = setup();
    let rows = vectors(0..N);
    let lake = open(&setup).await;
    vecs_table(&lake, &setup, &rows).await;
    run(
        &lake,
        "CREATE INDEX vecs_l2 ON vecs USING hnsw (v vector_l2_ops) WITH (m = 8, ef_construction = 32)",
    )
    .await;
    // A graph search then costs about ef·m = 80 distances over the rows that pass.
    run(&lake, "SET hnsw.ef_search = 10").await;
    let knn = |percent: i64, q: &[f32]| {
        format!(
            "SELECT id FROM vecs WHERE {BUCKET} < {percent} ORDER BY v <-> {} LIMIT 10",
            literal(q)
        )
    };
    let queries: Vec<&[f32]> = [5, 1234, 7777]
        .iter()
        .map(|i| rows[*i].1.as_slice())
        .collect();
    for percent in [1, 10, 50] {
        let passing = (0..N).filter(|id| bucket(*id) < percent).count();
        let (mut hits, mut returned) = (0, 0);
        for q in &queries {
            let got = ids(&lake, &knn(percent, q)).await;
            let want = brute_force(l2, &rows, q, 10, |id| bucket(id) < percent);
            assert!(got.iter().all(|id| bucket(*id) < percent), "{got:?}");
            if percent == 1 {
                assert_eq!(got, want, "scanned exactly");
            }
            returned += got.len();
            hits += got.iter().filter(|id| want.contains(id)).count();
        }
        assert_eq!(
            returned,
            10 * queries.len(),
            "{percent}%: 10 rows per query"
        );
        let recall = hits as f64 / returned as f64;
        assert!(recall >= 0.9, "{percent}%: recall {recall}");

        // EXPLAIN gives the rule (ef·m = 80: the exact scan at most sqrt(80 / 10,000) = 8.9 %
        // of the rows), EXPLAIN ANALYZE which way the scan went and why.
        let plan = explain(&lake, &knn(percent, queries[0])).await;
        assert!(
            plan.contains("search=when run: exact if at most 8.9% of 10000 rows pass, else graph"),
            "{plan}"
        );
        let plan = analyze(&lake, &knn(percent, queries[0])).await;
        let share = format!(
            "{:.1}% of {N} rows pass (counted)",
            passing as f64 * 100.0 / N as f64
        );
        assert!(plan.contains(&share), "{plan}");
        let chosen = match percent {
            1 => "search=exact because",
            _ => "search=graph (ef 10, iterative_scan relaxed_order",
        };
        assert!(plan.contains(chosen), "{percent}%: {plan}");
    }

    // pgvector's `off`: one round of ef = 10 candidates, about one in ten of which passes.
    run(&lake, "SET hnsw.iterative_scan = off").await;
    let off: usize = {
        let mut total = 0;
        for q in &queries {
            total += ids(&lake, &knn(10, q)).await.len();
        }
        total
    };
    assert!(off < 5 * queries.len(), "off returned {off} rows");
    run(&lake, "SET hnsw.iterative_scan = strict_order").await;
    for q in &queries {
        assert_eq!(ids(&lake, &knn(10, q)).await.len(), 10);
    }
    assert!(analyze(&lake, &knn(10, queries[0]))
        .await
        .contains("iterative_scan=strict_order, max_scan_tuples=20000"));

    // Settings are checked: an unknown mode when set, a bound out of range when used.
    assert!(error(&lake, "SET hnsw.iterative_scan = sideways")
        .await
        .contains(
            "hnsw.iterative_scan must be off, relaxed_order or strict_order, not \"sideways\""
        ));
    run(&lake, "SET hnsw.max_scan_tuples = 0").await;
    assert!(error(&lake, &knn(10, queries[0]))
        .await
        .ends_with("hnsw.max_scan_tuples must be between 1 and 2147483647, not 0"));
}

/// `(files_done, files_total, finished, error)` of the last build of index `name` in
/// `audiolake_progress`, once it shows there.
async fn build_progress(lake: &AudioLake, name: &str) -> Option<(i64, i64, bool, Option<String>)> {
    let batches = run(
        lake,
        &format!(
            "SELECT files_done, files_total, finished, error FROM audiolake_progress \
             WHERE job = 'build index {name}' ORDER BY started_at DESC LIMIT 1"
        ),
    )
    .await;
    let batch = batches.iter().find(|b| b.num_rows() > 0)?;
    let error = batch.column(3).as_string::<i32>();
    Some((
        batch.column(0).as_primitive::<Int64Type>().value(0),
        batch.column(1).as_primitive::<Int64Type>().value(0),
        batch.column(2).as_boolean().value(0),
        (!error.is_null(0)).then(|| error.value(0).to_string()),
    ))
}

/// Polls `build_progress` until `done` holds; a build that never gets there fails the test
/// after a minute rather than hanging it.
async fn wait_for_build(
    lake: &AudioLake,
    name: &str,
    done: impl Fn(&(i64, i64, bool, Option<String>)) -> bool,
) -> (i64, i64, bool, Option<String>) {
    for _ in 0..6000 {
        if let Some(progress) = build_progress(lake, name).await {
            if done(&progress) {
                return progress;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "the build of {name} never got there: {:?}",
        build_progress(lake, name).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_create_index_stops_its_build_and_the_old_index_stays() {
    let setup = setup();
    let rows = vectors(0..ROWS);
    let lake = Arc::new(open(&setup).await);
    vecs_table(&lake, &setup, &rows).await;
    run(&lake, "CREATE INDEX vecs_fast ON vecs USING hnsw (v)").await;
    assert_eq!(
        build_progress(&lake, "vecs_fast").await,
        Some((ROWS, ROWS, true, None))
    );

    // Any number of threads is taken when set; the build checks it.
    run(&lake, "SET audiolake.index_build_threads = 5000").await;
    let refused = error(
        &lake,
        "CREATE INDEX vecs_bad ON vecs USING hnsw (v) WITH (m = 4, ef_construction = 8)",
    )
    .await;
    assert!(
        refused.ends_with(
            "audiolake.index_build_threads must be between 0 (every core) and 1024, not 5000"
        ),
        "{refused}"
    );

    // A slow build on one thread: its client goes away once it has inserted rows.
    run(&lake, "SET audiolake.index_build_threads = 1").await;
    let statement = {
        let lake = Arc::clone(&lake);
        tokio::spawn(async move {
            lake.sql(
                "CREATE INDEX vecs_slow ON vecs USING hnsw (v) \
                 WITH (m = 100, ef_construction = 1000)",
            )
            .await
            .map(|_| ())
        })
    };
    wait_for_build(&lake, "vecs_slow", |(done, ..)| *done > 0).await;
    statement.abort();
    assert!(statement.await.unwrap_err().is_cancelled());

    // The build's threads stop short of the end, and say why.
    let (done, total, _, why) =
        wait_for_build(&lake, "vecs_slow", |(.., finished, _)| *finished).await;
    assert_eq!(why.as_deref(), Some("index build cancelled"));
    assert_eq!(total, ROWS);
    assert!(done < total, "{done} of {total} rows inserted");

    // Nothing of it was published: the old index answers.
    let listed = run(&lake, "SELECT name FROM audiolake_indexes").await;
    assert_eq!(listed[0].column(0).as_string::<i32>().value(0), "vecs_fast");
    assert_eq!(listed.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert!(!setup.store.join("indexes").join("vecs_slow").exists());
    let q = &rows[17].1;
    let knn = format!("SELECT id FROM vecs ORDER BY v <-> {} LIMIT 5", literal(q));
    assert!(explain(&lake, &knn)
        .await
        .contains("HnswIndexScan: index=vecs_fast"));
    run(&lake, "SET hnsw.ef_search = 400").await;
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(l2, &rows, q, 5, |_| true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_and_a_dropped_reindex_keeps_the_old_build() {
    let setup = setup();
    let rows = vectors(0..ROWS);
    let lake = Arc::new(open(&setup).await);
    vecs_table(&lake, &setup, &rows[..200]).await;
    run(
        &lake,
        "CREATE INDEX vecs_v ON vecs USING hnsw (v) WITH (m = 100, ef_construction = 1000)",
    )
    .await;
    let listed = || async {
        let batches = run(&lake, "SELECT rows, built_at FROM audiolake_indexes").await;
        let batch = &batches[0];
        let built_at = cast(batch.column(1), &DataType::Utf8).unwrap();
        (
            batch.column(0).as_primitive::<Int64Type>().value(0),
            built_at.as_string::<i32>().value(0).to_string(),
        )
    };
    let (built_rows, built_at) = listed().await;
    assert_eq!(built_rows, 200);

    assert!(error(&lake, "REINDEX INDEX nope")
        .await
        .ends_with("index \"nope\" does not exist"));
    assert!(error(&lake, "REINDEX TABLE vecs")
        .await
        .contains("REINDEX INDEX name, not REINDEX TABLE"));

    // 2,800 rows more, and a slow rebuild on one thread whose client goes away.
    write_part(&lake, &setup.data, "part-1.parquet", &rows[200..]).await;
    run(&lake, "SET audiolake.index_build_threads = 1").await;
    let statement = {
        let lake = Arc::clone(&lake);
        tokio::spawn(async move { lake.sql("REINDEX INDEX vecs_v").await.map(|_| ()) })
    };
    wait_for_build(&lake, "vecs_v", |(done, total, ..)| {
        *total == ROWS && *done > 0
    })
    .await;
    statement.abort();
    assert!(statement.await.unwrap_err().is_cancelled());
    let (done, _, _, why) = wait_for_build(&lake, "vecs_v", |(_, total, finished, _)| {
        *total == ROWS && *finished
    })
    .await;
    assert_eq!(why.as_deref(), Some("index build cancelled"));
    assert!(done < ROWS, "{done} rows inserted");

    // The old build is still the index's, and answers: the rows added since are inserted into
    // it.
    assert_eq!(listed().await, (200, built_at.clone()));
    let q = &rows[2500].1;
    let knn = format!("SELECT id FROM vecs ORDER BY v <-> {} LIMIT 5", literal(q));
    let plan = analyze(&lake, &knn).await;
    assert!(plan.contains("HnswIndexScan: index=vecs_v"), "{plan}");
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(l2, &rows, q, 5, |_| true)
    );

    // A REINDEX that finishes replaces the build.
    run(&lake, "SET audiolake.index_build_threads = 0").await;
    std::fs::remove_file(setup.data.join("part-1.parquet")).unwrap();
    write_part(&lake, &setup.data, "part-1.parquet", &rows[200..300]).await;
    run(&lake, "REINDEX INDEX vecs_v").await;
    let (rebuilt_rows, rebuilt_at) = listed().await;
    assert_eq!(rebuilt_rows, 300);
    assert_ne!(rebuilt_at, built_at);
    let q = &rows[250].1;
    let knn = format!("SELECT id FROM vecs ORDER BY v <-> {} LIMIT 5", literal(q));
    assert!(analyze(&lake, &knn).await.contains("table_reads=0"));
    assert_eq!(
        ids(&lake, &knn).await,
        brute_force(l2, &rows[..300], q, 5, |_| true)
    );
}

#[tokio::test]
async fn crafted_additions_files_are_set_aside() {
    let setup = setup();
    let rows = vectors(0..300);
    let lake = open(&setup).await;
    vecs_table(&lake, &setup, &rows[..200]).await;
    run(&lake, "CREATE INDEX vecs_v ON vecs USING hnsw (v)").await;
    write_part(&lake, &setup.data, "part-1.parquet", &rows[200..]).await;
    let q = &rows[250].1;
    let knn = format!("SELECT id FROM vecs ORDER BY v <-> {} LIMIT 5", literal(q));
    let want = brute_force(l2, &rows, q, 5, |_| true);
    assert_eq!(ids(&lake, &knn).await, want);
    drop(lake);

    // Beside the build: one file that is not JSON, and additions whose vector is too short.
    let [graph] = graph_files(&setup, "vecs_v").try_into().unwrap();
    let build = graph.file_stem().unwrap().to_str().unwrap().to_string();
    let dir = graph.parent().unwrap();
    std::fs::write(
        dir.join(format!("{build}.added-0-0-0.json")),
        b"{\"rows\": [",
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{build}.added-0-0-1.json")),
        br#"{"version": null, "rows": [{"key": "999", "vector": [1.0]}]}"#,
    )
    .unwrap();
    let lake = open(&setup).await;
    assert_eq!(ids(&lake, &knn).await, want);
    let problems = query_strings(
        &lake,
        "SELECT problem FROM audiolake_store_problems ORDER BY object",
    )
    .await;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].starts_with("not index additions: "),
        "{problems:?}"
    );
    assert_eq!(
        problems[1],
        "index additions not applied: row 200 has 1 dimensions, the index has 16"
    );
}

#[tokio::test]
async fn extension_settings_can_be_shown() {
    let setup = setup();
    let lake = open(&setup).await;
    let show = |batches: Vec<RecordBatch>| pretty_format_batches(&batches).unwrap().to_string();
    assert_eq!(
        show(run(&lake, "SHOW hnsw.ef_search").await),
        "+----------------+-------+\n\
         | name           | value |\n\
         +----------------+-------+\n\
         | hnsw.ef_search | 40    |\n\
         +----------------+-------+"
    );
    run(&lake, "SET hnsw.ef_search = 100").await;
    run(&lake, "SET pg_trgm.similarity_threshold = 0.5").await;
    let listed = run(
        &lake,
        "SELECT name, value FROM information_schema.df_settings \
         WHERE name LIKE 'hnsw.%' OR name LIKE 'pg_trgm.%' OR name LIKE 'audiolake.%' ORDER BY name",
    )
    .await;
    assert_eq!(
        show(listed),
        "+-----------------------------------+---------------+\n\
         | name                              | value         |\n\
         +-----------------------------------+---------------+\n\
         | audiolake.decode_max_seconds      | 600           |\n\
         | audiolake.device                  |               |\n\
         | audiolake.index_build_threads     | 0             |\n\
         | audiolake.musicnn_max_patches     | 16            |\n\
         | hnsw.ef_search                    | 100           |\n\
         | hnsw.iterative_scan               | relaxed_order |\n\
         | hnsw.max_scan_tuples              | 20000         |\n\
         | pg_trgm.similarity_threshold      | 0.5           |\n\
         | pg_trgm.word_similarity_threshold | 0.6           |\n\
         +-----------------------------------+---------------+"
    );
}

#[tokio::test]
async fn audio_files_changed_in_place_are_compared_with_their_new_vectors() {
    let setup = setup();
    for (name, hz) in [
        ("a.wav", 440.0),
        ("c.wav", 523.25),
        ("e.wav", 659.25),
        ("g.wav", 783.99),
    ] {
        write_wav(&setup.data.join(name), 1, hz);
    }
    let lake = open(&setup).await;
    let create = format!(
        "CREATE EXTERNAL TABLE tones STORED AS AUDIO LOCATION '{}/'",
        setup.data.display()
    );
    run(&lake, &create).await;
    run(
        &lake,
        "CREATE INDEX tones_chroma ON tones USING hnsw (chroma vector_l2_ops)",
    )
    .await;
    let near_e = "SELECT file_name FROM tones \
                  ORDER BY chroma <-> (SELECT chroma FROM tones WHERE file_name = 'e.wav') LIMIT 2";
    assert!(explain(&lake, near_e).await.contains("HnswIndexScan"));
    let before = query_strings(&lake, near_e).await;
    assert_eq!(before[0], "e.wav");
    assert_ne!(before[1], "a.wav");

    // a.wav becomes an E, longer: same path, new size and time, a vector next to e.wav's.
    write_wav(&setup.data.join("a.wav"), 2, 659.25);
    let mut after = query_strings(&lake, near_e).await;
    after.sort();
    assert_eq!(after, ["a.wav", "e.wav"]);
}

/// A row an index cannot take is refused with its name, at the build and when it is added
/// to the table after the build.
#[tokio::test]
async fn null_keys_and_null_elements_are_refused_with_the_row_named() {
    let setup = setup();
    let lake = open(&setup).await;
    run(
        &lake,
        "CREATE TABLE nk AS SELECT * FROM (VALUES (1, make_array(1.0, 2.0)), \
         (NULL, make_array(3.0, 4.0))) AS t(id, v)",
    )
    .await;
    assert_eq!(
        error(&lake, "CREATE INDEX nk_v ON nk USING hnsw (v)").await,
        "Execution error: index nk_v: a row of nk has a NULL id; the key column must \
         identify every row"
    );
    run(
        &lake,
        "CREATE TABLE ne AS SELECT * FROM (VALUES (1, make_array(1.0, 2.0)), \
         (2, make_array(3.0, NULL))) AS t(id, v)",
    )
    .await;
    assert_eq!(
        error(&lake, "CREATE INDEX ne_v ON ne USING hnsw (v)").await,
        "Execution error: index ne_v: the vector of 2 has a NULL element"
    );

    let rows = vectors(0..100);
    vecs_table(&lake, &setup, &rows).await;
    run(&lake, "CREATE INDEX vecs_v ON vecs USING hnsw (v)").await;
    let added = setup.data.join("part-1.parquet");
    run(
        &lake,
        &format!(
            "COPY (SELECT arrow_cast(100, 'Int64') AS id, 'minor' AS mode, \
             arrow_cast(make_array(1.0, NULL{}), 'List(Float32)') AS v) TO '{}' \
             STORED AS PARQUET",
            ", 0.0".repeat(DIMS - 2),
            added.display()
        ),
    )
    .await;
    let knn = format!(
        "SELECT id FROM vecs ORDER BY v <-> {} LIMIT 3",
        literal(&rows[0].1)
    );
    assert_eq!(
        error(&lake, &knn).await,
        "Execution error: index vecs_v: the vector of 100 has a NULL element"
    );
}

/// A query vector given as a parameter (`$1`, as pgvector's clients send it) is searched
/// through the index like a literal.
#[tokio::test]
async fn a_query_vector_given_as_a_parameter_uses_the_index() {
    use audiolake::datafusion::common::ParamValues;
    use audiolake::datafusion::scalar::ScalarValue;
    let setup = setup();
    let rows = vectors(0..500);
    let lake = open(&setup).await;
    vecs_table(&lake, &setup, &rows).await;
    run(&lake, "CREATE INDEX vecs_v ON vecs USING hnsw (v)").await;
    run(&lake, "SET hnsw.ef_search = 400").await;
    let q = &rows[3].1;
    let text = literal(q).trim_matches('\'').to_string();
    let bound = |sql: &str| {
        let values = ParamValues::List(vec![ScalarValue::Utf8(Some(text.clone())).into()]);
        let sql = sql.to_string();
        let lake = &lake;
        async move {
            let frame = lake.sql(&sql).await.unwrap();
            let batches = frame.with_param_values(values).unwrap().collect().await;
            batches.unwrap()
        }
    };
    let plan = bound("EXPLAIN SELECT id FROM vecs ORDER BY v <-> $1 LIMIT 10").await;
    let plan = pretty_format_batches(&plan).unwrap().to_string();
    assert!(plan.contains("HnswIndexScan: index=vecs_v"), "{plan}");
    let found = bound("SELECT id FROM vecs ORDER BY v <-> $1 LIMIT 10").await;
    let found: Vec<i64> = found
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    assert_eq!(found, brute_force(l2, &rows, q, 10, |_| true));
}
