//! The `audiolake` command as a user runs it.

use std::path::Path;
use std::process::{Command, Output};

use audiolake_testkit::paths::fixtures;

fn audiolake(store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_audiolake"))
        .arg("sql")
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// The fixtures hold an M4A that symphonia's probe warns about and a corrupt file it logs an
/// error for: by default neither reaches the terminal (the corrupt file's reason is its row's
/// `error`); `RUST_LOG` brings them back.
#[test]
fn a_healthy_run_prints_nothing_on_stderr() {
    // A store of its own each time: a header read once is not read again.
    let run = |rust_log: Option<&str>| {
        let store = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_audiolake"));
        command.arg("sql").arg("--store").arg(store.path()).args([
            "--music",
            fixtures().to_str().unwrap(),
            "--format",
            "csv",
            "SELECT count(*) AS files, count(error) AS failed FROM music",
        ]);
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        command.output().unwrap()
    };
    let out = run(None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let out = run(Some("symphonia_core=warn"));
    assert!(
        stderr(&out).contains("symphonia_core::formats::probe"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn music_folder_as_csv() {
    let store = tempfile::tempdir().unwrap();
    let out = audiolake(
        store.path(),
        &[
            "--music",
            fixtures().to_str().unwrap(),
            "--format",
            "csv",
            "SELECT file_name, format, sample_rate, title FROM music \
             WHERE file_name LIKE 'tagged%' ORDER BY file_name",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "file_name,format,sample_rate,title\n\
         tagged.aiff,aiff,44100,Fixture AIFF\n\
         tagged.flac,flac,48000,Fixture FLAC\n\
         tagged.m4a,mp4,44100,Fixture M4A\n\
         tagged.ogg,ogg,44100,Café Ünïcode\n"
    );
}

#[test]
fn json_and_table_formats() {
    let store = tempfile::tempdir().unwrap();
    let music = fixtures();
    let sql = "SELECT file_name, channels FROM music WHERE file_name = 'plain.wav'";
    let out = audiolake(
        store.path(),
        &["--music", music.to_str().unwrap(), "--format", "json", sql],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "[{\"file_name\":\"plain.wav\",\"channels\":1}]\n"
    );

    let out = audiolake(store.path(), &["--music", music.to_str().unwrap(), sql]);
    assert_eq!(
        stdout(&out),
        "+-----------+----------+\n\
         | file_name | channels |\n\
         +-----------+----------+\n\
         | plain.wav | 1        |\n\
         +-----------+----------+\n"
    );
}

#[test]
fn tables_persist_between_runs() {
    let store = tempfile::tempdir().unwrap();
    let music = fixtures();
    let create = format!(
        "CREATE EXTERNAL TABLE lib STORED AS AUDIO LOCATION '{}' OPTIONS ('extensions' 'ogg,m4a')",
        music.display()
    );
    let allow = ["--allow", music.to_str().unwrap()];
    let out = audiolake(store.path(), &[allow[0], allow[1], &create]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = audiolake(
        store.path(),
        &[
            allow[0],
            allow[1],
            "--format",
            "csv",
            "SELECT count(*) AS n FROM lib",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // tagged.ogg, tagged.m4a and garbage.ogg (an error row)
    assert_eq!(stdout(&out), "n\n3\n");
}

#[test]
fn outside_locations_fail_with_a_clear_error() {
    let store = tempfile::tempdir().unwrap();
    let out = audiolake(
        store.path(),
        &["CREATE EXTERNAL TABLE p (line TEXT) STORED AS CSV LOCATION '/etc/passwd'"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(
            "error: location 'file:///etc/passwd' is outside the allowed locations (file://"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn help_documents_the_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_audiolake"))
        .args(["sql", "--help"])
        .output()
        .unwrap();
    let help = stdout(&out);
    for option in ["--store", "--allow", "--music", "--format", "--partitions"] {
        assert!(help.contains(option), "{option} missing from:\n{help}");
    }
}
