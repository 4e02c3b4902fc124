//! The feature store on a local directory: results are read back instead of recomputed, changes
//! to the collection are seen, results are plain tables, and compaction keeps everything.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use audiolake::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use audiolake::datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use audiolake::{AudioLake, FlushPolicy};
use audiolake_testkit::layout::{group_dir, version};
use audiolake_testkit::query::{explain, query};
use audiolake_testkit::store::CountingStore;
use audiolake_testkit_audio::tone::write_wav;
use object_store::ObjectStore;

struct Setup {
    _music: tempfile::TempDir,
    _store: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
}

/// Six tones of different pitch (3 s each) and one file that is not audio.
fn setup() -> Setup {
    let music = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(music.path()).unwrap();
    for i in 0..6 {
        write_wav(
            &dir.join(format!("tone{i}.wav")),
            3,
            220.0 * f64::from(i + 1),
        );
    }
    let broken = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/music/broken.mp3");
    std::fs::copy(broken, dir.join("broken.mp3")).unwrap();
    Setup {
        dir,
        store: std::fs::canonicalize(store.path()).unwrap(),
        _music: music,
        _store: store,
    }
}

/// An engine over the store with table `t` over the music, reading files through a counter;
/// its compactions delete what they replace at once.
async fn open(setup: &Setup, flush: FlushPolicy) -> (AudioLake, Arc<CountingStore>) {
    let lake = AudioLake::builder()
        .store(setup.store.to_str().unwrap())
        .allow_location(setup.dir.to_str().unwrap())
        .target_partitions(2)
        .flush_policy(flush)
        .compact_retention(std::time::Duration::ZERO)
        .build()
        .await
        .unwrap();
    let counting = Arc::new(CountingStore::new());
    lake.engine().session().register_object_store(
        &url::Url::parse("file:///").unwrap(),
        Arc::clone(&counting) as Arc<dyn ObjectStore>,
    );
    lake.register_audio_table("t", setup.dir.to_str().unwrap())
        .await
        .unwrap();
    (lake, counting)
}

/// Bytes read from audio files (the store's own Parquet parts excluded).
fn audio_bytes(counting: &CountingStore) -> u64 {
    counting
        .take()
        .into_iter()
        .filter(|(path, _)| !path.ends_with(".parquet"))
        .map(|(_, n)| n)
        .sum()
}

fn counts(lake: &AudioLake) -> (u64, u64) {
    let stats = lake.engine().feature_store().stats();
    (stats.analyzed(), stats.from_store())
}

const QUERY: &str = "SELECT file_name, rms_dbfs, spectral_centroid_hz, decode_errors FROM t \
                     ORDER BY file_name";

fn centroid(batch: &RecordBatch, row: usize) -> f64 {
    batch
        .column_by_name("spectral_centroid_hz")
        .unwrap()
        .as_primitive::<Float64Type>()
        .value(row)
}

fn parts(store: &Path, group: &str) -> usize {
    let dir = store.join("features").join(group);
    walk(&dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                walk(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzed_once_then_answered_from_the_store() {
    let setup = setup();
    let (lake, counting) = open(&setup, FlushPolicy::default()).await;
    let first = query(&lake, QUERY).await;
    assert_eq!(first.num_rows(), 7);
    assert!(audio_bytes(&counting) > 6 * 500_000);
    assert_eq!(counts(&lake), (7, 0));
    // tone0 is 220 Hz, tone5 1320 Hz: the centroid follows the pitch.
    assert!((centroid(&first, 1) - 220.0).abs() < 30.0, "{first:?}");
    assert!((centroid(&first, 6) - 1320.0).abs() < 60.0, "{first:?}");
    // broken.mp3 failed, and its failure is stored too.
    assert!(first.column(1).is_null(0));
    drop(lake);

    // Another engine on the same store: the same answer, and not one audio byte read.
    let (lake, counting) = open(&setup, FlushPolicy::default()).await;
    let again = query(&lake, QUERY).await;
    assert_eq!(again, first);
    assert_eq!(audio_bytes(&counting), 0);
    assert_eq!(counts(&lake), (0, 7));

    // The failure is explained the same way from the store.
    let errors = query(
        &lake,
        "SELECT analyze(path)['error'] AS e FROM t WHERE file_name = 'broken.mp3'",
    )
    .await;
    assert!(
        errors
            .column(0)
            .as_string::<i32>()
            .value(0)
            .contains("format"),
        "{errors:?}"
    );

    // A changed file is analysed again; a deleted one disappears; a renamed one is recognised
    // by its content and not decoded.
    write_wav(&setup.dir.join("tone1.wav"), 3, 3000.0);
    std::fs::remove_file(setup.dir.join("tone2.wav")).unwrap();
    std::fs::rename(setup.dir.join("tone3.wav"), setup.dir.join("renamed.wav")).unwrap();
    let before = counts(&lake);
    let changed = query(&lake, QUERY).await;
    let after = counts(&lake);
    assert_eq!(changed.num_rows(), 6);
    assert_eq!(after.0 - before.0, 1, "only the changed file is decoded");
    assert_eq!(after.1 - before.1, 5);
    let names = changed.column(0).as_string::<i32>();
    let row = |name: &str| (0..names.len()).find(|&i| names.value(i) == name).unwrap();
    assert!((centroid(&changed, row("tone1.wav")) - 3000.0).abs() < 150.0);
    assert_eq!(
        centroid(&changed, row("renamed.wav")),
        centroid(&first, 4),
        "the renamed file keeps tone3's results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_plain_tables() {
    let setup = setup();
    let (lake, _) = open(&setup, FlushPolicy::default()).await;
    let analyzed = query(&lake, "SELECT path, rms_dbfs FROM t ORDER BY path").await;
    // The layout: <store>/features/<group>/v<version>/*.parquet.
    assert!(parts(&setup.store, &group_dir("loudness")) >= 1);

    let stored = query(
        &lake,
        "SELECT path, rms_dbfs FROM features_loudness ORDER BY path",
    )
    .await;
    assert_eq!(stored.columns(), analyzed.columns());
    let failed = query(
        &lake,
        "SELECT count(*) AS n FROM features_loudness WHERE error IS NOT NULL",
    )
    .await;
    assert_eq!(failed.column(0).as_primitive::<Int64Type>().value(0), 1);

    let export = setup.store.join("exports/loudness.parquet");
    query(
        &lake,
        &format!(
            "COPY (SELECT path, rms_dbfs FROM features_loudness) TO '{}' STORED AS PARQUET",
            export.display()
        ),
    )
    .await;
    let back = query(
        &lake,
        &format!(
            "CREATE EXTERNAL TABLE back STORED AS PARQUET LOCATION '{}'; \
             SELECT count(*) FROM back WHERE rms_dbfs IS NOT NULL",
            export.display()
        ),
    )
    .await;
    assert_eq!(back.column(0).as_primitive::<Int64Type>().value(0), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_parts_and_drops_old_versions() {
    let setup = setup();
    let every_file = FlushPolicy {
        files: 1,
        ..FlushPolicy::default()
    };
    let (lake, _) = open(&setup, every_file).await;
    let first = query(&lake, QUERY).await;
    // Two partitions publishing after every file: at most two files per part.
    assert!(parts(&setup.store, &group_dir("spectral")) >= 4);
    // A change makes a second row for tone1; results of an old version, and of a group this
    // binary does not know (a newer one's), lie beside the current ones.
    write_wav(&setup.dir.join("tone1.wav"), 3, 2000.0);
    query(&lake, QUERY).await;
    let old_version = format!("spectral/v{}", version("spectral") - 1);
    let old = setup.store.join("features").join(&old_version);
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("part-old.parquet"), b"old").unwrap();
    let gone = setup.store.join("features/tempo/v3");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::write(gone.join("part-x.parquet"), b"x").unwrap();

    // Readers on other engines run while the compaction deletes the parts they list.
    let readers = async {
        for _ in 0..4 {
            let (reader, counting) = open(&setup, every_file).await;
            assert_eq!(query(&reader, QUERY).await.num_rows(), 7);
            assert_eq!(audio_bytes(&counting), 0);
        }
    };
    let (report, ()) = tokio::join!(lake.engine().compact_store(), readers);
    let report = report.unwrap();
    assert_eq!(
        report.rows_superseded, 2,
        "tone1's old loudness and spectral rows"
    );
    assert_eq!(report.stale_objects_removed, 1);
    assert_eq!(parts(&setup.store, &group_dir("spectral")), 1);
    assert_eq!(parts(&setup.store, &old_version), 0);
    assert_eq!(parts(&setup.store, "tempo"), 1);
    drop(lake);

    // Everything is still answered from the store.
    let (lake, counting) = open(&setup, every_file).await;
    let after = query(&lake, QUERY).await;
    assert_eq!(audio_bytes(&counting), 0);
    assert_eq!(after.num_rows(), first.num_rows());
    assert!((centroid(&after, 2) - 2000.0).abs() < 100.0, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_bump_touches_only_its_group() {
    let setup = setup();
    let (lake, _) = open(&setup, FlushPolicy::default()).await;
    query(&lake, "SELECT rms_dbfs, bpm FROM t").await;
    drop(lake);
    // What a new rhythm version looks like to the store: no results under its folder.
    let rhythm = std::fs::read_dir(setup.store.join("features/rhythm"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::rename(&rhythm, rhythm.with_file_name("v0")).unwrap();

    let (lake, counting) = open(&setup, FlushPolicy::default()).await;
    let before = audio_bytes(&counting);
    query(&lake, "SELECT rms_dbfs FROM t").await;
    assert_eq!(audio_bytes(&counting), before, "loudness is still stored");
    query(&lake, "SELECT rms_dbfs, bpm FROM t").await;
    assert!(audio_bytes(&counting) > 0, "rhythm is computed again");
    // 7 files answered from the store, then the same 7 decoded for rhythm alone.
    assert_eq!(counts(&lake), (7, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_table_reports_progress_in_a_system_table() {
    let setup = setup();
    let (lake, _) = open(&setup, FlushPolicy::default()).await;
    let report = lake.analyze_table("t").await.unwrap();
    // broken.mp3's header cannot be read: it is counted, not decoded.
    assert_eq!(
        (
            report.files,
            report.analyzed,
            report.from_store,
            report.unreadable
        ),
        (7, 6, 0, 1)
    );
    let again = lake.analyze_table("t").await.unwrap();
    assert_eq!((again.analyzed, again.from_store), (0, 6));

    let jobs = query(
        &lake,
        "SELECT table_name, files_total, files_done, files_to_go, finished, error, groups \
         FROM audiolake_progress ORDER BY started_at",
    )
    .await;
    assert_eq!(jobs.num_rows(), 2);
    for row in 0..2 {
        assert_eq!(jobs.column(0).as_string::<i32>().value(row), "t");
        assert_eq!(jobs.column(1).as_primitive::<Int64Type>().value(row), 7);
        assert_eq!(jobs.column(2).as_primitive::<Int64Type>().value(row), 7);
        assert_eq!(jobs.column(3).as_primitive::<Int64Type>().value(row), 0);
        assert!(jobs.column(4).as_boolean().value(row));
        assert!(jobs.column(5).is_null(row));
        assert_eq!(
            jobs.column(6).as_string::<i32>().value(row),
            "rhythm, tonal, loudness, spectral, timbre, musicnn"
        );
    }

    let err = lake.analyze_table("nope").await.unwrap_err().to_string();
    assert!(
        err.contains("table 'datafusion.public.nope' not found"),
        "{err}"
    );
}

/// The names of the groups with results under `<store>/features/`, sorted.
fn stored_groups(store: &Path) -> Vec<String> {
    let mut groups: Vec<String> = std::fs::read_dir(store.join("features"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    groups.sort();
    groups
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_table_with_groups_stores_only_those() {
    let setup = setup();
    let (lake, _) = open(&setup, FlushPolicy::default()).await;
    let report = lake
        .analyze_table_groups("t", &["Tonal", " rhythm ", "tonal"])
        .await
        .unwrap();
    assert_eq!(report.groups, ["rhythm", "tonal"]);
    assert_eq!(
        (report.files, report.analyzed, report.from_store),
        (7, 6, 0)
    );
    assert_eq!(stored_groups(&setup.store), ["header", "rhythm", "tonal"]);
    let rhythm_parts = || {
        let mut parts = walk(&setup.store.join("features/rhythm"));
        parts.sort();
        parts
    };
    let rhythm = rhythm_parts();

    // Every group: each file is decoded again, but only for the groups not stored yet.
    let full = lake.analyze_table("t").await.unwrap();
    assert_eq!(full.groups, audiolake::udf::features::GROUPS);
    assert_eq!((full.analyzed, full.from_store), (6, 0));
    let mut every: Vec<&str> = audiolake::udf::features::GROUPS.to_vec();
    every.push("header");
    every.sort_unstable();
    assert_eq!(stored_groups(&setup.store), every);
    assert_eq!(rhythm_parts(), rhythm, "rhythm is not stored twice");
    let again = lake
        .analyze_table_groups("t", &["loudness", "rhythm"])
        .await
        .unwrap();
    assert_eq!((again.analyzed, again.from_store), (0, 6));

    // Bad lists fail before anything is read, even the table's listing.
    let jobs = "SELECT count(*) FROM audiolake_progress";
    let before = query(&lake, jobs).await;
    let err = lake
        .analyze_table_groups("nope", &["rhythm", "beats"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown feature group \"beats\"; the groups are rhythm, tonal, loudness, spectral, \
         timbre, musicnn"
    );
    let err = lake
        .analyze_table_groups::<&str>("t", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no feature group was named; name one or more of rhythm, tonal, loudness, spectral, \
         timbre, musicnn, separated by commas"
    );
    assert_eq!(query(&lake, jobs).await, before, "no job was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_stored_so_an_analysed_collection_reads_no_file() {
    let setup = setup();
    let (lake, _) = open(&setup, FlushPolicy::default()).await;
    let report = lake.analyze_table_groups("t", &["loudness"]).await.unwrap();
    // broken.mp3's header cannot be read, so it is not decoded: its header holds the reason.
    assert_eq!(
        (report.files, report.analyzed, report.unreadable),
        (7, 6, 1)
    );
    assert_eq!(stored_groups(&setup.store), ["header", "loudness"]);
    drop(lake);

    // Header and analysis columns together, from another engine: not one audio byte read.
    let sql = "SELECT file_name, format, codec, sample_rate, channels, duration_s, rms_dbfs, \
               error FROM t ORDER BY file_name";
    let (lake, counting) = open(&setup, FlushPolicy::default()).await;
    let batch = query(&lake, sql).await;
    assert_eq!(audio_bytes(&counting), 0);
    assert_eq!(batch.num_rows(), 7);
    let text = |c: usize| batch.column(c).as_string::<i32>().clone();
    let int = |c: usize| batch.column(c).as_primitive::<Int32Type>().clone();
    let float = |c: usize| batch.column(c).as_primitive::<Float64Type>().clone();
    // Row 0 is broken.mp3, then tone0.wav ... tone5.wav.
    assert!(text(1).is_null(0));
    assert!(text(7).value(0).contains("format"), "{batch:?}");
    assert_eq!((text(1).value(1), text(2).value(1)), ("wav", "pcm"));
    assert_eq!((int(3).value(1), int(4).value(1)), (44_100, 2));
    assert!((float(5).value(1) - 3.0).abs() < 1e-9);
    assert!(float(6).value(1) < 0.0, "a tone's RMS is below full scale");
    assert!(text(7).is_null(1));

    // The stored headers are a plain table too.
    let stored = query(
        &lake,
        "SELECT count(*) AS n, count(error) AS failed FROM features_header",
    )
    .await;
    let n = |c: usize| stored.column(c).as_primitive::<Int64Type>().value(0);
    assert_eq!((n(0), n(1)), (7, 1));

    // A changed file's header is read again, and only its own.
    write_wav(&setup.dir.join("tone1.wav"), 5, 440.0);
    let headers = query(
        &lake,
        "SELECT file_name, duration_s FROM t ORDER BY file_name",
    )
    .await;
    assert!(audio_bytes(&counting) > 0);
    assert!((headers.column(1).as_primitive::<Float64Type>().value(2) - 5.0).abs() < 1e-9);
    query(&lake, "SELECT file_name, duration_s FROM t").await;
    assert_eq!(
        audio_bytes(&counting),
        0,
        "the new header is stored as well"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_analyses_only_the_rows_it_keeps() {
    let setup = setup();
    let (lake, _) = open(&setup, FlushPolicy::default()).await;
    let columns = "file_name, rms_dbfs, spectral_centroid_hz";
    let top = format!("SELECT {columns} FROM t ORDER BY file_name DESC LIMIT 3");
    let plan = explain(&lake, &top).await;
    assert!(
        plan.contains("analyze(t.path, Utf8(\"loudness,spectral\"))"),
        "{plan}"
    );
    let kept = query(&lake, &top).await;
    assert_eq!(kept.num_rows(), 3);
    assert_eq!(counts(&lake), (3, 0), "tone5, tone4 and tone3 only");

    // The same values as when every row is analysed (the other four now).
    let all = query(
        &lake,
        &format!("SELECT {columns} FROM t ORDER BY file_name DESC"),
    )
    .await;
    assert_eq!(counts(&lake), (7, 3));
    assert_eq!(all.slice(0, 3).columns(), kept.columns());

    // A filter on a header column cuts rows first too; a sort on an analysis column cannot,
    // and `error` (which holds analysis failures) keeps the analysis in the scan.
    let filtered = explain(
        &lake,
        "SELECT file_name, bpm FROM t WHERE duration_s > 2 LIMIT 2",
    )
    .await;
    assert!(
        filtered.contains("analyze(t.path, Utf8(\"rhythm\"))"),
        "{filtered}"
    );
    for sql in [
        "SELECT file_name, bpm FROM t ORDER BY bpm LIMIT 2",
        "SELECT file_name, bpm, error FROM t LIMIT 2",
        "SELECT file_name, decode_errors FROM t LIMIT 2",
    ] {
        let plan = explain(&lake, sql).await;
        assert!(!plan.contains("analyze("), "{sql}: {plan}");
    }
}
