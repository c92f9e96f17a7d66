//! `txpipe ingest`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use txpipe_core::lake::Lake;
use txpipe_core::pipeline::{self, IngestOptions, IngestSummary};
use txpipe_core::rules::RuleSet;

use crate::progress::Progress;

/// Land transactions in the lake exactly once.
///
/// Each micro-batch is decoded, flagged by the fraud rules, written as Parquet
/// under LAKE/fact_transaction/event_date=YYYY-MM-DD/ (bad records under
/// LAKE/quarantine/) and committed together with its source position. Re-running
/// after an interruption (Ctrl-C, crash, kill -9) resumes after the last committed
/// batch; re-running on a completed file lands nothing new.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// JSON-lines file to land, one transaction per line ('-' reads stdin).
    #[arg(long)]
    from_file: String,
    /// Fraud rules file [default: sql/rules.toml if present, else the built-in rules].
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Most messages per micro-batch (one commit each).
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
    /// Most payload bytes per micro-batch.
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_BYTES)]
    batch_bytes: usize,
    /// Longest time in milliseconds a non-empty micro-batch stays open.
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_WAIT.as_millis() as u64)]
    batch_ms: u64,
    /// Worker threads for decode, rules and Parquet encoding [default: one per core].
    #[arg(long)]
    workers: Option<usize>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// Loads `--rules`, else `sql/rules.toml` in the working folder, else the built-in rules.
pub fn load_rules(path: Option<&PathBuf>) -> anyhow::Result<(RuleSet, String)> {
    if let Some(p) = path {
        return Ok((RuleSet::from_file(p)?, p.display().to_string()));
    }
    let local = PathBuf::from("sql/rules.toml");
    if local.exists() {
        return Ok((RuleSet::from_file(&local)?, local.display().to_string()));
    }
    Ok((RuleSet::defaults()?, "built-in rules".into()))
}

fn print_summary(s: &IngestSummary, lake: &str, rules_from: &str) {
    if s.counts.rows_in == 0 {
        println!("nothing new in {} (already landed up to line {}); lake {lake} unchanged", s.source, s.resumed_at);
        return;
    }
    let resumed = if s.resumed_at > 0 { format!(" (resumed at line {})", s.resumed_at) } else { String::new() };
    println!("ingested {}{resumed} into {lake}", s.source);
    println!(
        "  rows in {} = landed {} + quarantined {}",
        s.counts.rows_in, s.counts.landed, s.counts.quarantined
    );
    println!("  fraud flagged {} rows ({rules_from}):", s.counts.fraud);
    for name in &s.rules {
        println!("    {name:<20} {}", s.counts.flagged.get(name).copied().unwrap_or(0));
    }
    println!(
        "  {} batches, {} files, {:.1} MB Parquet from {:.1} MB JSON in {:.2}s: {:.0} rows/s, {:.1} MB/s",
        s.batches,
        s.files,
        s.bytes_written as f64 / 1e6,
        s.input_bytes as f64 / 1e6,
        s.elapsed.as_secs_f64(),
        s.rows_per_sec(),
        s.input_bytes as f64 / 1e6 / s.elapsed.as_secs_f64().max(1e-9)
    );
    if s.default_fx {
        println!("  note: the lake has no fx_rate table; built-in rates were used (run `txpipe seed`)");
    }
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let (rules, rules_from) = load_rules(a.rules.as_ref()).context("loading fraud rules")?;
    let mut opts = IngestOptions {
        batch_rows: a.batch_rows,
        batch_bytes: a.batch_bytes,
        batch_wait: Duration::from_millis(a.batch_ms),
        ..Default::default()
    };
    if let Some(w) = a.workers {
        opts.workers = w;
    }
    let stop = opts.stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: committing the batches in flight, then stopping (Ctrl-C again to abort)");
            stop.store(true, Ordering::Relaxed);
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    let mut progress = Progress::new(a.quiet);
    let summary = pipeline::ingest_file(&lake, &a.from_file, Arc::new(rules), &opts, &mut |s: &IngestSummary| {
        progress.tick(|| {
            format!(
                "landed {} rows, quarantined {}, flagged {} ({:.0} rows/s)",
                s.counts.landed,
                s.counts.quarantined,
                s.counts.fraud,
                s.rows_per_sec()
            )
        })
    })
    .await
    .with_context(|| format!("ingesting {} into {}", a.from_file, a.lake))?;
    progress.finish();
    print_summary(&summary, &a.lake, &rules_from);
    Ok(())
}
