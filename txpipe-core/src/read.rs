//! Reading the lake back with DataFusion, through the tables' Delta snapshots.

use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::lake::Lake;
use crate::schema::{DIM_CUSTOMER, DIM_MERCHANT, FACT_TABLE, FX_RATE, QUARANTINE_TABLE};
use crate::sink::delta::open;
use crate::sink::legacy::refuse_legacy_lake;

/// Registers the Delta table at `rel` (lake-relative folder) as `name`, at
/// its newest committed version; `false` when there is no table there.
///
/// A query sees exactly the files of that snapshot: never a batch being
/// written, never a file compacted away, and DataFusion skips files by the
/// Delta statistics. Register again to see newer commits.
///
/// # Errors
/// The log is unreadable or DataFusion could not register the table.
pub async fn register_table(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    rel: &str,
) -> Result<bool> {
    let Some(table) = open(lake, rel).await? else {
        return Ok(false);
    };
    plain_strings(ctx);
    // The scan takes its settings (plain strings, pushdown) from the session.
    let provider = table
        .table_provider()
        .with_session(std::sync::Arc::new(ctx.state()))
        .await?;
    let _ = ctx.deregister_table(name)?;
    ctx.register_table(name, provider)?;
    Ok(true)
}

/// Reads strings as `Utf8`, the lake contract's type, not as DataFusion's
/// default `Utf8View` (so marts built from the lake keep standard types).
pub fn plain_strings(ctx: &SessionContext) {
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
}

/// The lake's own tables, as SQL sees them.
pub const LAKE_TABLES: [&str; 5] = [
    FACT_TABLE,
    QUARANTINE_TABLE,
    DIM_CUSTOMER,
    DIM_MERCHANT,
    FX_RATE,
];

/// Registers every lake table that exists (`fact_transaction`, `quarantine`,
/// `dim_customer`, `dim_merchant`, `fx_rate`) and returns their names.
///
/// # Errors
/// The lake is in txpipe 0.1's format, a log is unreadable, or DataFusion
/// could not register a table.
pub async fn register_lake(ctx: &SessionContext, lake: &Lake) -> Result<Vec<String>> {
    refuse_legacy_lake(lake).await?;
    plain_strings(ctx);
    lake.register_object_store(ctx);
    let mut registered = Vec::new();
    for name in LAKE_TABLES {
        if register_table(ctx, lake, name, name).await? {
            registered.push(name.to_string());
        }
    }
    Ok(registered)
}
