//! Table maintenance: compaction (Delta OPTIMIZE) and vacuum, through delta-rs.
//!
//! A streaming ingest commits one small file per partition and micro-batch;
//! [`compact`] bin-packs them into files of about `target_size` in one
//! Delta commit per table, which readers switch to atomically (the small
//! files stay in older versions until [`vacuum`]). It is safe while an ingest
//! appends to the same table: appends do not conflict with a compaction.
//! Run one compaction per table at a time (delta-rs cannot tell two apart).

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake_core::kernel::transaction::TransactionError;
use deltalake_core::operations::optimize::{Metrics, OptimizeType};
use deltalake_core::operations::vacuum::VacuumMode;
use deltalake_core::{DeltaTable, DeltaTableError, FilterOp, FilterValue};

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::models::MARTS;
use crate::schema::{DIM_CUSTOMER, DIM_MERCHANT, FACT_TABLE, FX_RATE, QUARANTINE_TABLE};
use crate::sink::delta::{delta_error, open};
use crate::sink::legacy::refuse_legacy_lake;
use crate::sink::parquet::writer_properties;

/// Default size compaction packs files to.
pub const DEFAULT_TARGET_SIZE: u64 = 128 << 20;

/// Default age under which vacuum keeps unreferenced files (Delta's default).
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(168 * 3600);

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// One table (lake-relative folder, e.g. `fact_transaction` or
    /// `marts/daily_sales_summary`); `None` = the fact and quarantine tables.
    pub table: Option<String>,
    /// Only this partition, as `column=value` (e.g. `event_date=2026-11-20`).
    pub partitions: Vec<String>,
    /// Size to pack files to, bytes.
    pub target_size: u64,
    /// Columns to Z-order the rewritten files by (Delta `OPTIMIZE … ZORDER
    /// BY`); empty = bin-packing only. Z-ordering rewrites every file of each
    /// partition, so that the files' min/max statistics and page indexes let
    /// a filter on these columns (a lookup of one customer) skip most data.
    pub zorder_by: Vec<String>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            table: None,
            partitions: Vec::new(),
            target_size: DEFAULT_TARGET_SIZE,
            zorder_by: Vec::new(),
        }
    }
}

/// What compacting one table did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The table.
    pub table: String,
    /// Data files in the snapshot before and after.
    pub files_before: u64,
    /// Data files in the snapshot after.
    pub files_after: u64,
    /// Bytes of the snapshot's files before.
    pub bytes_before: u64,
    /// Bytes of the snapshot's files after.
    pub bytes_after: u64,
    /// Files the compaction removed from the snapshot.
    pub files_removed: u64,
    /// Files it added.
    pub files_added: u64,
    /// Partitions it rewrote.
    pub partitions: u64,
    /// Table version after (unchanged when there was nothing to do).
    pub version: u64,
}

fn parse_partition(p: &str) -> Result<(&str, &str)> {
    match p.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => Err(Error::Config(format!(
            "partition '{p}': expected column=value, e.g. event_date=2026-11-20"
        ))),
    }
}

fn default_tables(table: &Option<String>) -> Vec<String> {
    match table {
        Some(t) => vec![t.trim_matches('/').to_string()],
        None => vec![FACT_TABLE.to_string(), QUARANTINE_TABLE.to_string()],
    }
}

/// Refuses a Z-order column `name` does not have, or one it is partitioned
/// by (`partitioned`): every file of a partition has one value of it.
fn check_zorder(
    table: &DeltaTable,
    name: &str,
    partitioned: &[String],
    zorder_by: &[String],
) -> Result<()> {
    let snapshot = table.snapshot().map_err(|e| delta_error(name, e))?;
    for column in zorder_by {
        let why = if partitioned.contains(column) {
            "it is a partition column"
        } else if snapshot.schema().field(column).is_none() {
            "no such column"
        } else {
            continue;
        };
        return Err(Error::Config(format!(
            "cannot Z-order {name} by '{column}': {why}"
        )));
    }
    Ok(())
}

fn size_of(table: &deltalake_core::DeltaTable, name: &str) -> Result<(u64, u64)> {
    let s = table.snapshot().map_err(|e| delta_error(name, e))?;
    let files = s.log_data();
    Ok((
        files.num_files() as u64,
        files.iter().map(|f| f.size().max(0) as u64).sum(),
    ))
}

/// Rows per data page of Z-ordered files: small pages, so that a lookup of
/// one key reads one page of each column instead of the whole column chunk
/// (the page index's min/max of the sorted column prunes the rest).
const ZORDER_PAGE_ROWS: usize = 4096;

fn properties(zorder_by: &[String]) -> parquet::file::properties::WriterProperties {
    if zorder_by.is_empty() {
        writer_properties()
    } else {
        writer_properties()
            .into_builder()
            .set_data_page_row_count_limit(ZORDER_PAGE_ROWS)
            .build()
    }
}

/// Times a compaction is redone when busy appends kept winning every one of
/// its commit attempts (delta-rs makes 15).
const COMPACT_ATTEMPTS: usize = 5;

/// Runs one OPTIMIZE of `name`, redoing it from a fresh snapshot when
/// concurrent appends won all of delta-rs' commit attempts (an ingest of
/// small batches can commit several times a second; its appends only add
/// files, so a redo always can succeed). A lost attempt's rewritten files are
/// in no snapshot; vacuum removes them.
async fn optimize(
    lake: &Lake,
    name: &str,
    table: DeltaTable,
    filters: &[(&str, FilterOp, FilterValue<'_>)],
    target: NonZeroU64,
    zorder_by: &[String],
) -> Result<(DeltaTable, Metrics)> {
    let kind = || {
        if zorder_by.is_empty() {
            OptimizeType::Compact
        } else {
            OptimizeType::ZOrder(zorder_by.to_vec())
        }
    };
    let mut table = table;
    let mut attempt = 1;
    loop {
        let result = table
            .clone()
            .optimize()
            .with_filters(filters)
            .with_type(kind())
            .with_target_size(target)
            .with_writer_properties(properties(zorder_by))
            .with_max_concurrent_tasks(2)
            .await;
        match result {
            Ok(done) => return Ok(done),
            Err(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_),
            }) if attempt < COMPACT_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
                table = open(lake, name).await?.ok_or_else(|| {
                    Error::Config(format!("table {name} disappeared during compaction"))
                })?;
            }
            Err(e) => return Err(delta_error(name, e)),
        }
    }
}

/// Compacts small files of the lake's tables (bin-packing OPTIMIZE).
///
/// # Errors
/// A bad partition filter, a table that does not exist (when named), a
/// conflicting concurrent compaction or overwrite, or the store failed.
pub async fn compact(lake: &Lake, opts: &CompactOptions) -> Result<Vec<CompactReport>> {
    refuse_legacy_lake(lake).await?;
    // Z-order columns belong to one table (the quarantine has no customer_id):
    // refused before anything is rewritten rather than after the first table.
    if !opts.zorder_by.is_empty() && opts.table.is_none() {
        return Err(Error::Config(format!(
            "Z-ordering by {} needs the table it applies to (e.g. --table {FACT_TABLE})",
            opts.zorder_by.join(", ")
        )));
    }
    let target = NonZeroU64::new(opts.target_size.max(1 << 20))
        .ok_or_else(|| Error::Config("target size must be positive".into()))?;
    let parsed: Vec<(&str, &str)> = opts
        .partitions
        .iter()
        .map(|p| parse_partition(p))
        .collect::<Result<_>>()?;
    let mut reports = Vec::new();
    for name in default_tables(&opts.table) {
        let Some(table) = open(lake, &name).await? else {
            if opts.table.is_some() {
                return Err(Error::Config(format!(
                    "no Delta table at {name} in {}",
                    lake.url()
                )));
            }
            continue;
        };
        let columns = table
            .snapshot()
            .map_err(|e| delta_error(&name, e))?
            .metadata()
            .partition_columns()
            .to_vec();
        // A filter on a column the table is not partitioned by does not apply to it.
        let filters: Vec<(&str, FilterOp, FilterValue<'_>)> = parsed
            .iter()
            .filter(|(k, _)| columns.iter().any(|c| c == k))
            .map(|(k, v)| (*k, FilterOp::Eq, FilterValue::Scalar(v)))
            .collect();
        if !parsed.is_empty() && filters.is_empty() {
            continue;
        }
        check_zorder(&table, &name, &columns, &opts.zorder_by)?;
        let (files_before, bytes_before) = size_of(&table, &name)?;
        let (table, metrics) =
            optimize(lake, &name, table, &filters, target, &opts.zorder_by).await?;
        let (files_after, bytes_after) = size_of(&table, &name)?;
        reports.push(CompactReport {
            table: name,
            files_before,
            files_after,
            bytes_before,
            bytes_after,
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            partitions: metrics.partitions_optimized,
            version: table.version().unwrap_or_default(),
        });
    }
    Ok(reports)
}

/// What vacuuming one table did (or would do, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VacuumReport {
    /// The table.
    pub table: String,
    /// Lake-relative paths of the files deleted (or to delete).
    pub files: Vec<String>,
}

/// Every Delta table of the lake: fact, quarantine, dims and marts.
///
/// # Errors
/// The store failed.
pub async fn lake_tables(lake: &Lake) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in [
        FACT_TABLE,
        QUARANTINE_TABLE,
        DIM_CUSTOMER,
        DIM_MERCHANT,
        FX_RATE,
    ] {
        if lake
            .exists(&format!("{t}/_delta_log/00000000000000000000.json"))
            .await?
            || !lake.list(&format!("{t}/_delta_log")).await?.is_empty()
        {
            out.push(t.to_string());
        }
    }
    let mut marts = std::collections::BTreeSet::new();
    for m in lake.list(MARTS).await? {
        let rel = lake.relative(&m.location);
        if let Some((model, rest)) = rel
            .strip_prefix(&format!("{MARTS}/"))
            .and_then(|r| r.split_once('/'))
        {
            if rest.starts_with("_delta_log/") {
                marts.insert(format!("{MARTS}/{model}"));
            }
        }
    }
    out.extend(marts);
    Ok(out)
}

/// Deletes files no snapshot newer than `retain` needs: files compacted
/// away or replaced, and files of batches that never committed (a crash
/// between writing and committing), once they are older than `retain`.
///
/// `retain` must exceed the longest time between a batch's files being
/// written and its commit, or vacuum deletes a live ingest's files before it
/// commits them; the default (7 days) is far on the safe side.
///
/// # Errors
/// The store failed or a log is unreadable.
pub async fn vacuum(
    lake: &Lake,
    table: Option<&str>,
    retain: Duration,
    dry_run: bool,
) -> Result<Vec<VacuumReport>> {
    refuse_legacy_lake(lake).await?;
    let tables = match table {
        Some(t) => vec![t.trim_matches('/').to_string()],
        None => lake_tables(lake).await?,
    };
    let retention = chrono::Duration::from_std(retain)
        .map_err(|e| Error::Config(format!("retention {retain:?}: {e}")))?;
    let mut reports = Vec::new();
    for name in tables {
        let Some(t) = open(lake, &name).await? else {
            return Err(Error::Config(format!(
                "no Delta table at {name} in {}",
                lake.url()
            )));
        };
        let (_, metrics) = t
            .vacuum()
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .with_dry_run(dry_run)
            .await
            .map_err(|e| delta_error(&name, e))?;
        let mut files: Vec<String> = metrics
            .files_deleted
            .into_iter()
            .map(|f| format!("{name}/{}", f.trim_start_matches('/')))
            .collect();
        files.sort();
        reports.push(VacuumReport { table: name, files });
    }
    Ok(reports)
}

/// Parses a size such as `128MiB`, `64MB`, `1GiB` or `1048576` (bytes).
///
/// # Errors
/// Not a positive number with an optional B, KiB, MiB, GiB (or KB, MB, GB) unit.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::Config(format!("'{s}' is not a size like 128MiB, 64MB or 1GiB"));
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

/// Parses a retention such as `168h`, `7d`, `30m` or `0h`.
///
/// # Errors
/// Not a number followed by s, m, h or d.
pub fn parse_retention(s: &str) -> Result<Duration> {
    let bad = || Error::Config(format!("'{s}' is not a duration like 168h, 7d or 30m"));
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    secs.map(Duration::from_secs).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_retentions_parse_or_say_why_not() {
        assert_eq!(parse_size("128MiB").unwrap(), 128 << 20);
        assert_eq!(parse_size("64MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "0", "12XB", "MiB", "-1MiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_retention("168h").unwrap(), DEFAULT_RETAIN);
        assert_eq!(parse_retention("0h").unwrap(), Duration::ZERO);
        assert_eq!(parse_retention("7d").unwrap(), DEFAULT_RETAIN);
        for bad in ["", "h", "5w", "1.5h"] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
        assert!(parse_partition("event_date=2026-11-20").is_ok());
        assert!(parse_partition("event_date").is_err());
    }
}
