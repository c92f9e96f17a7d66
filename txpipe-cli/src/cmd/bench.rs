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
    /// Instead: measure the bare consume rate of a Kafka topic (a plain rdkafka
    /// consumer reading every partition to its end, doing nothing else), the
    /// baseline `txpipe ingest --brokers` is compared with.
    #[arg(long, value_name = "HOST:PORT", requires = "topic")]
    kafka_bare: Option<String>,
    /// Topic for --kafka-bare.
    #[arg(long, requires = "kafka_bare")]
    topic: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if let (Some(brokers), Some(topic)) = (a.kafka_bare.clone(), a.topic.clone()) {
        let r = tokio::task::spawn_blocking(move || {
            txpipe_core::kafka::bare::bare_consume(&brokers, &topic, &[])
        })
        .await?
        .context("bare consume")?;
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        println!(
            "bare consume: {} messages, {:.1} MB in {secs:.2}s: {:.0} msgs/s, {:.1} MB/s",
            r.messages,
            r.bytes as f64 / 1e6,
            r.messages as f64 / secs,
            r.bytes as f64 / 1e6 / secs
        );
        return Ok(());
    }
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
