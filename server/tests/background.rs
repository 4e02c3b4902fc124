//! Background analysis in the server, through psql: `serve --watch` analyses a folder's new
//! files without a query, through file-system notifications too; `CALL analyze_table('t')`
//! starts a job that `audiolake_progress` shows, and read-only users cannot start one; jobs
//! run on threads of lower priority than queries.

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

#[test]
fn a_watched_local_folder_gets_a_new_file_analysed_on_its_notification() {
    if !have("psql") {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(folder.path()).unwrap();
    let location = dir.to_str().unwrap();
    // An hour between listings: only a notification can start the job that finds the file.
    let server = PgServer::start(
        AUDIOLAKE,
        &["--allow", location, "--watch", "--watch-interval", "3600"],
    );
    let created = server.psql(
        ALICE,
        &[
            "-c",
            &format!("CREATE EXTERNAL TABLE watched STORED AS AUDIO LOCATION '{location}/'"),
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    // Jobs of the table: how many, how many ended, and the files of the last one.
    let jobs = "SELECT count(*), count(*) FILTER (WHERE finished), max(files_total) \
                FROM audiolake_progress WHERE table_name = 'watched'";
    // A table created while the server runs gets a job within seconds: the folder is empty.
    wait_for(&server, jobs, |rows| rows == "1|1|0\n");

    // Files the table does not list start nothing: another extension, a hidden file. Waiting
    // past the watcher's quiet time (1 s) shows it.
    std::fs::write(dir.join("notes.txt"), "not audio").unwrap();
    std::fs::copy(
        music().join("d_minor_140.ogg"),
        dir.join(".d_minor_140.ogg"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(stdout(&server.psql(ALICE, &["-c", jobs])), "1|1|0\n");

    copy_song("c_major_90.flac", &dir);
    let stored = format!(
        "SELECT round(r.bpm)::int, t.key, t.mode FROM features_rhythm r \
         JOIN features_tonal t ON r.path = t.path WHERE r.path LIKE 'file://{location}/%'"
    );
    assert_eq!(
        wait_for(&server, &stored, |rows| !rows.is_empty()),
        "90|C|major\n"
    );
    // Once every job has ended (a busy machine may see the new one still running).
    let ended = |rows: &str| {
        let counts: Vec<&str> = rows.trim().split('|').collect();
        rows.ends_with("|1\n") && counts[0] == counts[1]
    };
    assert_eq!(wait_for(&server, jobs, ended), "2|2|1\n");
    // The job read the file and wrote the store: neither is a change that starts a job.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(stdout(&server.psql(ALICE, &["-c", jobs])), "2|2|1\n");
}

/// A thread of a process, from `/proc/PID/task/TID/stat`.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Thread {
    name: String,
    nice: i64,
    /// CPU time used, user and system, in clock ticks.
    cpu: u64,
}

/// The threads of process `pid` now, by thread id.
#[cfg(target_os = "linux")]
fn threads(pid: u32) -> std::collections::HashMap<u32, Thread> {
    let mut threads = std::collections::HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        // A thread that ended since the listing has no stat.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `tid (name) state ...`: the name may hold spaces and parentheses.
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        // From the third field on: utime and stime are the 14th and 15th, nice the 19th.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let number = |i: usize| fields[i - 3].parse::<i64>().unwrap();
        let tid = task.file_name().to_str().unwrap().parse().unwrap();
        let cpu = u64::try_from(number(14) + number(15)).unwrap();
        threads.insert(
            tid,
            Thread {
                name,
                nice: number(19),
                cpu,
            },
        );
    }
    threads
}

#[cfg(target_os = "linux")]
#[test]
fn background_jobs_run_on_threads_of_lower_priority_than_queries() {
    if !have("psql") {
        return;
    }
    let server = PgServer::start(AUDIOLAKE, &[]);
    let pid = server.pid();
    let started = server.psql(ALICE, &["-c", "CALL analyze_table('music')"]);
    assert!(started.status.success(), "{}", stderr(&started));
    // Every thread seen while the job ran, as last seen (the job's blocking threads end ten
    // seconds after their last task).
    let mut seen = std::collections::HashMap::new();
    let begun = Instant::now();
    loop {
        seen.extend(threads(pid));
        let done = server.psql(
            ALICE,
            &[
                "-c",
                "SELECT count(*) FROM audiolake_progress WHERE finished",
            ],
        );
        if stdout(&done) == "1\n" {
            break;
        }
        assert!(
            begun.elapsed() < Duration::from_secs(120),
            "the job did not end: {}",
            stderr(&done)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    seen.extend(threads(pid));
    let analysed = server.psql(
        ALICE,
        &[
            "-c",
            "SELECT count(*) FROM features_musicnn WHERE error IS NULL",
        ],
    );
    assert_eq!(stdout(&analysed), "4\n");

    // The main thread's nice value is the server's (0 unless it was started niced).
    let server_nice = seen[&pid].nice;
    let named = |name: &str| -> Vec<&Thread> { seen.values().filter(|t| t.name == name).collect() };
    let background = named("audiolake-bg");
    // Two workers, and the blocking threads that decoded and analysed the files.
    assert!(background.len() > 2, "{seen:#?}");
    for thread in &background {
        assert!(
            thread.nice > server_nice,
            "{thread:?}, server at {server_nice}"
        );
    }
    assert!(
        background.iter().map(|t| t.cpu).sum::<u64>() > 0,
        "{background:#?}"
    );
    // The job ran the networks on a pool of its own, at its priority, and not through the
    // batchers that queries share.
    let cpu = |threads: &[&Thread]| threads.iter().map(|t| t.cpu).sum::<u64>();
    let networks = named("audiolake-bg-nn");
    assert!(!networks.is_empty(), "no audiolake-bg-nn thread: {seen:#?}");
    for thread in &networks {
        assert!(
            thread.nice > server_nice,
            "{thread:?}, server at {server_nice}"
        );
    }
    let shared = named("musicnn-batcher");
    assert!(
        cpu(&networks) > 10 * cpu(&shared),
        "networks {networks:#?}, shared batchers {shared:#?}"
    );
    // The server's runtime, which runs queries, keeps the server's priority, and so do the
    // batchers' workers, although the job was the first to need the networks.
    for name in ["tokio-rt-worker", "musicnn-batcher"] {
        let threads = named(name);
        assert!(!threads.is_empty(), "no {name} thread: {seen:#?}");
        for thread in threads {
            assert_eq!(thread.nice, server_nice, "{thread:?}");
        }
    }
}
