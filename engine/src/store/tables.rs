//! Each stored group as a plain table, `features_<group>`: the newest row per path of the
//! group's current version, read from its live Parquet parts (neither parts replaced by a
//! compaction nor malformed ones).

use std::sync::Arc;

use async_trait::async_trait;
use audiolake_udf::features::GroupSchema;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{col, SessionContext};
use object_store::path::Path;
use url::Url;

use super::{part, stored_groups, FeatureStore};

/// Registers `features_<group>` for every stored group of `features`, kept at `store_url`.
pub(crate) fn register_feature_tables(
    ctx: &SessionContext,
    store_url: &Url,
    features: &Arc<FeatureStore>,
) -> Result<()> {
    for group in stored_groups() {
        let schema = part::schema(&group);
        let columns: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| col(format!("\"{}\"", f.name())))
            .collect();
        let parts = Arc::new(LiveParts {
            features: Arc::clone(features),
            store_url: store_url.clone(),
            schema,
            group: group.clone(),
        });
        let newest = ctx.read_table(parts)?.distinct_on(
            vec![col("path")],
            columns,
            Some(vec![
                col("path").sort(true, false),
                col("analyzed_at").sort(false, false),
            ]),
        )?;
        ctx.register_table(format!("features_{}", group.name), newest.into_view())?;
    }
    Ok(())
}

/// The live parts of one group version, listed at each scan.
struct LiveParts {
    features: Arc<FeatureStore>,
    store_url: Url,
    schema: SchemaRef,
    group: GroupSchema,
}

impl std::fmt::Debug for LiveParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveParts({} v{})", self.group.name, self.group.version)
    }
}

impl LiveParts {
    fn url(&self, path: &Path) -> Result<ListingTableUrl> {
        let mut url = self.store_url.clone();
        url.set_path(&format!("/{path}"));
        ListingTableUrl::try_new(url, None)
    }
}

#[async_trait]
impl TableProvider for LiveParts {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let parts = self.features.live_parts(&self.group).await?;
        if parts.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        // Each part named: a part replaced meanwhile is still there for the retention period.
        let urls = parts
            .iter()
            .map(|p| self.url(p))
            .collect::<Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(&self.schema));
        ListingTable::try_new(config)?
            .scan(state, projection, filters, limit)
            .await
    }
}
