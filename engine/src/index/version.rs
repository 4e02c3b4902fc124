//! A table's version: a digest of the files it reads now (path, size, modification time and
//! e-tag), for tables made of files: AUDIO tables and listing tables (Parquet, CSV, ...). An
//! index built from the same version sees every row of the table as it is, so a kNN scan can
//! answer without reading the table to learn which rows exist.

use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::listing::ListingTable;
use datafusion::error::Result;
use futures::TryStreamExt;
use object_store::ObjectMeta;

use crate::audio::AudioTable;

/// The table's version, or `None` for a table that is not made of files (its rows are then
/// always read).
pub async fn table_version(
    state: &dyn Session,
    table: &dyn TableProvider,
) -> Result<Option<String>> {
    let files = if let Some(audio) = table.downcast_ref::<AudioTable>() {
        audio.files().await?
    } else if let Some(listing) = table.downcast_ref::<ListingTable>() {
        let extension = &listing.options().file_extension;
        let mut files = Vec::new();
        for url in listing.table_paths() {
            let store = state.runtime_env().object_store(url)?;
            let listed: Vec<ObjectMeta> = url
                .list_all_files(state, store.as_ref(), extension)
                .await?
                .try_collect()
                .await?;
            files.extend(listed);
        }
        files
    } else {
        return Ok(None);
    };
    Ok(Some(digest(files)))
}

fn digest(mut files: Vec<ObjectMeta>) -> String {
    files.sort_by(|a, b| a.location.cmp(&b.location));
    let mut hasher = blake3::Hasher::new();
    for file in &files {
        for field in [
            file.location.as_ref(),
            &file.size.to_string(),
            &file.last_modified.timestamp_micros().to_string(),
            file.e_tag.as_deref().unwrap_or(""),
        ] {
            // Length-prefixed, so that fields cannot run into each other.
            hasher.update(&(field.len() as u64).to_le_bytes());
            hasher.update(field.as_bytes());
        }
    }
    hasher.finalize().to_hex().to_string()
}
