//! The store's bucketing: parts name the buckets of their rows, a refresh for some buckets reads
//! only the parts that can hold them, and compaction splits a large merge by bucket.

use std::sync::Arc;

use audiolake_udf::stored_header::HEADER_GROUP;
use object_store::memory::InMemory;
use object_store::ObjectStore;

use super::*;

fn store(objects: &Arc<InMemory>) -> FeatureStore {
    let objects: Arc<dyn ObjectStore> = Arc::clone(objects) as _;
    FeatureStore::new(
        objects,
        &Path::from("lake"),
        FlushPolicy::default(),
        Duration::ZERO,
        Arc::new(StoreProblems::default()),
    )
}

fn url(i: usize) -> String {
    format!("s3://music/{i:04}.flac")
}

/// A stored header row of the file at `url`.
fn row(url: &str) -> StoredRow {
    StoredRow {
        fingerprint: Fingerprint {
            path: url.to_string(),
            size: 10,
            e_tag: Some("e".into()),
            last_modified: 0,
        },
        content_hash: None,
        analyzed_at: now_micros(),
        outcome: Err("not audio".into()),
    }
}

/// The first `n` test URLs in each class of `modulus`.
fn by_class(n: usize, modulus: u32) -> Vec<Vec<String>> {
    let mut classes = vec![Vec::new(); modulus as usize];
    for i in 0.. {
        let url = url(i);
        let class = &mut classes[(bucket_of(&url) % modulus) as usize];
        if class.len() < n {
            class.push(url);
        }
        if classes.iter().all(|c| c.len() == n) {
            return classes;
        }
    }
    unreachable!()
}

async fn part_names(objects: &InMemory) -> Vec<String> {
    let mut names: Vec<String> = objects
        .list(Some(&Path::from("lake/features/header")))
        .map_ok(|m| m.location.filename().unwrap().to_string())
        .try_collect()
        .await
        .unwrap();
    names.retain(|n| n.ends_with(".parquet"));
    names.sort();
    names
}

fn found(store: &FeatureStore, url: &str) -> bool {
    store.lookup(HEADER_GROUP, &row(url).fingerprint).is_some()
}

#[tokio::test]
async fn a_refresh_reads_only_the_parts_that_can_hold_its_buckets() {
    let objects = Arc::new(InMemory::new());
    let writer = store(&objects);
    let classes = by_class(3, 4);
    // Each class's rows were made by a task of its own: one part each, named by its class.
    for (residue, urls) in classes.iter().enumerate() {
        let buckets = Buckets::class(residue as u32, 4).unwrap();
        for url in urls {
            writer.add(vec![(HEADER_GROUP, row(url))], buckets);
        }
    }
    // And a scan of one process over files of every class: a part every task reads.
    let mixed = [&classes[0][0], &classes[1][0]];
    let writer_alone = store(&objects);
    for url in mixed {
        writer_alone.add(vec![(HEADER_GROUP, row(url))], Buckets::ALL);
    }
    writer.flush().await.unwrap();
    writer_alone.flush().await.unwrap();
    let names = part_names(&objects).await;
    assert_eq!(names.len(), 5, "{names:?}");
    // A part names the narrowest class of its rows: within its task's, apart from the others.
    for residue in 0..4 {
        let task = Buckets::class(residue, 4).unwrap();
        let holding: Vec<&String> = names
            .iter()
            .filter(|n| Buckets::of_part_name(n) != Buckets::ALL)
            .filter(|n| Buckets::of_part_name(n).overlaps(task))
            .collect();
        assert_eq!(holding.len(), 1, "{names:?}");
    }

    // A task of class 2 of 4 reads its part and the mixed one.
    let task = store(&objects);
    task.refresh(&[HEADER_GROUP], Buckets::class(2, 4).unwrap())
        .await
        .unwrap();
    assert_eq!(task.stats().parts_read.load(Ordering::Relaxed), 2);
    assert!(classes[2].iter().all(|u| found(&task, u)));
    assert!(found(&task, &classes[0][0]), "the mixed part was read");
    assert!(!found(&task, &classes[3][0]));
    // A task of a finer class reads its class's part; one of every bucket reads the rest.
    task.refresh(&[HEADER_GROUP], Buckets::class(3, 8).unwrap())
        .await
        .unwrap();
    assert_eq!(task.stats().parts_read.load(Ordering::Relaxed), 3);
    assert!(classes[3].iter().all(|u| found(&task, u)));
    task.refresh(&[HEADER_GROUP], Buckets::ALL).await.unwrap();
    assert_eq!(task.stats().parts_read.load(Ordering::Relaxed), 5);
    assert_eq!(task.stored_files(HEADER_GROUP), 12);
}

#[tokio::test]
async fn a_large_merge_is_split_by_bucket() {
    let objects = Arc::new(InMemory::new());
    let mut writer = store(&objects);
    writer.merged_part_rows = 3;
    let classes = by_class(2, 4);
    // Mixed parts, as one process writes them.
    for urls in classes.chunks(2) {
        for url in urls.iter().flatten() {
            writer.add(vec![(HEADER_GROUP, row(url))], Buckets::ALL);
        }
        writer.flush().await.unwrap();
    }
    let report = writer.compact().await.unwrap();
    assert_eq!((report.parts_merged, report.rows_kept), (2, 8));
    // 8 rows at most 3 a part: 4 parts, one per class of 4 (or narrower).
    let live = writer
        .live_parts(&group_schema(HEADER_GROUP).unwrap())
        .await
        .unwrap();
    assert_eq!(live.len(), 4, "{live:?}");
    for residue in 0..4 {
        let class = Buckets::class(residue, 4).unwrap();
        let holding = live
            .iter()
            .filter(|p| Buckets::of_part_name(p.filename().unwrap()).overlaps(class))
            .count();
        assert_eq!(holding, 1, "{live:?}");
    }

    let task = store(&objects);
    task.refresh(&[HEADER_GROUP], Buckets::class(1, 4).unwrap())
        .await
        .unwrap();
    assert_eq!(task.stats().parts_read.load(Ordering::Relaxed), 1);
    assert_eq!(task.stored_files(HEADER_GROUP), 2);
    assert!(classes[1].iter().all(|u| found(&task, u)));
}

#[tokio::test]
async fn a_small_merge_is_one_part() {
    let objects = Arc::new(InMemory::new());
    let writer = store(&objects);
    for urls in by_class(2, 4) {
        for url in &urls {
            writer.add(vec![(HEADER_GROUP, row(url))], Buckets::ALL);
        }
        writer.flush().await.unwrap();
    }
    let report = writer.compact().await.unwrap();
    assert_eq!((report.parts_merged, report.rows_kept), (4, 8));
    let names = part_names(&objects).await;
    // The four replaced parts stay until the next compaction; one merged part holds all.
    let live = writer
        .live_parts(&group_schema(HEADER_GROUP).unwrap())
        .await
        .unwrap();
    assert_eq!(live.len(), 1, "{names:?}");
    assert_eq!(
        Buckets::of_part_name(live[0].filename().unwrap()),
        Buckets::ALL
    );
}
