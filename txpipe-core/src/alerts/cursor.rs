//! Which alerts were delivered: a cursor per target and source partition in
//! the lake, and the committed-but-undelivered tail read back from it.
//!
//! `LAKE/_txpipe/alerts/<target>/<stream>/<partition>.json` holds the source
//! offset up to which the target acknowledged every alert. It moves only
//! after the target acknowledged, so a crash between a lake commit and the
//! acknowledgement leaves those alerts behind the cursor, and the next run
//! re-sends them from the fact table before anything new.

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{col, lit, SessionContext};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::lake::Lake;
use crate::read::register_table;
use crate::schema::FACT_TABLE;

/// Folder of the cursors in the lake.
pub const ALERTS_DIR: &str = "_txpipe/alerts";

#[derive(Debug, Serialize, Deserialize)]
struct CursorFile {
    next_offset: i64,
    updated_at: String,
}

/// Cursor file of `target`, `stream` and `partition`.
fn cursor_path(target: &str, stream: &str, partition: i32) -> String {
    format!("{ALERTS_DIR}/{target}/{stream}/{partition}.json")
}

/// The delivered position, or `None` when alerts were never sent for it.
pub(super) async fn read_cursor(
    lake: &Lake,
    target: &str,
    stream: &str,
    partition: i32,
) -> Result<Option<i64>> {
    match lake.get(&cursor_path(target, stream, partition)).await? {
        Some(bytes) => {
            let c: CursorFile = serde_json::from_slice(&bytes)?;
            Ok(Some(c.next_offset))
        }
        None => Ok(None),
    }
}

/// Records that every alert before `next_offset` was delivered.
pub(super) async fn write_cursor(
    lake: &Lake,
    target: &str,
    stream: &str,
    partition: i32,
    next_offset: i64,
) -> Result<()> {
    let body = serde_json::to_vec(&CursorFile {
        next_offset,
        updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })?;
    lake.put(&cursor_path(target, stream, partition), Bytes::from(body))
        .await
}

/// The flagged fact rows of `source`'s `partition` with offsets in
/// `[from, to)`, in offset order.
pub(super) async fn flagged_rows(
    lake: &Lake,
    source: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<RecordBatch>> {
    let ctx = SessionContext::new();
    lake.register_object_store(&ctx);
    if !register_table(&ctx, lake, "fact", FACT_TABLE).await? {
        return Ok(Vec::new());
    }
    let batches = ctx
        .table("fact")
        .await?
        .filter(
            col("source")
                .eq(lit(source))
                .and(col("source_partition").eq(lit(partition)))
                .and(col("source_offset").gt_eq(lit(from)))
                .and(col("source_offset").lt(lit(to)))
                .and(col("is_fraud")),
        )?
        .sort(vec![col("source_offset").sort(true, true)])?
        .collect()
        .await?;
    Ok(batches.into_iter().filter(|b| b.num_rows() > 0).collect())
}
