//! External tables survive restarts: each one's CREATE statement is kept in the store under
//! `catalog/tables/<name>.json` and replayed when the engine opens.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// One persisted table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TableRecord {
    /// The table name as DataFusion resolved it (e.g. `music` or `s.music`).
    pub name: String,
    /// The statement that created it, replayed as is.
    pub definition: String,
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
