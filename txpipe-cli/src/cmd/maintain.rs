//! `txpipe compact` and `txpipe vacuum`.

use anyhow::Context;
use txpipe_core::lake::Lake;
use txpipe_core::maintain::{self, CompactOptions};

fn size(s: &str) -> Result<u64, String> {
    maintain::parse_size(s).map_err(|e| e.to_string())
}

fn retention(s: &str) -> Result<std::time::Duration, String> {
    maintain::parse_retention(s).map_err(|e| e.to_string())
}

/// Compact small files into large ones (Delta OPTIMIZE: bin-packing, or Z-order).
///
/// Each table is rewritten in one Delta commit: readers switch from the small
/// files to the packed ones atomically. Safe while an ingest appends to the
/// same table. The small files stay on disk (older versions) until
/// `txpipe vacuum`.
#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// Only this table (lake-relative folder, e.g. fact_transaction or
    /// marts/daily_sales_summary) [default: fact_transaction and quarantine].
    #[arg(long)]
    table: Option<String>,
    /// Only this partition, as column=value (repeat for several conditions).
    #[arg(long = "partition", value_name = "COLUMN=VALUE")]
    partitions: Vec<String>,
    /// Size to pack files to (B, KiB, MiB, GiB, KB, MB, GB).
    #[arg(long, default_value = "128MiB", value_parser = size)]
    target_size: u64,
    /// Z-order the rewritten files by this column (repeat for several; Delta
    /// OPTIMIZE ZORDER BY). Rewrites every file of each partition, so that a
    /// filter on the column skips most files and pages: e.g.
    /// `--zorder-by customer_id` for lookups of one customer's transactions.
    #[arg(long = "zorder-by", value_name = "COLUMN")]
    zorder_by: Vec<String>,
}

pub async fn compact(a: CompactArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let opts = CompactOptions {
        table: a.table,
        partitions: a.partitions,
        target_size: a.target_size,
        zorder_by: a.zorder_by,
    };
    let reports = maintain::compact(&lake, &opts)
        .await
        .with_context(|| format!("compacting {}", a.lake))?;
    if reports.is_empty() {
        println!("nothing to compact in {}", a.lake);
    }
    for r in reports {
        println!(
            "{}: {} files ({:.1} MB) -> {} files ({:.1} MB); {} removed, {} added in {} partitions; version {}",
            r.table,
            r.files_before,
            r.bytes_before as f64 / 1e6,
            r.files_after,
            r.bytes_after as f64 / 1e6,
            r.files_removed,
            r.files_added,
            r.partitions,
            r.version
        );
    }
    Ok(())
}

/// Delete files no current snapshot needs (Delta VACUUM, full listing).
///
/// Removes files compacted away or replaced, and files of batches that never
/// committed (a crash between writing and committing), once older than
/// --retain. Keep --retain above the longest batch of any running ingest.
#[derive(clap::Args, Debug)]
pub struct VacuumArgs {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// Only this table (lake-relative folder) [default: every table of the lake].
    #[arg(long)]
    table: Option<String>,
    /// Keep unreferenced files younger than this (s, m, h, d).
    #[arg(long, default_value = "168h", value_parser = retention)]
    retain: std::time::Duration,
    /// List what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub async fn vacuum(a: VacuumArgs) -> anyhow::Result<()> {
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let reports = maintain::vacuum(&lake, a.table.as_deref(), a.retain, a.dry_run)
        .await
        .with_context(|| format!("vacuuming {}", a.lake))?;
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    let mut total = 0;
    for r in &reports {
        for f in &r.files {
            println!("{f}");
        }
        total += r.files.len();
        eprintln!("{}: {verb} {} files", r.table, r.files.len());
    }
    eprintln!("{verb} {total} files in {} tables", reports.len());
    Ok(())
}
