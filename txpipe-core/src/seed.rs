//! `txpipe seed`: dimension CSVs → Delta dimension tables in the lake.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;

use crate::decode::canonical_uuid;
use crate::error::{Error, Result};
use crate::fx::FxTable;
use crate::lake::Lake;
use crate::schema::{
    DIM_CUSTOMER, DIM_CUSTOMER_SCHEMA, DIM_MERCHANT, DIM_MERCHANT_SCHEMA, FRAUD_LABELS,
    FRAUD_LABELS_SCHEMA, FX_RATE, FX_RATE_SCHEMA,
};
use crate::sink::delta::{read_table, replace_table, TableSpec};
use crate::sink::legacy::refuse_legacy_lake;

/// What `seed` loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeedSummary {
    /// Rows in `dim_customer`.
    pub customers: usize,
    /// Rows in `dim_merchant`.
    pub merchants: usize,
    /// Rows in `fx_rate`.
    pub fx_rates: usize,
    /// True when `fx_rates.csv` was absent and the built-in rates were loaded.
    pub fx_from_defaults: bool,
    /// Rows loaded into `fraud_labels` when `DIR/fraud_labels.csv` exists.
    pub fraud_labels: Option<usize>,
}

fn read_csv(path: &Path, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let reader = datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(file)
        .map_err(|e| Error::Csv {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Csv {
            file: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// Replaces column 0 (an id) with its canonical UUID form; rejects non-UUIDs.
fn canonical_ids(file: &Path, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
    let mut line = 1usize;
    batches
        .into_iter()
        .map(|b| {
            let ids = b.column(0).as_string::<i32>();
            let mut out = Vec::with_capacity(ids.len());
            for i in 0..ids.len() {
                line += 1;
                let id = if ids.is_null(i) { "" } else { ids.value(i) };
                let canon = canonical_uuid(id).ok_or_else(|| Error::Csv {
                    file: file.display().to_string(),
                    reason: format!(
                        "line {line}: '{id}' in column {} is not a UUID",
                        b.schema().field(0).name()
                    ),
                })?;
                out.push(canon.into_owned());
            }
            let mut cols: Vec<ArrayRef> = b.columns().to_vec();
            cols[0] = Arc::new(StringArray::from(out));
            Ok(RecordBatch::try_new(b.schema(), cols)?)
        })
        .collect()
}

/// Loads `dim_customer.csv`, `dim_merchant.csv` and `fx_rates.csv` from `dir`
/// into the lake. Without `fx_rates.csv`, the built-in default rates are loaded.
///
/// # Errors
/// A missing or malformed CSV (the error names the file and line), or the
/// store failed.
pub async fn seed(lake: &Lake, dir: &Path) -> Result<SeedSummary> {
    let customers_csv = dir.join("dim_customer.csv");
    let merchants_csv = dir.join("dim_merchant.csv");
    let customers = canonical_ids(
        &customers_csv,
        read_csv(&customers_csv, &DIM_CUSTOMER_SCHEMA)?,
    )?;
    let merchants = canonical_ids(
        &merchants_csv,
        read_csv(&merchants_csv, &DIM_MERCHANT_SCHEMA)?,
    )?;
    let fx_csv = dir.join("fx_rates.csv");
    let (fx, fx_from_defaults) = if fx_csv.exists() {
        let text =
            std::fs::read_to_string(&fx_csv).map_err(|e| Error::io("reading", &fx_csv, e))?;
        (
            FxTable::from_csv(&fx_csv.display().to_string(), &text)?,
            false,
        )
    } else {
        (FxTable::defaults(), true)
    };
    refuse_legacy_lake(lake).await?;
    let dim = |schema: &SchemaRef| TableSpec::new(schema.clone());
    replace_table(lake, DIM_CUSTOMER, &dim(&DIM_CUSTOMER_SCHEMA), &customers).await?;
    replace_table(lake, DIM_MERCHANT, &dim(&DIM_MERCHANT_SCHEMA), &merchants).await?;
    replace_table(lake, FX_RATE, &dim(&FX_RATE_SCHEMA), &[fx_batch(&fx)?]).await?;
    let labels_csv = dir.join(crate::generate::LABELS_FILE);
    let mut fraud_labels = None;
    if labels_csv.exists() {
        let labels = canonical_ids(&labels_csv, read_csv(&labels_csv, &FRAUD_LABELS_SCHEMA)?)?;
        replace_table(lake, FRAUD_LABELS, &dim(&FRAUD_LABELS_SCHEMA), &labels).await?;
        fraud_labels = Some(labels.iter().map(RecordBatch::num_rows).sum());
    }
    Ok(SeedSummary {
        fraud_labels,
        customers: customers.iter().map(RecordBatch::num_rows).sum(),
        merchants: merchants.iter().map(RecordBatch::num_rows).sum(),
        fx_rates: fx.len(),
        fx_from_defaults,
    })
}

fn fx_batch(fx: &FxTable) -> Result<RecordBatch> {
    let (codes, rates): (Vec<String>, Vec<f64>) = fx.entries().into_iter().unzip();
    Ok(RecordBatch::try_new(
        FX_RATE_SCHEMA.clone(),
        vec![
            Arc::new(StringArray::from(codes)),
            Arc::new(datafusion::arrow::array::Float64Array::from(rates)),
        ],
    )?)
}

/// The lake's fx rates, or the built-in defaults when it has none (`true`).
///
/// # Errors
/// The store failed or the table is malformed.
pub async fn load_fx(lake: &Lake) -> Result<(FxTable, bool)> {
    let batches = read_table(lake, FX_RATE).await?;
    if batches.is_empty() {
        return Ok((FxTable::defaults(), true));
    }
    let mut pairs = Vec::new();
    for b in &batches {
        let codes = b.column(0).as_string_opt::<i32>();
        let rates = b
            .column(1)
            .as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>();
        let (Some(codes), Some(rates)) = (codes, rates) else {
            return Err(Error::Config(
                "fx_rate table does not have (currency Utf8, usd_rate Float64) columns".into(),
            ));
        };
        for i in 0..b.num_rows() {
            pairs.push((codes.value(i).to_string(), rates.value(i)));
        }
    }
    Ok((FxTable::try_new(pairs)?, false))
}
