//! Replacing whole date partitions of a table in one Delta commit: Delta's
//! `replaceWhere`, through delta-rs' write operation.
//!
//! An incremental mart is partitioned by `event_date`; a run recomputes only
//! the dates new data touched and swaps exactly those partitions (their old
//! files removed, the new ones added, in one commit). The first build, and a
//! rebuild in full, overwrite the whole table (and may change its schema or
//! partitioning). Files the commit removed are deleted right after it, like
//! every mart replacement, so a plain glob of the partition folders reads
//! exactly the current table too.

use std::collections::BTreeSet;

use datafusion::arrow::array::RecordBatch;
use deltalake_core::operations::write::SchemaMode;
use deltalake_core::protocol::SaveMode;

use super::delta::{delta_error_at, handle, open, snapshot_files, TableSpec};
use crate::error::Result;
use crate::lake::Lake;

/// Which part of a partitioned table a write replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replace {
    /// The whole table (first build, full rebuild, schema change).
    All,
    /// Only these values of the partition column (dates `YYYY-MM-DD`).
    Partitions(BTreeSet<String>),
}

/// `column IN (DATE '…', …)` for `dates` (only date-shaped values are kept).
pub fn date_in_list(column: &str, dates: &BTreeSet<String>) -> Option<String> {
    let list: Vec<String> = dates
        .iter()
        .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit() || c == '-'))
        .map(|d| format!("DATE '{d}'"))
        .collect();
    (!list.is_empty()).then(|| format!("{column} IN ({})", list.join(", ")))
}

/// Writes `batches` (which hold the partition column `column`, a date) into
/// the table at `rel`, partitioned by `column`, replacing what `replace`
/// says, in one commit; returns the new version. An empty partition list with
/// no rows changes nothing (`None`).
///
/// # Errors
/// The write or the store failed; with [`Replace::Partitions`], a row
/// outside the listed partitions, or a schema that differs from the table's.
pub async fn replace_partitions(
    lake: &Lake,
    rel: &str,
    spec: &TableSpec,
    column: &str,
    mut batches: Vec<RecordBatch>,
    replace: &Replace,
) -> Result<Option<u64>> {
    if batches.is_empty() {
        // The write needs the schema even with no rows (an empty partition
        // list removes those partitions).
        batches.push(RecordBatch::new_empty(spec.schema.clone()));
    }
    let (table, before) = match open(lake, rel).await? {
        Some(t) => {
            let files: BTreeSet<String> = snapshot_files(&t, rel)?.into_iter().collect();
            (t, files)
        }
        None => (handle(lake, rel)?, BTreeSet::new()),
    };
    let props = super::delta::commit_properties(&table);
    let mut write = table
        .write(batches)
        .with_partition_columns([column])
        .with_save_mode(SaveMode::Overwrite)
        .with_writer_properties(super::parquet::writer_properties())
        .with_configuration(spec.configuration().into_iter().map(|(k, v)| (k, Some(v))))
        .with_commit_properties(props);
    match replace {
        Replace::All => write = write.with_schema_mode(SchemaMode::Overwrite),
        Replace::Partitions(dates) => match date_in_list(column, dates) {
            Some(predicate) => write = write.with_replace_where(predicate),
            None => return Ok(None),
        },
    }
    let done = write.await.map_err(|e| delta_error_at(lake, rel, e))?;
    let version = done.version().and_then(|v| u64::try_from(v).ok());
    let after: BTreeSet<String> = snapshot_files(&done, rel)?.into_iter().collect();
    for gone in before.difference(&after) {
        lake.delete(gone).await?;
    }
    Ok(version)
}

/// The partition columns of the table at `rel` (`None`: no table).
///
/// # Errors
/// The log is unreadable.
pub async fn partition_columns(lake: &Lake, rel: &str) -> Result<Option<Vec<String>>> {
    let Some(table) = open(lake, rel).await? else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(|e| delta_error_at(lake, rel, e))?;
    Ok(Some(snapshot.metadata().partition_columns().to_vec()))
}
