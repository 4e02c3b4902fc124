//! Through psql: credentials are refused in table options and kept by CREATE SECRET outside
//! the store; the store's own folders, symlinks out of an allowed folder and percent-encoded
//! `..` are refused; the connection stays usable after each refusal.

use audiolake_testkit::pgserver::{have, stderr, stdout, PgServer, ALICE};

/// The binary under test.
const AUDIOLAKE: &str = env!("CARGO_BIN_EXE_audiolake");

#[test]
fn store_and_paths_are_guarded_through_psql() {
    if !have("psql") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let (allowed, outside) = (root.join("allowed"), root.join("outside"));
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("private.csv"), "a\n2\n").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
    let secrets = root.join("secrets.json");
    let server = PgServer::start(
        AUDIOLAKE,
        &[
            "--allow",
            allowed.to_str().unwrap(),
            "--allow",
            "s3://archive/masters/",
            "--secrets",
            secrets.to_str().unwrap(),
        ],
    );
    let store = std::fs::canonicalize(&server.store).unwrap();
    let (store, allowed) = (store.display(), allowed.display());
    let script = format!(
        "CREATE EXTERNAL TABLE m STORED AS AUDIO LOCATION 's3://archive/masters/' \
           OPTIONS ('aws.secret_access_key' 'hunter2');\n\
         CREATE SECRET archive (TYPE s3, KEY_ID 'AKIA', SECRET 'hunter2', SCOPE 's3://archive/');\n\
         CREATE EXTERNAL TABLE c STORED AS JSON LOCATION '{store}/catalog/';\n\
         COPY (SELECT 1 AS a) TO '{store}/catalog/tables/evil.json';\n\
         EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{store}/indexes/evil.csv';\n\
         CREATE EXTERNAL TABLE l STORED AS CSV LOCATION '{allowed}/link/';\n\
         COPY (SELECT 1 AS a) TO '{allowed}/link/out.csv';\n\
         COPY (SELECT 1 AS a) TO '{allowed}/%2E%2E/outside/escape.csv';\n\
         SELECT 'still here';\n"
    );
    let out = server.psql_script(ALICE, &script, &[]);
    let err = stderr(&out);
    assert_eq!(stdout(&out).trim(), "CREATE SECRET\nstill here", "{err}");
    let expected = [
        "table m: credentials ('aws.secret_access_key') are not accepted in OPTIONS, because \
         table definitions are kept in the store; pass them in the AWS_* environment variables, \
         as instance credentials, or with CREATE SECRET name (TYPE s3, KEY_ID '...', SECRET \
         '...', SCOPE 's3://bucket/'), which keeps them outside the store in a file only you \
         can read"
            .to_string(),
        // No table is recorded yet, so the folder does not exist and is named without a slash.
        format!("location 'file://{store}/catalog' is inside the store's own files"),
        format!(
            "location 'file://{store}/catalog/tables/evil.json' is inside the store's own files"
        ),
        format!("location 'file://{store}/indexes/evil.csv' is inside the store's own files"),
        format!("location 'file://{allowed}/link/' is outside the allowed locations"),
        format!("location 'file://{allowed}/link/out.csv' is outside the allowed locations"),
        "the path segment '%2E%2E' is not allowed ('.', '..', '/' or '\\')".to_string(),
    ];
    for message in &expected {
        assert!(err.contains(message.as_str()), "no {message:?} in {err}");
    }
    assert_eq!(err.matches("ERROR:").count(), expected.len(), "{err}");
    assert!(!err.contains(&format!("{}/", outside.display())), "{err}");
    assert!(!outside.join("out.csv").exists() && !outside.join("escape.csv").exists());
    assert!(!server.store.join("catalog/tables/evil.json").exists());
    let kept = std::fs::read_to_string(&secrets).unwrap();
    assert!(
        kept.contains("hunter2") && kept.contains("s3://archive/"),
        "{kept}"
    );
}
