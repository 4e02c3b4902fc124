//! Each stored group as a plain table, `features_<group>`: the newest row per path of the
//! group's current version, read straight from its Parquet parts.

use std::sync::Arc;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::Result;
use datafusion::prelude::{col, SessionContext};
use url::Url;

use super::{part, stored_groups};

/// Registers `features_<group>` for every stored group of the store at `store_url`.
pub(crate) fn register_feature_tables(ctx: &SessionContext, store_url: &Url) -> Result<()> {
    for group in stored_groups() {
        let dir = format!(
            "{}/features/{}/v{}/",
            store_url.as_str().trim_end_matches('/'),
            group.name,
            group.version
        );
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(ListingTableUrl::parse(&dir)?)
            .with_listing_options(options)
            .with_schema(part::schema(&group));
        let parts = Arc::new(ListingTable::try_new(config)?);
        let columns: Vec<_> = part::schema(&group)
            .fields()
            .iter()
            .map(|f| col(format!("\"{}\"", f.name())))
            .collect();
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
