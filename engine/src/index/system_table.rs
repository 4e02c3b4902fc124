//! `audiolake_indexes`: one row per index with its definition, size, live row count and build
//! time.

use std::sync::Arc;

use datafusion::arrow::array::{
    BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::Result;

use super::registry::Indexes;
use crate::snapshot::Snapshot;

pub struct IndexTable {
    indexes: Arc<Indexes>,
}

impl IndexTable {
    pub fn new(indexes: Arc<Indexes>) -> Self {
        Self { indexes }
    }
}

impl Snapshot for IndexTable {
    fn schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let text = |name| Field::new(name, DataType::Utf8, false);
        let int = |name| Field::new(name, DataType::Int64, false);
        Arc::new(Schema::new(vec![
            text("name"),
            text("table_name"),
            text("column_name"),
            text("key_column"),
            text("opclass"),
            int("m"),
            int("ef_construction"),
            int("rows"),
            int("dims"),
            int("size_bytes"),
            Field::new("build_seconds", DataType::Float64, false),
            Field::new("built_at", ts, false),
            Field::new("loaded", DataType::Boolean, false),
        ]))
    }

    fn snapshot(&self) -> Result<RecordBatch> {
        let entries = self.indexes.list();
        let defs: Vec<_> = entries.iter().map(|e| &e.definition).collect();
        let text = |f: fn(&super::registry::IndexDefinition) -> String| {
            Arc::new(StringArray::from(
                defs.iter().map(|d| f(d)).collect::<Vec<_>>(),
            ))
        };
        let int = |f: fn(&super::registry::IndexDefinition) -> i64| {
            Arc::new(Int64Array::from(
                defs.iter().map(|d| f(d)).collect::<Vec<_>>(),
            ))
        };
        Ok(RecordBatch::try_new(
            Self::schema(),
            vec![
                text(|d| d.name.clone()),
                text(|d| d.table.clone()),
                text(|d| d.column.clone()),
                text(|d| d.key.clone()),
                text(|d| d.metric.opclass().to_string()),
                int(|d| d.params.m as i64),
                int(|d| d.params.ef_construction as i64),
                Arc::new(Int64Array::from(
                    entries.iter().map(|e| e.rows() as i64).collect::<Vec<_>>(),
                )),
                int(|d| d.dims as i64),
                int(|d| d.size_bytes as i64),
                Arc::new(Float64Array::from(
                    defs.iter().map(|d| d.build_seconds).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        defs.iter().map(|d| d.build).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(BooleanArray::from(
                    entries.iter().map(|e| e.is_loaded()).collect::<Vec<_>>(),
                )),
            ],
        )?)
    }
}
