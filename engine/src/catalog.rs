//! External tables survive restarts: each one's CREATE statement is kept in the store under
//! `catalog/tables/<name>.json` and replayed when the engine opens.

use std::sync::Arc;

use datafusion::sql::parser::CreateExternalTable;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::location::resolve_location;

/// One persisted table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRecord {
    /// The table name as DataFusion resolved it (e.g. `music` or `s.music`).
    pub name: String,
    /// The statement that created it, replayed as is.
    pub definition: String,
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
}

impl Catalog {
    /// `root` is the store's path (e.g. `home/me/audiolake-data`).
    pub fn new(store: Arc<dyn ObjectStore>, root: &Path) -> Self {
        let dir = root.clone().join("catalog").join("tables");
        Self { store, dir }
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

    /// Every recorded table, in name order.
    pub async fn load(&self) -> Result<Vec<TableRecord>> {
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
            let bytes = self
                .store
                .get(&meta.location)
                .await
                .map_err(read_err)?
                .bytes()
                .await
                .map_err(read_err)?;
            let record: TableRecord =
                serde_json::from_slice(&bytes).map_err(|e| EngineError::Catalog {
                    action: "read",
                    source: object_store::Error::Generic {
                        store: "catalog",
                        source: format!("{}: {e}", meta.location).into(),
                    },
                })?;
            records.push(record);
        }
        records.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(records)
    }
}
