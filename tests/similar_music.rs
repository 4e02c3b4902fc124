//! "Tracks that sound like this one" on the shared corpus (skipped without it): an HNSW index on
//! the musicnn embeddings of an AUDIO table answers a filtered kNN query with the same rows as an
//! exact scan, and again after a restart, from the index kept in the store.

use std::path::Path;

use audiolake::AudioLake;
use audiolake_testkit::query::{explain, query_strings};
use audiolake_testkit_audio::corpus;

async fn open(store: &Path, corpus: &Path) -> AudioLake {
    AudioLake::builder()
        .store(store.to_str().unwrap())
        .allow_location(corpus.to_str().unwrap())
        .target_partitions(2)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sounds_like_query_uses_the_index_and_survives_a_restart() {
    let Some(corpus) = corpus::find() else {
        return;
    };
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), &corpus).await;
    lake.sql(&format!(
        "CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION '{}/'",
        corpus.display()
    ))
    .await
    .unwrap();
    // Builds from the embeddings, computing them (and storing them) on the way.
    lake.sql("CREATE INDEX music_sound ON music USING hnsw (embedding vector_cosine_ops)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    let seed = "(SELECT embedding FROM music WHERE path LIKE '%bach_bwv402.mp3')";
    let knn = format!(
        "SELECT path FROM music WHERE mode = 'minor' ORDER BY embedding <=> {seed} LIMIT 10"
    );
    // `+ 0` hides the distance from the rewrite: the exact answer.
    let exact = format!(
        "SELECT path FROM music WHERE mode = 'minor' ORDER BY (embedding <=> {seed}) + 0 LIMIT 10"
    );
    let minor = query_strings(
        &lake,
        "SELECT path FROM music WHERE mode = 'minor' AND embedding IS NOT NULL",
    )
    .await
    .len();
    assert!(
        minor >= 10,
        "the corpus has {minor} minor files with an embedding"
    );

    assert!(explain(&lake, &knn)
        .await
        .contains("HnswIndexScan: index=music_sound"));
    assert!(!explain(&lake, &exact).await.contains("HnswIndexScan"));
    let want = query_strings(&lake, &exact).await;
    assert_eq!(want.len(), 10);
    assert_eq!(query_strings(&lake, &knn).await, want);
    drop(lake);

    let lake = open(store.path(), &corpus).await;
    assert!(explain(&lake, &knn)
        .await
        .contains("HnswIndexScan: index=music_sound"));
    assert_eq!(query_strings(&lake, &knn).await, want);
}
