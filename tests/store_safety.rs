//! The store belongs to the engine: credentials never go into it, SQL cannot read or write its
//! folders, a bad or crafted catalog record is set aside, and no path (symlinked, percent-encoded, under
//! EXPLAIN ANALYZE) reaches outside the allowed locations.

use std::path::{Path, PathBuf};

use audiolake::AudioLake;
use audiolake_testkit::query::query_strings;

/// A store, an allowed folder with one CSV, a folder outside the roots, and a secrets file
/// (outside the store), all in one temporary folder.
struct Setup {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    allowed: PathBuf,
    outside: PathBuf,
    secrets: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let (store, allowed, outside) = (dir.join("store"), dir.join("allowed"), dir.join("outside"));
    for d in [&store, &allowed, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(allowed.join("inside.csv"), "a\n1\n").unwrap();
    std::fs::write(outside.join("private.csv"), "a\n2\n").unwrap();
    Setup {
        secrets: dir.join("config/secrets.json"),
        _tmp: tmp,
        store,
        allowed,
        outside,
    }
}

async fn open(setup: &Setup) -> AudioLake {
    AudioLake::builder()
        .store(setup.store.to_str().unwrap())
        .allow_location(setup.allowed.to_str().unwrap())
        .allow_location("s3://archive/masters/")
        .secrets_file(&setup.secrets)
        .build()
        .await
        .unwrap()
}

/// The error of `sql`, whether planning or running it fails.
async fn error_of(lake: &AudioLake, sql: &str) -> String {
    match lake.sql(sql).await {
        Ok(frame) => match frame.collect().await {
            Ok(_) => panic!("{sql} succeeded"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

fn catalog_files(store: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(store.join("catalog/tables")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn credentials_in_options_are_refused_and_secrets_live_outside_the_store() {
    let setup = setup();
    let lake = open(&setup).await;
    let err = error_of(
        &lake,
        "CREATE EXTERNAL TABLE masters STORED AS AUDIO LOCATION 's3://archive/masters/' \
         OPTIONS ('aws.access_key_id' 'AKIA', 'aws.secret_access_key' 'hunter2')",
    )
    .await;
    assert_eq!(
        err,
        "table masters: credentials ('aws.secret_access_key') are not accepted in OPTIONS, \
         because table definitions are kept in the store; pass them in the AWS_* environment \
         variables, as instance credentials, or with CREATE SECRET name (TYPE s3, KEY_ID '...', \
         SECRET '...', SCOPE 's3://bucket/'), which keeps them outside the store in a file only \
         you can read"
    );
    assert_eq!(catalog_files(&setup.store), Vec::<String>::new());

    lake.sql(
        "CREATE SECRET archive (TYPE s3, KEY_ID 'AKIA', SECRET 'hunter2', \
         SCOPE 's3://archive/')",
    )
    .await
    .unwrap();
    lake.sql(
        "CREATE EXTERNAL TABLE masters STORED AS AUDIO LOCATION 's3://archive/masters/' \
         OPTIONS ('aws.region' 'eu-west-1')",
    )
    .await
    .unwrap();
    assert_eq!(catalog_files(&setup.store), ["masters.json"]);
    let record = std::fs::read_to_string(setup.store.join("catalog/tables/masters.json")).unwrap();
    assert!(!record.contains("hunter2"), "{record}");
    assert!(record.contains("eu-west-1"), "{record}");
    let secrets = std::fs::read_to_string(&setup.secrets).unwrap();
    assert!(secrets.contains("hunter2"), "{secrets}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&setup.secrets)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let err = error_of(&lake, "CREATE SECRET archive (TYPE s3, SECRET 'x')").await;
    assert_eq!(
        err,
        "secret: secret \"archive\" already exists; use CREATE OR REPLACE SECRET"
    );
    lake.sql("DROP SECRET archive").await.unwrap();
    assert!(!std::fs::read_to_string(&setup.secrets)
        .unwrap()
        .contains("hunter2"));
}

#[tokio::test]
async fn credentials_already_in_the_catalog_are_moved_out_when_it_opens() {
    let setup = setup();
    let tables = setup.store.join("catalog/tables");
    std::fs::create_dir_all(&tables).unwrap();
    let old = r#"{"name": "masters", "definition": "CREATE EXTERNAL TABLE masters STORED AS AUDIO LOCATION 's3://archive/masters/' OPTIONS ('aws.region' 'eu-west-1', 'aws.access_key_id' 'AKIDEXAMPLE', 'aws.secret_access_key' 'hunter2')"}"#;
    std::fs::write(tables.join("masters.json"), old).unwrap();

    let lake = open(&setup).await;
    assert_eq!(
        lake.engine().warnings(),
        [format!(
            "the credentials of table masters were moved out of the store into {}",
            setup.secrets.display()
        )]
    );
    let record = std::fs::read_to_string(tables.join("masters.json")).unwrap();
    assert!(!record.contains("hunter2"), "{record}");
    assert!(record.contains("'aws.region' 'eu-west-1'"), "{record}");
    let secrets = std::fs::read_to_string(&setup.secrets).unwrap();
    assert!(
        secrets.contains("hunter2") && secrets.contains("s3://archive/"),
        "{secrets}"
    );
    let tables = query_strings(
        &lake,
        "SELECT table_name FROM information_schema.tables WHERE table_name = 'masters'",
    )
    .await;
    assert_eq!(tables, ["masters"]);
    drop(lake);
    // Reopened, the table comes back from the cleaned record and nothing more is moved.
    let lake = open(&setup).await;
    assert_eq!(lake.engine().warnings(), Vec::<String>::new());
}

#[tokio::test]
async fn the_stores_own_folders_are_out_of_reach_of_sql() {
    let setup = setup();
    let lake = open(&setup).await;
    lake.sql(&format!(
        "CREATE EXTERNAL TABLE inside STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true')",
        setup.allowed.display()
    ))
    .await
    .unwrap();
    let store = setup.store.display();
    let refused = |location: String| {
        format!(
            "location 'file://{location}' is inside the store's own files (catalog/, indexes/, \
             features/), which SQL cannot read or write; read results through the features_* \
             tables and write exports to another allowed location"
        )
    };
    let err = error_of(
        &lake,
        &format!("CREATE EXTERNAL TABLE c STORED AS JSON LOCATION '{store}/catalog/'"),
    )
    .await;
    assert_eq!(err, refused(format!("{store}/catalog/")));
    let err = error_of(
        &lake,
        &format!("CREATE EXTERNAL TABLE c STORED AS JSON LOCATION '{store}/'"),
    )
    .await;
    assert_eq!(err, refused(format!("{store}/")));
    let evil = format!("{store}/catalog/tables/evil.json");
    let err = error_of(&lake, &format!("COPY (SELECT 1 AS a) TO '{evil}'")).await;
    assert_eq!(err, refused(evil.clone()));
    let explained = format!("{store}/indexes/x.csv");
    let err = error_of(
        &lake,
        &format!("EXPLAIN ANALYZE COPY (SELECT 1 AS a) TO '{explained}'"),
    )
    .await;
    assert_eq!(err, refused(explained.clone()));
    assert!(!Path::new(&evil).exists() && !Path::new(&explained).exists());
    // The catalog still works, and exports go to allowed locations.
    assert_eq!(catalog_files(&setup.store), ["inside.json"]);
    let export = setup.allowed.join("export.csv");
    lake.sql(&format!(
        "COPY (SELECT a FROM inside) TO '{}'",
        export.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    assert_eq!(std::fs::read_to_string(&export).unwrap(), "a\n1\n");
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_and_encoded_segments_do_not_leave_the_roots() {
    let setup = setup();
    std::os::unix::fs::symlink(&setup.outside, setup.allowed.join("link")).unwrap();
    std::os::unix::fs::symlink(
        setup.outside.join("private.csv"),
        setup.allowed.join("private.csv"),
    )
    .unwrap();
    let lake = open(&setup).await;
    let allowed = setup.allowed.display();
    let outside = setup.outside.display().to_string();
    let not_allowed = |location: &str| {
        format!(
            "location 'file://{location}' is outside the allowed locations (file://{}/, \
             file://{allowed}/, s3://archive/masters/); allow it with --allow or \
             AudioLake::builder().allow_location(...)",
            setup.store.display()
        )
    };

    // A table over a linked folder, a write through it: refused, the link's target unnamed.
    let err = error_of(
        &lake,
        &format!("CREATE EXTERNAL TABLE l STORED AS CSV LOCATION '{allowed}/link/'"),
    )
    .await;
    assert_eq!(err, not_allowed(&format!("{allowed}/link/")));
    let through = format!("{allowed}/link/out.csv");
    let err = error_of(&lake, &format!("COPY (SELECT 1 AS a) TO '{through}'")).await;
    assert_eq!(err, not_allowed(&through));
    assert!(!setup.outside.join("out.csv").exists());
    assert!(!err.contains(&outside), "{err}");

    // A table over the allowed folder lists the real file and skips the linked one.
    lake.sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{allowed}/' OPTIONS ('format.has_header' 'true')"
    ))
    .await
    .unwrap();
    let rows = lake
        .sql("SELECT a FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let total: usize = rows.iter().map(|b| b.num_rows()).sum();
    assert_eq!(total, 1);

    // Percent-encoded `..` is a literal folder name for the file system, never a step up.
    for target in [
        format!("{allowed}/%2E%2E/outside/escape.csv"),
        format!("file://{allowed}/%252E%252E/outside/escape.csv"),
    ] {
        let err = error_of(&lake, &format!("COPY (SELECT 1 AS a) TO '{target}'")).await;
        assert!(
            err.contains("the path segment '%2E%2E' is not allowed ('.', '..', '/' or '\\')"),
            "{target}: {err}"
        );
        assert!(!setup.outside.join("escape.csv").exists());
    }
    // The connection is still usable.
    assert_eq!(query_strings(&lake, "SELECT 'ok'").await, ["ok"]);
}

#[tokio::test]
async fn malformed_catalog_records_are_set_aside() {
    let setup = setup();
    {
        let lake = open(&setup).await;
        lake.sql(&format!(
            "CREATE EXTERNAL TABLE good STORED AS CSV LOCATION '{}/' OPTIONS ('format.has_header' 'true')",
            setup.allowed.display()
        ))
        .await
        .unwrap();
    }
    let tables = setup.store.join("catalog/tables");
    std::fs::write(tables.join("empty.json"), b"").unwrap();
    std::fs::write(tables.join("garbage.json"), b"\xff\x00not json").unwrap();
    std::fs::write(tables.join("wrong.json"), br#"{"name": 3}"#).unwrap();
    // Records crafted to run other statements when the engine opens.
    let secret =
        r#"{"name": "evil", "definition": "CREATE SECRET s (TYPE s3, KEY_ID 'k', SECRET 'x')"}"#;
    std::fs::write(tables.join("evil.json"), secret).unwrap();
    let two = format!(
        r#"{{"name": "two", "definition": "CREATE EXTERNAL TABLE two STORED AS CSV LOCATION '{}/'; DROP TABLE good"}}"#,
        setup.allowed.display()
    );
    std::fs::write(tables.join("two.json"), two).unwrap();

    let lake = open(&setup).await;
    let rows = lake
        .sql("SELECT a FROM good")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let store = setup.store.display().to_string();
    let store = store.trim_start_matches('/');
    let problems = query_strings(
        &lake,
        "SELECT object || ' | ' || problem || ' | ' || action FROM audiolake_store_problems \
         ORDER BY object",
    )
    .await;
    assert_eq!(
        problems,
        [
            format!(
                "{store}/catalog/tables/empty.json | not a table record: EOF while parsing a \
                 value at line 1 column 0 | moved to {store}/catalog/quarantine/empty.json; the \
                 table was not restored"
            ),
            format!(
                "{store}/catalog/tables/evil.json | {NOT_ONE_TABLE} | moved to \
                 {store}/catalog/quarantine/evil.json; the table was not restored"
            ),
            format!(
                "{store}/catalog/tables/garbage.json | not a table record: expected value at \
                 line 1 column 1 | moved to {store}/catalog/quarantine/garbage.json; the table \
                 was not restored"
            ),
            format!(
                "{store}/catalog/tables/two.json | {NOT_ONE_TABLE} | moved to \
                 {store}/catalog/quarantine/two.json; the table was not restored"
            ),
            format!(
                "{store}/catalog/tables/wrong.json | not a table record: invalid type: integer \
                 `3`, expected a string at line 1 column 10 | moved to \
                 {store}/catalog/quarantine/wrong.json; the table was not restored"
            ),
        ]
    );
    assert_eq!(catalog_files(&setup.store), ["good.json"]);
    assert!(!setup.secrets.exists(), "no secret was created");
}

const NOT_ONE_TABLE: &str =
    "not a table record: its definition is not one CREATE EXTERNAL TABLE statement";

#[tokio::test]
async fn plain_http_endpoints_must_be_local_or_allowed() {
    let setup = setup();
    let lake = open(&setup).await;
    let err = error_of(
        &lake,
        "CREATE EXTERNAL TABLE m STORED AS AUDIO LOCATION 's3://archive/masters/' \
         OPTIONS ('aws.endpoint' 'http://s3.example.com:9000')",
    )
    .await;
    assert_eq!(
        err,
        "Invalid or Unsupported Configuration: the S3 endpoint 'http://s3.example.com:9000' for \
         bucket 'archive' is plain HTTP; allow it with 'aws.allow_http' 'true' (or \
         AWS_ALLOW_HTTP=true), or use https://. Only endpoints on this machine (127.0.0.1, \
         localhost, [::1]) are allowed without it"
    );
    for options in [
        "'aws.endpoint' 'http://s3.example.com:9000', 'aws.allow_http' 'true'",
        "'aws.endpoint' 'http://127.0.0.5:9000'",
        "'aws.endpoint' 'http://[::1]:9000'",
    ] {
        lake.sql(&format!(
            "CREATE OR REPLACE EXTERNAL TABLE m STORED AS AUDIO \
             LOCATION 's3://archive/masters/' OPTIONS ({options})"
        ))
        .await
        .unwrap();
    }
}
