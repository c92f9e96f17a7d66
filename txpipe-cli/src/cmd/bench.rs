//! `txpipe bench`.

use std::path::PathBuf;

use anyhow::Context;
use txpipe_core::pipeline::{self, IngestOptions};

/// Measure throughput (rows/s, MB/s) and peak memory of every stage.
///
/// Generates --rows transactions in DIR, then times decode, decode+rules and
/// Parquet encoding on one thread each, and the whole file → lake path with all
/// workers. Build with --release for meaningful numbers. See BENCHMARKS.md.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transactions to generate and process.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Scratch folder (the input file and a lake are written there).
    #[arg(long, default_value = "target/txpipe-bench")]
    dir: PathBuf,
    /// Rows per micro-batch.
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
    /// Worker threads for the end-to-end stage [default: one per core].
    #[arg(long)]
    workers: Option<usize>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let mut opts = IngestOptions {
        batch_rows: a.batch_rows,
        ..Default::default()
    };
    if let Some(w) = a.workers {
        opts.workers = w;
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; use `cargo run --release -p txpipe-cli -- bench` for real numbers");
    }
    println!("| stage | threads | rows | seconds | rows/s | MB/s | peak RSS (MiB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    txpipe_core::bench::run(&a.dir, a.rows, &opts, &mut |r| {
        println!(
            "| {} | {} | {} | {:.3} | {:.0} | {:.1} | {} |",
            r.name,
            r.threads,
            r.rows,
            r.secs,
            r.rows_per_sec(),
            r.mb_per_sec(),
            r.peak_rss_mib.map_or("-".into(), |m| format!("{m:.0}"))
        );
    })
    .await
    .with_context(|| format!("benchmarking in {}", a.dir.display()))?;
    Ok(())
}
