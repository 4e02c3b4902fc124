//! Crafted audio among real music, through the embedded API: every crafted file is a row with
//! an exact `error` (or, for a cut MP3, the length present), every good row keeps its values,
//! and the path functions give NULL and the reason. None of it may abort the process.

use std::path::Path;

use audiolake::datafusion::arrow::array::AsArray;
use audiolake::datafusion::arrow::datatypes::Float64Type;
use audiolake::AudioLake;
use audiolake_testkit::paths::{fixtures, music};
use audiolake_testkit::query::{query, texts};
use audiolake_testkit_audio::crafted::{pcm_wav, silent_flac, wav, FLAC_BLOCK};

/// The four songs of `tests/music`, and the crafted files in `crafted/`.
fn collection() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for song in [
        "a_minor_120.mp3",
        "c_major_90.flac",
        "d_minor_140.ogg",
        "g_major_100.m4a",
    ] {
        std::fs::copy(music().join(song), dir.path().join(song)).unwrap();
    }
    let crafted = dir.path().join("crafted");
    std::fs::create_dir(&crafted).unwrap();
    let cbr = std::fs::read(fixtures().join("cbr.mp3")).unwrap();
    let files: [(&str, Vec<u8>); 7] = [
        ("rate_4294967291.wav", pcm_wav(4_294_967_291, 1, 1000)),
        ("rate_999983.wav", pcm_wav(999_983, 2, 1000)),
        ("rate_1.wav", pcm_wav(1, 1, 1000)),
        ("rate_1.flac", silent_flac(1, 8 * FLAC_BLOCK, 8)),
        ("channels_1024.wav", pcm_wav(44_100, 1024, 4096)),
        ("bits_64.wav", wav(1, 1, 44_100, 64, 1000, 1000)),
        ("cut_xing.mp3", cbr[..cbr.len() / 2].to_vec()),
    ];
    for (name, bytes) in files {
        std::fs::write(crafted.join(name), bytes).unwrap();
    }
    dir
}

async fn open(store: &Path, music: &Path) -> AudioLake {
    let lake = AudioLake::builder()
        .store(store.to_str().unwrap())
        .allow_location(music.to_str().unwrap())
        .target_partitions(2)
        .build()
        .await
        .unwrap();
    lake.sql(&format!(
        "CREATE EXTERNAL TABLE music STORED AS AUDIO LOCATION '{}'",
        music.display()
    ))
    .await
    .unwrap();
    lake
}

fn rate_error(rate: u32) -> String {
    format!("unsupported sample rate {rate} Hz (audiolake reads 1000 to 768000 Hz)")
}

const BAD_CHANNELS: &str = "invalid audio header: riff: invalid channel count";
const BAD_BITS: &str =
    "invalid audio header: wav: bits per sample for fmt_pcm must be 8, 16, 24 or 32 bits";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_files_are_error_rows_and_good_rows_keep_their_values() {
    let music = collection();
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), music.path()).await;

    // The query that once grew the process to 17 GB: no header is read, every file decoded.
    let batch = query(
        &lake,
        "SELECT file_name, CAST(round(bpm) AS BIGINT) AS bpm FROM music ORDER BY file_name",
    )
    .await;
    assert_eq!(
        texts(&batch, "file_name"),
        [
            "a_minor_120.mp3",
            "bits_64.wav",
            "c_major_90.flac",
            "channels_1024.wav",
            "cut_xing.mp3",
            "d_minor_140.ogg",
            "g_major_100.m4a",
            "rate_1.flac",
            "rate_1.wav",
            "rate_4294967291.wav",
            "rate_999983.wav",
        ]
    );
    let bpm = texts(&batch, "bpm");
    assert_eq!(
        bpm,
        [
            "120",
            "NULL",
            "90",
            "NULL",
            bpm[4].as_str(),
            "140",
            "100",
            "NULL",
            "NULL",
            "NULL",
            "NULL"
        ]
    );

    let batch = query(
        &lake,
        "SELECT file_name, CAST(round(duration_s) AS BIGINT) AS duration_s, CAST(round(bpm) AS BIGINT) AS bpm, key, \
                array_length(mfcc) AS mfcc, embedding IS NULL AS no_embedding, error \
         FROM music ORDER BY file_name",
    )
    .await;
    let rows: Vec<Vec<String>> = (0..batch.num_rows())
        .map(|i| {
            [
                "file_name",
                "duration_s",
                "bpm",
                "key",
                "mfcc",
                "no_embedding",
                "error",
            ]
            .iter()
            .map(|c| texts(&batch, c)[i].clone())
            .collect()
        })
        .collect();
    let refused = |name: &str, error: &str| -> Vec<String> {
        [name, "NULL", "NULL", "NULL", "NULL", "true", error]
            .map(str::to_string)
            .to_vec()
    };
    let song = |name: &str, bpm: &str, key: &str| -> Vec<String> {
        [name, "16", bpm, key, "13", "false", "NULL"]
            .map(str::to_string)
            .to_vec()
    };
    let expected = vec![
        song("a_minor_120.mp3", "120", "A"),
        refused("bits_64.wav", BAD_BITS),
        song("c_major_90.flac", "90", "C"),
        refused("channels_1024.wav", BAD_CHANNELS),
        rows[4].clone(),
        song("d_minor_140.ogg", "140", "D"),
        song("g_major_100.m4a", "100", "G"),
        refused("rate_1.flac", &rate_error(1)),
        refused("rate_1.wav", &rate_error(1)),
        refused("rate_4294967291.wav", &rate_error(4_294_967_291)),
        refused("rate_999983.wav", &rate_error(999_983)),
    ];
    assert_eq!(rows, expected);

    // The cut MP3 reads as the second present (rounded), never as the 2 s its Xing header claims.
    let cut = &rows[4];
    assert_eq!(cut[0], "cut_xing.mp3");
    let duration: f64 = cut[1].parse().unwrap();
    assert!((0.5..=1.1).contains(&duration), "{cut:?}");
    assert_eq!(cut[6], "NULL", "{cut:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_functions_on_a_crafted_file_give_null_and_the_reason() {
    let music = collection();
    let store = tempfile::tempdir().unwrap();
    let lake = open(store.path(), music.path()).await;
    let path = music.path().join("crafted/rate_4294967291.wav");
    let path = path.display();
    let batch = query(
        &lake,
        &format!(
            "SELECT bpm('{path}') AS bpm, musical_key('{path}') AS key, \
                    mfcc('{path}') IS NULL AS no_mfcc, analyze('{path}')['error'] AS error, \
                    analyze('{path}')['loudness_lufs'] AS lufs, decode('{path}') IS NULL AS no_samples, \
                    decode('{path}', 16000) IS NULL AS no_resampled"
        ),
    )
    .await;
    let row: Vec<String> = [
        "bpm",
        "key",
        "no_mfcc",
        "error",
        "lufs",
        "no_samples",
        "no_resampled",
    ]
    .iter()
    .map(|c| texts(&batch, c)[0].clone())
    .collect();
    assert_eq!(
        row,
        [
            "NULL",
            "NULL",
            "true",
            rate_error(4_294_967_291).as_str(),
            "NULL",
            "true",
            "true"
        ]
    );
    // A good file in the same query still answers.
    let good = music.path().join("c_major_90.flac");
    let batch = query(&lake, &format!("SELECT bpm('{}') AS bpm", good.display())).await;
    let bpm = batch.column(0).as_primitive::<Float64Type>().value(0);
    assert_eq!(bpm.round(), 90.0);
}
