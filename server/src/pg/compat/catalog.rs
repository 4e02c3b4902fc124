//! Corrections to datafusion-postgres's pg_catalog. Its `pg_attribute` reports every array
//! column as `text`, so `\d`, pgJDBC's `getColumns` and BI tools see MFCC, chroma and embeddings
//! as strings, although the wire encodes them as `float4[]`; its `pg_index` and `pg_constraint`
//! keep vectors and arrays as text, which clients' subscripts and `unnest` fail on;
//! `pg_class.reloptions` and some fixed settings of `pg_settings` are missing. The schema is
//! wrapped to correct these.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use datafusion::arrow::array::builder::{Int64Builder, ListBuilder};
use datafusion::arrow::array::{
    new_null_array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::{CatalogProviderList, MemTable, SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::collect;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use datafusion_postgres::arrow_pg::datatypes::into_pg_type;
use tokio::sync::OnceCell;

use super::database;

/// Replaces the `pg_catalog` schema of `catalog` in `ctx` by one whose `pg_attribute` is
/// corrected. Call after `setup_pg_catalog`.
pub fn correct_pg_catalog(ctx: &SessionContext, catalog: &str) -> Result<()> {
    let provider = ctx
        .catalog(catalog)
        .ok_or_else(|| DataFusionError::Plan(format!("no catalog {catalog}")))?;
    let inner = provider
        .schema("pg_catalog")
        .ok_or_else(|| DataFusionError::Plan("pg_catalog is not set up".into()))?;
    let corrected = PgCatalog(Arc::new(Sources {
        inner,
        internal_catalog: catalog.to_owned(),
        catalogs: Arc::clone(ctx.state().catalog_list()),
        index: OnceCell::new(),
        constraint: OnceCell::new(),
    }));
    provider.register_schema("pg_catalog", Arc::new(corrected))?;
    Ok(())
}

#[derive(Debug)]
struct PgCatalog(Arc<Sources>);

/// What the corrected `pg_attribute` is computed from.
#[derive(Debug)]
struct Sources {
    inner: Arc<dyn SchemaProvider>,
    /// The catalog of the engine's tables, which `pg_database` shows as the connected database.
    internal_catalog: String,
    catalogs: Arc<dyn CatalogProviderList>,
    /// `pg_index` and `pg_constraint` with their vectors as arrays; both tables are static.
    index: OnceCell<Arc<dyn TableProvider>>,
    constraint: OnceCell<Arc<dyn TableProvider>>,
}

#[async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.0.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table = self.0.inner.table(name).await?;
        match table {
            // Computed at scan time: building pg_class and pg_attribute looks up every table,
            // this one included, so the lookup itself must stay cheap.
            Some(attributes) if name.eq_ignore_ascii_case("pg_attribute") => Ok(Some(Arc::new(
                Amended::new(attributes, Amendment::ArrayTypes(Arc::clone(&self.0))),
            ))),
            Some(index) if name.eq_ignore_ascii_case("pg_index") => {
                let table = self
                    .0
                    .index
                    .get_or_try_init(|| array_columns(index, pg_index_arrays))
                    .await?;
                Ok(Some(Arc::clone(table)))
            }
            Some(constraint) if name.eq_ignore_ascii_case("pg_constraint") => {
                let table = self
                    .0
                    .constraint
                    .get_or_try_init(|| array_columns(constraint, pg_constraint_arrays))
                    .await?;
                Ok(Some(Arc::clone(table)))
            }
            Some(classes) if name.eq_ignore_ascii_case("pg_class") => {
                Ok(Some(Arc::new(Amended::new(classes, Amendment::RelOptions))))
            }
            Some(settings) if name.eq_ignore_ascii_case("pg_settings") => Ok(Some(Arc::new(
                Amended::new(settings, Amendment::FixedSettings),
            ))),
            Some(databases) if name.eq_ignore_ascii_case("pg_database") => {
                Ok(Some(Arc::new(Amended::new(
                    databases,
                    Amendment::ConnectedDatabase(self.0.internal_catalog.clone()),
                ))))
            }
            other => Ok(other),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.inner.table_exist(name)
    }
}

impl Sources {
    async fn corrected_attributes(
        &self,
        attributes: &Arc<dyn TableProvider>,
    ) -> Result<Vec<RecordBatch>> {
        let tables = self.table_names_by_oid().await?;
        let mut schemas: HashMap<i64, Option<SchemaRef>> = HashMap::new();
        let mut corrected = Vec::new();
        for batch in scan(attributes).await? {
            let relids = int64_column(&batch, "attrelid")?;
            let names = batch
                .column_by_name("attname")
                .ok_or_else(|| missing("attname"))?;
            let names = cast(names, &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let (type_index, _) = batch
                .schema()
                .column_with_name("atttypid")
                .ok_or_else(|| missing("atttypid"))?;
            let types = int64_column(&batch, "atttypid")?;
            let mut fixed = Vec::with_capacity(batch.num_rows());
            for row in 0..batch.num_rows() {
                let relid = relids.value(row);
                if let std::collections::hash_map::Entry::Vacant(e) = schemas.entry(relid) {
                    let schema = match tables.get(&relid) {
                        Some((schema, table)) => self.arrow_schema(schema, table).await,
                        None => None,
                    };
                    e.insert(schema);
                }
                let array_type = schemas[&relid]
                    .as_ref()
                    .and_then(|s| s.field_with_name(names.value(row)).ok())
                    .and_then(|f| into_pg_type(f.data_type()).ok())
                    // PostgreSQL names array types after their element, with a leading '_'.
                    .filter(|t| t.name().starts_with('_'));
                fixed.push(array_type.map_or(types.value(row) as i32, |t| t.oid() as i32));
            }
            let mut columns = batch.columns().to_vec();
            columns[type_index] = Arc::new(Int32Array::from(fixed)) as ArrayRef;
            let columns = columns
                .into_iter()
                .zip(batch.schema().fields())
                .map(|(c, f)| cast(&c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            corrected.push(RecordBatch::try_new(batch.schema(), columns)?);
        }
        Ok(corrected)
    }

    /// `pg_class.oid` to (schema, table), from pg_class and pg_namespace.
    async fn table_names_by_oid(&self) -> Result<HashMap<i64, (String, String)>> {
        let mut schemas = HashMap::new();
        for batch in self.scan_table("pg_namespace").await? {
            let oids = int64_column(&batch, "oid")?;
            let names = string_column(&batch, "nspname")?;
            for row in 0..batch.num_rows() {
                schemas.insert(
                    oids.value(row),
                    names.as_string::<i32>().value(row).to_owned(),
                );
            }
        }
        let mut tables = HashMap::new();
        for batch in self.scan_table("pg_class").await? {
            let oids = int64_column(&batch, "oid")?;
            let names = string_column(&batch, "relname")?;
            let namespaces = int64_column(&batch, "relnamespace")?;
            for row in 0..batch.num_rows() {
                if let Some(schema) = schemas.get(&namespaces.value(row)) {
                    let table = names.as_string::<i32>().value(row).to_owned();
                    tables.insert(oids.value(row), (schema.clone(), table));
                }
            }
        }
        Ok(tables)
    }

    /// The Arrow schema of `schema.table` in whichever catalog has it.
    async fn arrow_schema(&self, schema: &str, table: &str) -> Option<SchemaRef> {
        for catalog in self.catalogs.catalog_names() {
            let Some(provider) = self
                .catalogs
                .catalog(&catalog)
                .and_then(|c| c.schema(schema))
            else {
                continue;
            };
            if let Ok(Some(table)) = provider.table(table).await {
                return Some(table.schema());
            }
        }
        None
    }

    async fn scan_table(&self, name: &str) -> Result<Vec<RecordBatch>> {
        let table = self.inner.table(name).await?.ok_or_else(|| missing(name))?;
        scan(&table).await
    }
}

/// What a catalog table lacks that clients read.
#[derive(Debug, Clone)]
enum Amendment {
    /// Array columns of `pg_attribute` typed as arrays, not text.
    ArrayTypes(Arc<Sources>),
    /// `pg_class.reloptions` (storage options; none here), which SQLAlchemy selects.
    RelOptions,
    /// Rows of `pg_settings` for limits compiled into PostgreSQL, which pgJDBC reads.
    FixedSettings,
    /// `pg_database` naming the client's database instead of this internal catalog.
    ConnectedDatabase(String),
}

/// Settings PostgreSQL fixes at build time, with its default values.
pub(super) const FIXED_SETTINGS: &[(&str, &str)] =
    &[("max_index_keys", "32"), ("max_identifier_length", "63")];

/// A catalog table with an [`Amendment`], applied at scan time.
#[derive(Debug)]
struct Amended {
    inner: Arc<dyn TableProvider>,
    amendment: Amendment,
    schema: SchemaRef,
}

impl Amended {
    fn new(inner: Arc<dyn TableProvider>, amendment: Amendment) -> Self {
        let mut fields: Vec<Field> = inner
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Amendment::RelOptions = &amendment {
            fields.push(Field::new(
                "reloptions",
                DataType::new_list(DataType::Utf8, true),
                true,
            ));
        }
        Self {
            inner,
            amendment,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    async fn batches(&self, state: &dyn Session) -> Result<Vec<RecordBatch>> {
        if let Amendment::ArrayTypes(sources) = &self.amendment {
            return sources.corrected_attributes(&self.inner).await;
        }
        let mut batches = Vec::new();
        for batch in scan(&self.inner).await? {
            let mut columns = batch.columns().to_vec();
            if let Amendment::RelOptions = self.amendment {
                columns.push(new_null_array(
                    self.schema.field(columns.len()).data_type(),
                    batch.num_rows(),
                ));
            }
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
            batches.push(match (&self.amendment, database::of(state.config())) {
                (Amendment::ConnectedDatabase(internal), Some(connected)) => {
                    database::rename_in(&batch, internal, &connected)?
                }
                _ => batch,
            });
        }
        if let Amendment::FixedSettings = self.amendment {
            let columns = self
                .schema
                .fields()
                .iter()
                .map(|f| match f.name().as_str() {
                    "name" => Arc::new(StringArray::from_iter_values(
                        FIXED_SETTINGS.iter().map(|s| s.0),
                    )) as ArrayRef,
                    "setting" | "reset_val" | "boot_val" => Arc::new(
                        StringArray::from_iter_values(FIXED_SETTINGS.iter().map(|s| s.1)),
                    ),
                    _ => new_null_array(f.data_type(), FIXED_SETTINGS.len()),
                })
                .collect();
            batches.push(RecordBatch::try_new(Arc::clone(&self.schema), columns)?);
        }
        Ok(batches)
    }
}

#[async_trait]
impl TableProvider for Amended {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        MemTable::try_new(self.schema(), vec![self.batches(state).await?])?
            .scan(state, projection, filters, limit)
            .await
    }
}

/// `pg_index`'s `indkey`, `indoption` (int2vector), `indclass` and `indcollation` (oidvector).
fn pg_index_arrays(column: &str) -> Option<DataType> {
    match column {
        "indkey" | "indoption" => Some(DataType::Int16),
        "indclass" | "indcollation" => Some(DataType::Int32),
        _ => None,
    }
}

/// `pg_constraint`'s column numbers (int2[]) and operators (oid[]), which pgJDBC's
/// `getPrimaryKeys`, `getImportedKeys` and SQLAlchemy index and unnest.
fn pg_constraint_arrays(column: &str) -> Option<DataType> {
    match column {
        "conkey" | "confkey" => Some(DataType::Int16),
        "conpfeqop" | "conppeqop" | "conffeqop" | "conexclop" => Some(DataType::Int32),
        _ => None,
    }
}

/// `table` with the columns `vector_type` names as arrays of that element type, as PostgreSQL's
/// clients index and unnest them; datafusion-postgres keeps them as text (`1 2` or `[1, 2]`).
async fn array_columns(
    table: Arc<dyn TableProvider>,
    vector_type: fn(&str) -> Option<DataType>,
) -> Result<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| match vector_type(f.name()) {
            Some(element) => Field::new(f.name(), DataType::new_list(element, true), true),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for batch in scan(&table).await? {
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .map(|(column, field)| match vector_type(field.name()) {
                Some(element) => parse_vectors(column, &element),
                None => Ok(Arc::clone(column)),
            })
            .collect::<Result<Vec<_>>>()?;
        batches.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
}

/// Integers separated by spaces (`1 2`, a vector) or commas in brackets (`[2, 20]`, an array)
/// to lists of `element`.
fn parse_vectors(column: &ArrayRef, element: &DataType) -> Result<ArrayRef> {
    let text = cast(column, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut lists = ListBuilder::new(Int64Builder::new());
    for value in text.iter() {
        match value {
            None => lists.append_null(),
            Some(value) => {
                let items = value.trim_matches(|c| matches!(c, '{' | '}' | '[' | ']'));
                for number in items.split([' ', ',']).filter(|n| !n.is_empty()) {
                    let number = number.parse::<i64>().map_err(|e| {
                        DataFusionError::Internal(format!("pg_catalog array {value:?}: {e}"))
                    })?;
                    lists.values().append_value(number);
                }
                lists.append(true);
            }
        }
    }
    let lists: ArrayRef = Arc::new(lists.finish());
    Ok(cast(&lists, &DataType::new_list(element.clone(), true))?)
}

/// A context only for running catalog scans, which need no tables of their own.
static SCAN_CONTEXT: LazyLock<SessionContext> = LazyLock::new(SessionContext::new);

pub(super) async fn scan(table: &Arc<dyn TableProvider>) -> Result<Vec<RecordBatch>> {
    let state = SCAN_CONTEXT.state();
    let plan = table.scan(&state, None, &[], None).await?;
    collect(plan, SCAN_CONTEXT.task_ctx()).await
}

pub(super) fn int64_column(
    batch: &RecordBatch,
    name: &str,
) -> Result<Arc<arrow::array::Int64Array>> {
    let column = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    let column = cast(column, &DataType::Int64)?;
    Ok(Arc::new(column.as_primitive::<Int64Type>().clone()))
}

pub(super) fn string_column(batch: &RecordBatch, name: &str) -> Result<ArrayRef> {
    let column = batch.column_by_name(name).ok_or_else(|| missing(name))?;
    Ok(cast(column, &DataType::Utf8)?)
}

pub(super) fn missing(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("pg_catalog has no {what}"))
}
