//! The musicnn columns and functions through SQL: the same scores as the network run directly
//! on the file, tags sorted and cut at k, genre/mood/instruments drawn from their tag sets, the
//! embedding unit-length, short audio padded and flagged, results read back from the store, and
//! `audiolake.musicnn_max_patches` choosing the patches and which stored results are reused.

use std::path::Path;

use audiolake::datafusion::arrow::array::{Array, AsArray};
use audiolake::datafusion::arrow::datatypes::{Float32Type, Int64Type};
use audiolake::AudioLake;
use audiolake_models::{Device, Kind, Musicnn};
use audiolake_testkit::query::query;
use audiolake_testkit_audio::tone::write_wav;
use audiolake_udf::features::musicnn::{labels, GENRES, INSTRUMENTS, INSTRUMENT_THRESHOLD, MOODS};

const CHORD: &str = "models/tests/data/chord_16k.wav";

fn f32s(array: &dyn Array, row: usize) -> Vec<f32> {
    let list = array.as_list::<i32>().value(row);
    list.as_primitive::<Float32Type>().values().to_vec()
}

/// A lake in `store` with table `t` over the files of `dir`.
async fn lake_over(store: &Path, dir: &Path) -> AudioLake {
    let lake = AudioLake::builder()
        .store(store.to_str().unwrap())
        .allow_location(dir.to_str().unwrap())
        .build()
        .await
        .unwrap();
    lake.register_audio_table("t", dir.to_str().unwrap())
        .await
        .unwrap();
    lake
}

/// The 16 kHz reference clip.
fn chord() -> Vec<f32> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(CHORD);
    let mut reader = hound::WavReader::open(path).unwrap();
    match reader.spec().sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => reader
            .samples::<i16>()
            .map(|s| f32::from(s.unwrap()) / 32768.0)
            .collect(),
    }
}

/// The scores and embedding of the networks run directly on 16 kHz `samples`: on the patches
/// numbered in `patches`, or on all of them.
fn direct_on(samples: &[f32], patches: Option<&[usize]>) -> (Vec<f32>, Vec<f32>) {
    let mut scores = Vec::new();
    let mut embedding = Vec::new();
    for kind in [Kind::Mtt, Kind::Msd] {
        let model = Musicnn::load_bundled(kind, &Device::Cpu).unwrap();
        let frames = model.logmel(samples);
        let n = model.patch_frames();
        let frames = match patches {
            None => frames,
            Some(patches) => patches
                .iter()
                .flat_map(|&p| frames[p * n..(p + 1) * n].to_vec())
                .collect(),
        };
        let track = model.analyze(&frames).unwrap();
        scores.extend_from_slice(&track.tags);
        embedding = track.embedding.to_vec();
    }
    (scores, embedding)
}

/// The scores and embedding of the network run directly on the 16 kHz reference clip.
fn direct() -> (Vec<f32>, Vec<f32>) {
    direct_on(&chord(), None)
}

#[tokio::test]
async fn musicnn_columns_match_the_network() {
    let music = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(music.path()).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(CHORD),
        dir.join("chord.wav"),
    )
    .unwrap();
    write_wav(&dir.join("short.wav"), 1, 440.0);
    let lake = lake_over(store.path(), &dir).await;

    let sql = "SELECT file_name, tag_scores, embedding, tags, genre, mood, instruments, \
               tags_padded, error FROM t ORDER BY file_name";
    let batch = query(&lake, sql).await;
    assert_eq!(batch.num_rows(), 2);
    let column = |name: &str| batch.column_by_name(name).unwrap().clone();
    assert!(column("error").is_null(0), "{:?}", column("error"));

    // The shared 16 kHz STFT gives the network what its own log-mel gives it.
    let (scores, embedding) = direct();
    let got = f32s(column("tag_scores").as_ref(), 0);
    assert_eq!(got.len(), 100);
    for (i, (g, w)) in got.iter().zip(&scores).enumerate() {
        assert!((g - w).abs() < 1e-4, "score {i}: {g} vs {w}");
    }
    let got = f32s(column("embedding").as_ref(), 0);
    assert_eq!(got.len(), 200);
    for (g, w) in got.iter().zip(&embedding) {
        assert!((g - w).abs() < 1e-3, "{g} vs {w}");
    }
    let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");

    // Tags: ten, best first, the best being the best of all 100 scores.
    let tags = column("tags");
    let tags = tags.as_list::<i32>().value(0);
    let tags = tags.as_struct();
    assert_eq!(tags.len(), 10);
    let tag_scores = tags
        .column(2)
        .as_primitive::<Float32Type>()
        .values()
        .to_vec();
    assert!(
        tag_scores.windows(2).all(|w| w[0] >= w[1]),
        "{tag_scores:?}"
    );
    let best = scores.iter().copied().fold(f32::MIN, f32::max);
    assert!((tag_scores[0] - best).abs() < 1e-6);

    let genre = column("genre");
    let genre = genre.as_string::<i32>().value(0);
    assert!(GENRES.contains(&genre), "{genre}");
    let mood = column("mood");
    let mood = mood.as_string::<i32>().value(0);
    assert!(MOODS.contains(&mood), "{mood}");
    let instruments = column("instruments");
    let instruments = instruments.as_list::<i32>().value(0);
    let labels = labels().unwrap();
    for name in instruments.as_string::<i32>().iter().flatten() {
        assert!(INSTRUMENTS.contains(&name), "{name}");
        let i = labels
            .iter()
            .position(|l| l == &("mtt", name.to_string()))
            .unwrap();
        assert!(scores[i] > INSTRUMENT_THRESHOLD, "{name}: {}", scores[i]);
    }
    let padded = column("tags_padded");
    assert!(!padded.as_boolean().value(0));
    assert!(padded.as_boolean().value(1), "a 1 s file is padded");
    assert_eq!(f32s(column("tag_scores").as_ref(), 1).len(), 100);

    // The functions: k cuts the list, k past 100 gives all, a negative k is an error.
    let path = format!("{}/chord.wav", dir.display());
    let batch = query(
        &lake,
        &format!(
            "SELECT tags('{path}', 3) AS a, tags('{path}', 500) AS b, embedding('{path}') AS e"
        ),
    )
    .await;
    assert_eq!(batch.column(0).as_list::<i32>().value(0).len(), 3);
    assert_eq!(batch.column(1).as_list::<i32>().value(0).len(), 100);
    assert_eq!(
        f32s(batch.column(2).as_ref(), 0),
        got_embedding(&lake, &path).await
    );
    let err = lake
        .sql(&format!("SELECT tags('{path}', -1)"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("tags: k must not be negative, got -1"),
        "{err}"
    );
}

async fn got_embedding(lake: &AudioLake, path: &str) -> Vec<f32> {
    let batch = query(
        lake,
        &format!(
            "SELECT embedding FROM t WHERE path LIKE '%{}'",
            path.rsplit('/').next().unwrap()
        ),
    )
    .await;
    f32s(batch.column(0).as_ref(), 0)
}

#[tokio::test]
async fn device_setting_is_checked_when_set() {
    let store = tempfile::tempdir().unwrap();
    let lake = AudioLake::builder()
        .store(store.path().to_str().unwrap())
        .build()
        .await
        .unwrap();
    let set = |sql: &'static str| {
        let lake = &lake;
        async move {
            match lake.sql(sql).await {
                Ok(frame) => frame.collect().await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    if audiolake_models::parse_device("cuda:0").is_err() {
        assert_eq!(
            set("SET audiolake.device = 'cuda:0'").await.unwrap_err(),
            "invalid setting: audiolake.device: audiolake was built without the cuda feature; \
             rebuild with --features cuda"
        );
    }
    assert_eq!(
        set("SET audiolake.device = 'tpu'").await.unwrap_err(),
        "invalid setting: audiolake.device: unknown device \"tpu\": expected cpu, cuda or cuda:N"
    );
    set("SET audiolake.device = 'cpu'").await.unwrap();
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-4, "score {i}: {g} vs {w}");
    }
}

#[tokio::test]
async fn musicnn_max_patches_chooses_the_patches_and_stored_results_follow_it() {
    let music = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(music.path()).unwrap();
    // The clip four times at different levels: 32 s whose patches differ.
    let chord = chord();
    let samples: Vec<f32> = [1.0, 0.5, 0.25, 0.8]
        .iter()
        .flat_map(|gain| chord.iter().map(move |s| s * gain))
        .collect();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let file = dir.join("long.wav");
    let mut writer = hound::WavWriter::create(&file, spec).unwrap();
    for s in &samples {
        writer.write_sample(*s).unwrap();
    }
    writer.finalize().unwrap();

    let model = Musicnn::load_bundled(Kind::Msd, &Device::Cpu).unwrap();
    let total = model.logmel(&samples).len() / model.patch_frames();
    assert_eq!(total, 10, "whole patches in the file");
    let every = direct_on(&samples, None).0;
    // Three of ten, spread evenly: the centres of three equal stretches.
    let three = direct_on(&samples, Some(&[1, 5, 8])).0;
    assert!(
        every.iter().zip(&three).any(|(a, b)| (a - b).abs() > 1e-3),
        "the patches must differ for the test to tell them apart"
    );

    let lake = lake_over(store.path(), &dir).await;
    let analyzed = || lake.engine().feature_store().stats().analyzed();
    let read = || async {
        let batch = query(
            &lake,
            "SELECT tags_patches, tags_max_patches, tag_scores FROM t",
        )
        .await;
        let int = |i: usize| batch.column(i).as_primitive::<Int64Type>().value(0);
        (int(0), int(1), f32s(batch.column(2).as_ref(), 0))
    };
    let set = |n: usize| {
        let lake = &lake;
        async move {
            let sql = format!("SET audiolake.musicnn_max_patches = {n}");
            lake.sql(&sql).await.unwrap().collect().await.unwrap();
        }
    };

    // The default, 16, is more than the file has: every patch.
    let (patches, setting, scores) = read().await;
    assert_eq!((patches, setting, analyzed()), (10, 16, 1));
    assert_close(&scores, &every);

    // Three: the networks see patches 1, 5 and 8; asked again, the store answers.
    set(3).await;
    let (patches, setting, scores) = read().await;
    assert_eq!((patches, setting, analyzed()), (3, 3, 2));
    assert_close(&scores, &three);
    assert_eq!(read().await.0, 3);
    assert_eq!(analyzed(), 2);

    // Every patch again is another analysis; then 16 reuses it, since 16 also takes all ten.
    set(0).await;
    let (patches, setting, scores) = read().await;
    assert_eq!((patches, setting, analyzed()), (10, 0, 3));
    assert_close(&scores, &every);
    set(16).await;
    assert_eq!(read().await.0, 10);
    assert_eq!(analyzed(), 3);

    // The function follows the same setting.
    set(3).await;
    let path = file.display();
    let batch = query(
        &lake,
        &format!("SELECT analyze('{path}', 'musicnn')['tags_patches'] AS n"),
    )
    .await;
    assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 3);
    assert_eq!(analyzed(), 4);
}
