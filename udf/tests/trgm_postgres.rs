//! Compares `audiolake_udf::trgm` with pg_trgm in a real PostgreSQL (Debian's `postgresql`
//! package: `/usr/lib/postgresql/*/bin`), started on a temporary folder and a free loopback port
//! with a UTF-8 database in the `C.UTF-8` locale. Skips, saying so, when no server is installed;
//! `.ci/clients.sh` installs one for CI.

use audiolake_udf::trgm::{
    show_trgm_text, similar, similarity, word_similar, word_similarity,
    DEFAULT_SIMILARITY_THRESHOLD, DEFAULT_WORD_SIMILARITY_THRESHOLD,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Messy music titles and artists: typos, "feat.", punctuation, casing, sort forms, remix
/// suffixes, digits, accents (composed and decomposed), other scripts, empty strings.
const PAIRS: &[(&str, &str)] = &[
    ("The Beatles", "Beatles, The"),
    ("The Beatles", "the beatles"),
    ("Beatles", "The Beatles - Abbey Road"),
    ("Beyoncé", "Beyonce"),
    ("Beyoncé", "BEYONCÉ"),
    ("Beyonce\u{301}", "Beyoncé"),
    ("Beyoncé feat. Jay-Z", "Beyonce ft Jay Z"),
    ("Crazy in Love (feat. Jay-Z)", "Crazy In Love"),
    ("Bohemian Rhapsody", "Bohemian Rapsody"),
    ("Bohemian Rhapsody - Remastered 2011", "Bohemian Rhapsody"),
    ("Stairway to Heaven", "Stairway 2 Heaven"),
    ("Smells Like Teen Spirit", "smells like teen sprit"),
    ("Hey Jude", "Hey Jude (Remix)"),
    ("Blinding Lights", "Blinding Lights - Chromatics Remix"),
    ("Levitating (feat. DaBaby)", "Levitating feat DaBaby"),
    ("Sigur Rós", "Sigur Ros"),
    ("Motörhead", "Motorhead"),
    ("Björk", "Bjork"),
    ("Mötley Crüe", "Motley Crue"),
    ("Sinéad O'Connor", "Sinead OConnor"),
    ("AC/DC", "ACDC"),
    ("AC/DC", "AC DC"),
    ("Guns N' Roses", "Guns and Roses"),
    ("P!nk", "Pink"),
    ("Ke$ha", "Kesha"),
    ("will.i.am", "Will I Am"),
    ("Florence + the Machine", "Florence and The Machine"),
    ("Earth, Wind & Fire", "Earth Wind and Fire"),
    ("Simon & Garfunkel", "Simon and Garfunkel"),
    ("blink-182", "Blink 182"),
    ("Sum 41", "Sum41"),
    ("1999", "Nineteen Ninety-Nine"),
    ("99 Problems", "99 problems (explicit)"),
    ("The 1975", "1975"),
    ("U2", "U 2"),
    (
        "Daft Punk",
        "Daft Punk - Get Lucky (Radio Edit) [feat. Pharrell Williams]",
    ),
    (
        "Get Lucky",
        "Daft Punk - Get Lucky (Radio Edit) [feat. Pharrell Williams]",
    ),
    ("lucky", "Get Lucky"),
    ("Rhapsody", "Bohemian Rhapsody"),
    ("Queen", "Queens of the Stone Age"),
    ("Stone", "The Rolling Stones"),
    ("Rolling", "Rolling in the Deep"),
    ("Adele - Hello", "Hello - Adele"),
    ("Hello", "hello hello hello"),
    ("Don't Stop Me Now", "Dont Stop Me Now"),
    ("Don't Stop Believin'", "Don't Stop Believing"),
    ("Sweet Child O' Mine", "Sweet Child of Mine"),
    ("Ólafur Arnalds", "Olafur Arnalds"),
    ("Ólafur Arnalds", "ÓLAFUR ARNALDS"),
    ("Røyksopp", "Royksopp"),
    ("Måneskin", "Maneskin"),
    ("Ça plane pour moi", "Ca plane pour moi"),
    ("Straße", "Strasse"),
    ("ΑΒΒΑ", "αββα"),
    ("坂本龍一", "坂本 龍一"),
    ("Tchaikovsky: Symphony No. 6", "Tschaikowsky Sinfonie Nr. 6"),
    ("Mozart - Requiem in D minor, K. 626", "Requiem K626"),
    ("a", "a"),
    ("ab", "abc"),
    ("", "The Beatles"),
    ("The Beatles", ""),
    ("", ""),
    ("!!!", "Chk Chk Chk"),
    ("   ", "  -- "),
    ("Track 01", "Track 1"),
    ("Track 01", "track_01.mp3"),
    (
        "Tiësto & Hardwell — Zero 76",
        "Tiesto and Hardwell - Zero 76",
    ),
    ("Nirvana😀", "Nirvana"),
    ("x²", "x2"),
    ("İstanbul", "istanbul"),
];

fn postgres_bindir() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A PostgreSQL server on a temporary data folder, stopped when dropped.
struct Server {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl Server {
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn start(bindir: PathBuf, as_postgres: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        if as_postgres {
            // PostgreSQL refuses to run as root; Debian's package makes a postgres user.
            let status = Command::new("chown")
                .args(["postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the temporary folder failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Server {
            bindir,
            data: dir.path().join("data"),
            port,
            as_postgres,
            _dir: dir,
        };
        let out = server
            .command(&server.bindir.join("initdb"))
            .arg("-D")
            .arg(&server.data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {out:?}");
        let socket_dir = server.data.parent().unwrap().display().to_string();
        let opts = format!(
            "-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            port = server.port
        );
        let out = server
            .command(&server.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&server.data)
            .args(["-o", &opts, "-w", "-l"])
            .arg(server.data.parent().unwrap().join("server.log"))
            .arg("start")
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start failed: {out:?}");
        server
    }

    /// Runs `sql` with psql and returns its unaligned rows, fields split on U+001F.
    fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let psql = self.bindir.join("psql");
        let out = Command::new(if psql.is_file() { psql } else { "psql".into() })
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-F",
                "\u{1f}",
            ])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql failed: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.split('\u{1f}').map(str::to_string).collect())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self
            .command(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[test]
fn trigram_functions_match_pg_trgm() {
    let Some(bindir) = postgres_bindir() else {
        println!(
            "SKIPPED trigram_functions_match_pg_trgm: no PostgreSQL server in \
             /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        );
        return;
    };
    let as_postgres = is_root();
    if as_postgres
        && Command::new("id")
            .arg("postgres")
            .output()
            .map_or(true, |o| !o.status.success())
    {
        println!("SKIPPED trigram_functions_match_pg_trgm: running as root and no postgres user");
        return;
    }
    let server = Server::start(bindir, as_postgres);
    let values: Vec<String> = PAIRS
        .iter()
        .enumerate()
        .map(|(i, (a, b))| format!("({i}, {}, {})", literal(a), literal(b)))
        .collect();
    let sql = format!(
        "CREATE EXTENSION pg_trgm; \
         SELECT similarity(a, b), word_similarity(a, b), a % b, a <% b, \
                show_trgm(a)::text, show_trgm(b)::text \
         FROM (VALUES {}) AS v(i, a, b) ORDER BY i",
        values.join(", ")
    );
    let rows = server.query(&sql);
    assert_eq!(rows.len(), PAIRS.len(), "one row per pair: {rows:?}");

    let mut mismatches = Vec::new();
    for ((a, b), row) in PAIRS.iter().zip(&rows) {
        let pg_sim: f32 = row[0].parse().unwrap();
        let pg_word: f32 = row[1].parse().unwrap();
        let ours = (similarity(a, b), word_similarity(a, b));
        // float4 prints its shortest round-trip form, so equal values parse back equal.
        if ours != (pg_sim, pg_word) {
            mismatches.push(format!(
                "{a:?} vs {b:?}: similarity {} (pg {pg_sim}), word_similarity {} (pg {pg_word})",
                ours.0, ours.1
            ));
        }
        let pg_ops = (row[2] == "t", row[3] == "t");
        let our_ops = (
            similar(a, b, DEFAULT_SIMILARITY_THRESHOLD),
            word_similar(a, b, DEFAULT_WORD_SIMILARITY_THRESHOLD),
        );
        if our_ops != pg_ops {
            mismatches.push(format!(
                "{a:?} vs {b:?}: % and <% {our_ops:?}, pg {pg_ops:?}"
            ));
        }
        for (s, pg_show) in [(a, &row[4]), (b, &row[5])] {
            if show_trgm_text(s) != *pg_show {
                mismatches.push(format!(
                    "show_trgm({s:?}) = {}, pg {pg_show}",
                    show_trgm_text(s)
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} differences from pg_trgm:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
