//! Runs every `sql/*.slt` file (sqllogictest) against a fresh audiolake over the fixtures.
//!
//! Scripts may use `${FIXTURES}` (absolute path of tests/data), `${MUSIC}` (tests/music, the
//! songs with a known tempo and key) and `${STORE}` (a fresh store).

use std::path::Path;

use async_trait::async_trait;
use audiolake::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use audiolake::{AudioLake, EngineError};
use audiolake_testkit::paths::{fixtures, music};
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};

struct Lake(AudioLake);

#[async_trait]
impl AsyncDB for Lake {
    type Error = EngineError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, EngineError> {
        let frame = self.0.sql(sql).await?;
        let schema = frame.schema().as_arrow().clone();
        let batches = frame.collect().await?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EngineError::DataFusion(e.into()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; schema.fields().len()],
            rows,
        })
    }

    async fn shutdown(&mut self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    for file in files {
        let store = tempfile::tempdir().unwrap();
        let script = std::fs::read_to_string(&file)
            .unwrap()
            .replace("${FIXTURES}", fixtures().to_str().unwrap())
            .replace("${MUSIC}", music().to_str().unwrap())
            .replace("${STORE}", store.path().to_str().unwrap());
        let store_path = store.path().to_str().unwrap().to_string();
        let mut runner = Runner::new(move || {
            let store_path = store_path.clone();
            async move {
                let lake = AudioLake::builder()
                    .store(store_path)
                    .allow_location(fixtures().to_str().unwrap())
                    .allow_location(music().to_str().unwrap())
                    .target_partitions(2)
                    .build()
                    .await?;
                Ok(Lake(lake))
            }
        });
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if let Err(e) = runner
            .run_script_with_name_async(&script, name.as_str())
            .await
        {
            panic!("{name}: {e}");
        }
    }
}
