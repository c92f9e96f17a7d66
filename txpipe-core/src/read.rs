//! Reading the lake back with DataFusion.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::lake::Lake;
use crate::schema::{
    DIM_CUSTOMER, DIM_CUSTOMER_SCHEMA, DIM_MERCHANT, DIM_MERCHANT_SCHEMA, EVENT_DATE, FACT_SCHEMA,
    FACT_TABLE, FX_RATE, FX_RATE_SCHEMA, QUARANTINE_SCHEMA, QUARANTINE_TABLE, RECEIVED_DATE,
};

/// Registers one Parquet table folder; `partition` is its hive date column.
///
/// # Errors
/// DataFusion could not register the table.
pub async fn register_table(
    ctx: &SessionContext,
    lake: &Lake,
    table: &str,
    schema: &SchemaRef,
    partition: Option<&str>,
) -> Result<()> {
    let mut opts =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    if let Some(col) = partition {
        opts = opts.with_table_partition_cols(vec![(col.to_string(), DataType::Date32)]);
    }
    ctx.register_listing_table(
        table,
        lake.folder_url(table),
        opts,
        Some(schema.clone()),
        None,
    )
    .await?;
    Ok(())
}

/// Registers every lake table that exists (`fact_transaction`, `quarantine`,
/// `dim_customer`, `dim_merchant`, `fx_rate`) and returns their names.
///
/// Readers see published files only: a batch's files are staged elsewhere
/// until its commit, so no half batch is ever visible.
///
/// # Errors
/// The store failed or DataFusion could not register a table.
pub async fn register_lake(ctx: &SessionContext, lake: &Lake) -> Result<Vec<String>> {
    lake.register_object_store(ctx);
    let tables: [(&str, &SchemaRef, Option<&str>); 5] = [
        (FACT_TABLE, &FACT_SCHEMA, Some(EVENT_DATE)),
        (QUARANTINE_TABLE, &QUARANTINE_SCHEMA, Some(RECEIVED_DATE)),
        (DIM_CUSTOMER, &DIM_CUSTOMER_SCHEMA, None),
        (DIM_MERCHANT, &DIM_MERCHANT_SCHEMA, None),
        (FX_RATE, &FX_RATE_SCHEMA, None),
    ];
    let mut registered = Vec::new();
    for (name, schema, partition) in tables {
        if lake.list(name).await?.is_empty() {
            continue;
        }
        register_table(ctx, lake, name, schema, partition).await?;
        registered.push(name.to_string());
    }
    Ok(registered)
}
