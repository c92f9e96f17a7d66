//! Lakes written before the tables were Delta tables.
//!
//! txpipe 0.1 kept its own commit log in `LAKE/_txpipe/log/`. Such a lake's
//! folders hold Parquet files but no `_delta_log`, and mixing the two
//! formats would make committed rows invisible or count them twice, so
//! every reader and writer refuses it with what to do.

use crate::error::{Error, Result};
use crate::lake::Lake;

/// Folder of txpipe 0.1's own commit log.
pub const LEGACY_LOG_DIR: &str = "_txpipe/log";

/// Fails when `lake` was written in txpipe 0.1's format.
///
/// # Errors
/// [`Error::LegacyLake`], or the store failed.
pub async fn refuse_legacy_lake(lake: &Lake) -> Result<()> {
    let entries = lake.list(LEGACY_LOG_DIR).await?;
    if entries
        .iter()
        .any(|m| m.location.as_ref().ends_with(".json"))
    {
        return Err(Error::LegacyLake(lake.url().to_string()));
    }
    Ok(())
}
