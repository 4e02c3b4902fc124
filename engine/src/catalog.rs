//! External tables survive restarts: each one's CREATE statement is kept in the store under
//! `catalog/tables/<name>.json` and replayed when the engine opens. Credentials never go in a
//! record (see [`crate::secrets`]).

use std::sync::Arc;

use datafusion::sql::parser::{CreateExternalTable, DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::location::resolve_location;
use crate::problems::{StoreProblem, StoreProblems};

/// One persisted table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRecord {
    /// The table name as DataFusion resolved it (e.g. `music` or `s.music`).
    pub name: String,
    /// The statement that created it, replayed as is.
    pub definition: String,
}

/// Reads one stored table record, or says what is wrong with it (public so that it can be
/// fuzzed). The definition is replayed when the engine opens, so it must be one `CREATE
/// EXTERNAL TABLE` statement: a record crafted to run anything else is refused here.
pub fn parse_record(bytes: &[u8]) -> std::result::Result<TableRecord, String> {
    match serde_json::from_slice::<TableRecord>(bytes) {
        Ok(record) if record.name.is_empty() || record.definition.is_empty() => {
            Err("the record has an empty name or definition".to_string())
        }
        Ok(record) if !creates_one_table(&record.definition) => Err(
            "not a table record: its definition is not one CREATE EXTERNAL TABLE statement"
                .to_string(),
        ),
        Ok(record) => Ok(record),
        Err(e) => Err(format!("not a table record: {e}")),
    }
}

fn creates_one_table(sql: &str) -> bool {
    match DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}) {
        Ok(statements) => {
            statements.len() == 1
                && matches!(statements.front(), Some(Statement::CreateExternalTable(_)))
        }
        Err(_) => false,
    }
}

/// The statement that recreates `create` anywhere: locations made absolute, `IF NOT EXISTS`
/// and `OR REPLACE` dropped, columns, partitioning, order and options kept. (DataFusion's own
/// rendering of the statement leaves out columns and options.)
pub fn definition(create: &CreateExternalTable) -> Result<String> {
    let join = |items: Vec<String>| items.join(", ");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = String::from("CREATE ");
    if create.unbounded {
        sql.push_str("UNBOUNDED ");
    }
    sql.push_str(&format!("EXTERNAL TABLE {}", create.name));
    if !create.columns.is_empty() || !create.constraints.is_empty() {
        let defs = create.columns.iter().map(|c| c.to_string());
        let constraints = create.constraints.iter().map(|c| c.to_string());
        sql.push_str(&format!(" ({})", join(defs.chain(constraints).collect())));
    }
    sql.push_str(&format!(" STORED AS {}", create.file_type));
    if !create.table_partition_cols.is_empty() {
        sql.push_str(&format!(
            " PARTITIONED BY ({})",
            join(create.table_partition_cols.clone())
        ));
    }
    for order in &create.order_exprs {
        let exprs = order.iter().map(|e| e.to_string()).collect();
        sql.push_str(&format!(" WITH ORDER ({})", join(exprs)));
    }
    let mut locations = Vec::new();
    for location in &create.locations {
        let url = resolve_location(location)?;
        let absolute = match url.to_file_path() {
            Ok(path) if url.scheme() == "file" => {
                let mut p = path.to_string_lossy().to_string();
                if url.path().ends_with('/') && !p.ends_with('/') {
                    p.push('/');
                }
                p
            }
            _ => url.to_string(),
        };
        locations.push(quote(&absolute));
    }
    match locations.as_slice() {
        [one] => sql.push_str(&format!(" LOCATION {one}")),
        many => sql.push_str(&format!(" LOCATION ({})", join(many.to_vec()))),
    }
    if !create.options.is_empty() {
        let options = create
            .options
            .iter()
            .map(|(k, v)| format!("{} {v}", quote(k)))
            .collect();
        sql.push_str(&format!(" OPTIONS ({})", join(options)));
    }
    Ok(sql)
}

/// Table definitions kept in the store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    dir: Path,
    quarantine_dir: Path,
}

/// A table record is a name and one statement; anything larger is not one.
const MAX_RECORD_BYTES: u64 = 1 << 20;

impl Catalog {
    /// `root` is the store's path (e.g. `home/me/audiolake-data`).
    pub fn new(store: Arc<dyn ObjectStore>, root: &Path) -> Self {
        let catalog = root.clone().join("catalog");
        Self {
            store,
            dir: catalog.clone().join("tables"),
            quarantine_dir: catalog.join("quarantine"),
        }
    }

    fn file(&self, name: &str) -> Path {
        self.dir.clone().join(format!("{name}.json"))
    }

    pub async fn save(&self, record: &TableRecord) -> Result<()> {
        let json = serde_json::to_vec_pretty(record).expect("a record serialises");
        self.store
            .put(&self.file(&record.name), PutPayload::from(json))
            .await
            .map_err(|source| EngineError::Catalog {
                action: "written",
                source,
            })?;
        Ok(())
    }

    pub async fn remove(&self, name: &str) -> Result<()> {
        match self.store.delete(&self.file(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(EngineError::Catalog {
                action: "updated",
                source,
            }),
        }
    }

    /// Every recorded table, in name order. A record that cannot be read as one (empty,
    /// garbage, too large, wrong fields) is moved to `catalog/quarantine/` and reported in
    /// `problems`; the other tables still load.
    pub async fn load(&self, problems: &StoreProblems) -> Result<Vec<TableRecord>> {
        let read_err = |source| EngineError::Catalog {
            action: "read",
            source,
        };
        let metas: Vec<_> = match self.store.list(Some(&self.dir)).try_collect().await {
            Ok(metas) => metas,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(read_err(e)),
        };
        let mut records = Vec::new();
        for meta in metas {
            if meta.location.extension() != Some("json") {
                continue;
            }
            match self.read_record(&meta).await? {
                Ok(record) => records.push(record),
                Err(problem) => self.quarantine(&meta.location, problem, problems).await,
            }
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }

    /// The record in `meta`, or what is wrong with it.
    async fn read_record(
        &self,
        meta: &ObjectMeta,
    ) -> Result<std::result::Result<TableRecord, String>> {
        if meta.size > MAX_RECORD_BYTES {
            return Ok(Err(format!(
                "{} bytes, more than a table record may hold ({MAX_RECORD_BYTES})",
                meta.size
            )));
        }
        let read_err = |source| EngineError::Catalog {
            action: "read",
            source,
        };
        let bytes = self
            .store
            .get(&meta.location)
            .await
            .map_err(read_err)?
            .bytes()
            .await
            .map_err(read_err)?;
        Ok(parse_record(&bytes))
    }

    /// Moves a bad record out of `catalog/tables/` so that it is not read again.
    async fn quarantine(&self, location: &Path, problem: String, problems: &StoreProblems) {
        let target = self
            .quarantine_dir
            .clone()
            .join(location.filename().unwrap_or("record.json"));
        let action = match self.store.rename(location, &target).await {
            Ok(()) => format!("moved to {target}; the table was not restored"),
            Err(e) => format!("left in place ({e}); the table was not restored"),
        };
        problems.report(StoreProblem {
            object: location.to_string(),
            problem,
            action,
        });
    }
}
