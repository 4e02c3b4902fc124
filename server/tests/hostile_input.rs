//! Crafted audio through the binary: a WAV that declares an absurd sample rate, queried by a
//! read-only user over psql, is an error row and the server answers the next query; and
//! `audiolake analyze` over a folder holding it completes. Skips with a message without psql.

use std::process::Command;

use audiolake_testkit::paths::music;
use audiolake_testkit::pgserver::{have, stderr, stdout, PgServer, ALICE, BOB};
use audiolake_testkit_audio::crafted;

/// The binary under test.
const AUDIOLAKE: &str = env!("CARGO_BIN_EXE_audiolake");

const RATE_ERROR: &str =
    "unsupported sample rate 4294967291 Hz (audiolake reads 1000 to 768000 Hz)";

/// Two songs of `tests/music` and, in a subfolder, a WAV declaring 4,294,967,291 Hz.
fn collection() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for song in ["c_major_90.flac", "d_minor_140.ogg"] {
        std::fs::copy(music().join(song), dir.path().join(song)).unwrap();
    }
    std::fs::create_dir(dir.path().join("crafted")).unwrap();
    std::fs::write(
        dir.path().join("crafted/absurd_rate.wav"),
        crafted::pcm_wav(4_294_967_291, 1, 1000),
    )
    .unwrap();
    dir
}

#[test]
fn an_absurd_sample_rate_is_an_error_row_and_the_server_goes_on() {
    if !have("psql") {
        return;
    }
    let hostile = collection();
    let location = hostile.path().to_str().unwrap();
    let server = PgServer::start(AUDIOLAKE, &["--allow", location]);
    let created = server.psql(
        ALICE,
        &[
            "-c",
            &format!("CREATE EXTERNAL TABLE hostile STORED AS AUDIO LOCATION '{location}/'"),
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));

    let script = format!(
        "SELECT file_name, CAST(round(bpm) AS BIGINT), error FROM hostile ORDER BY file_name;\n\
         SELECT bpm('{location}/crafted/absurd_rate.wav') IS NULL, \
                analyze('{location}/crafted/absurd_rate.wav')['error'];\n\
         SELECT count(*) FROM music;\n"
    );
    let out = server.psql_script(BOB, &script, &[]);
    assert_eq!(
        stdout(&out),
        format!(
            "absurd_rate.wav||{RATE_ERROR}\n\
             c_major_90.flac|90|\n\
             d_minor_140.ogg|140|\n\
             t|{RATE_ERROR}\n\
             5\n"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn analyze_over_a_folder_with_a_crafted_file_completes() {
    let hostile = collection();
    let store = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(AUDIOLAKE)
            .args(args)
            .arg("--store")
            .arg(store.path())
            .arg("--music")
            .arg(hostile.path())
            .output()
            .unwrap()
    };
    let out = run(&["analyze", "--table", "music"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    assert!(
        summary.starts_with("music: 3 files, 2 analysed, 0 from the store, 1 unreadable"),
        "{summary}"
    );
    let out = run(&[
        "sql",
        "--format",
        "csv",
        "SELECT file_name, bpm IS NULL AS failed, error FROM music ORDER BY file_name",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "file_name,failed,error\n\
             absurd_rate.wav,true,{RATE_ERROR}\n\
             c_major_90.flac,false,\n\
             d_minor_140.ogg,false,\n"
        )
    );
}
