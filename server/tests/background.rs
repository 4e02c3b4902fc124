//! Background analysis in the server, through psql: `serve --watch` analyses a folder's new
//! files without a query, `CALL analyze_table('t')` starts a job that `audiolake_progress`
//! shows, and read-only users cannot start one.

use std::path::Path;
use std::time::{Duration, Instant};

use audiolake_testkit::paths::music;
use audiolake_testkit::pgserver::{have, stderr, stdout, PgServer, ALICE, BOB};

const AUDIOLAKE: &str = env!("CARGO_BIN_EXE_audiolake");

/// What `sql` prints, asked again every half second until `done` accepts it (two minutes at
/// most: the analysis runs in a debug build).
fn wait_for(server: &PgServer, sql: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let out = server.psql(ALICE, &["-c", sql]);
        let text = stdout(&out);
        if done(&text) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{sql} still gives {text:?} ({})",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn copy_song(name: &str, to: &Path) {
    std::fs::copy(music().join(name), to.join(name)).unwrap();
}

#[test]
fn a_watched_folder_gets_new_files_analysed_without_a_query() {
    if !have("psql") {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(folder.path()).unwrap();
    copy_song("c_major_90.flac", &dir);
    let location = dir.to_str().unwrap();
    let server = PgServer::start(
        AUDIOLAKE,
        &["--allow", location, "--watch", "--watch-interval", "1"],
    );
    let created = server.psql(
        ALICE,
        &[
            "-c",
            &format!("CREATE EXTERNAL TABLE watched STORED AS AUDIO LOCATION '{location}/'"),
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));

    // The stored results, read as a plain table: no query of `watched` analyses anything.
    let stored = format!(
        "SELECT count(*) FROM features_rhythm WHERE path LIKE 'file://{location}/%' AND bpm > 0"
    );
    wait_for(&server, &stored, |n| n == "1\n");
    copy_song("d_minor_140.ogg", &dir);
    wait_for(&server, &stored, |n| n == "2\n");
    let jobs = stdout(&server.psql(
        ALICE,
        &[
            "-c",
            "SELECT DISTINCT table_name FROM audiolake_progress ORDER BY table_name",
        ],
    ));
    assert_eq!(jobs, "music\nwatched\n", "every AUDIO table is watched");
}

#[test]
fn a_job_started_over_the_protocol_shows_in_progress_and_read_only_users_cannot() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let refused = server.psql(BOB, &["-c", "CALL analyze_table('music')"]);
    assert!(
        stderr(&refused).contains(
            "permission denied: user bob is read-only and cannot run: CALL analyze_table('music')"
        ),
        "{}",
        stderr(&refused)
    );
    for (call, error) in [
        (
            "CALL analyze_table('nope')",
            "nope is not an AUDIO table of this server",
        ),
        (
            "CALL analyze_table(music)",
            "analyze_table takes one table name as a string, e.g. CALL analyze_table('music')",
        ),
        ("CALL vacuum('music')", "procedure vacuum does not exist"),
    ] {
        let out = server.psql(ALICE, &["-c", call]);
        assert!(stderr(&out).contains(error), "{call}: {}", stderr(&out));
    }
    let jobs = "SELECT count(*) FROM audiolake_progress";
    assert_eq!(stdout(&server.psql(ALICE, &["-c", jobs])), "0\n");

    let started = server.psql(ALICE, &["-c", "CALL analyze_table('music')"]);
    assert!(started.status.success(), "{}", stderr(&started));
    assert_eq!(stderr(&started), "");
    // tests/music: four songs and a broken MP3, whose header cannot be read.
    let done = wait_for(
        &server,
        "SELECT table_name, groups, files_total, files_done, error IS NULL \
         FROM audiolake_progress WHERE finished",
        |rows| !rows.is_empty(),
    );
    assert_eq!(
        done,
        "music|rhythm, tonal, loudness, spectral, timbre, musicnn|5|5|t\n"
    );
    let analysed = stdout(&server.psql(
        ALICE,
        &[
            "-c",
            "SELECT count(*) FROM features_musicnn WHERE error IS NULL",
        ],
    ));
    assert_eq!(analysed, "4\n");
    // Nothing runs now: stopping is not an error.
    let stopped = server.psql(ALICE, &["-c", "CALL stop_analysis('music')"]);
    assert!(stopped.status.success(), "{}", stderr(&stopped));
}
