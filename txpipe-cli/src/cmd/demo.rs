//! `txpipe demo`.

use anyhow::Context;
use txpipe_core::demo::{demo, DemoOptions};
use txpipe_core::lake::Lake;
use txpipe_core::models::TestStatus;

/// The whole stack in one command, with no services installed.
///
/// Starts an in-process Kafka-protocol broker (librdkafka's mock cluster; or uses
/// --brokers), generates N transactions with their dimensions, seeds the
/// dimensions, produces the transactions while a consumer-group ingest lands them
/// exactly once (publishing each flagged transaction to a demo-alerts-… topic
/// once it is committed), runs the SQL models and data tests, and prints a
/// summary. With --serve the dashboard is up from the start — its live alerts
/// panel shows flagged transactions as they are committed (use --rate to
/// stream slowly enough to watch) — and stays up until Ctrl-C.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Transactions to generate and stream.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Lake folder (or object store URL).
    #[arg(long, default_value = "txpipe-demo-lake")]
    lake: String,
    /// Use these Kafka brokers instead of the in-process one.
    #[arg(long)]
    brokers: Option<String>,
    /// Generator seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Serve the dashboard while streaming and afterwards (Ctrl-C to stop).
    #[arg(long)]
    serve: bool,
    /// Produce at most this many messages per second, e.g. 200 to watch the
    /// live alerts panel fill [default: as fast as possible].
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// Do not publish alerts to a demo-alerts-… topic.
    #[arg(long)]
    no_alerts: bool,
    /// Dashboard address for --serve.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let opts = DemoOptions {
        count: a.count,
        lake: a.lake.clone(),
        brokers: a.brokers.clone(),
        seed: a.seed,
        rate: a.rate,
        alerts: !a.no_alerts,
        ..Default::default()
    };
    if let Some(r) = a.rate {
        if !(r > 0.0) {
            anyhow::bail!("--rate must be a positive number of messages per second");
        }
    }
    let server = if a.serve {
        let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
        let server = txpipe_core::serve::serve(lake, &a.addr, None)
            .await
            .context("starting the dashboard")?;
        println!(
            "dashboard on http://{}/ — flagged transactions appear under \"Live fraud alerts\" as they are committed",
            server.addr
        );
        Some(server)
    } else {
        None
    };
    let s = demo(&opts, &mut |msg| println!("· {msg}"))
        .await
        .context("running the demo")?;
    let i = &s.ingested;
    println!();
    println!(
        "txpipe demo: {} transactions through {} in {:.1}s",
        a.count,
        s.broker,
        s.elapsed.as_secs_f64()
    );
    println!(
        "  produced  {} messages to {} ({} partitions): {:.0} msgs/s",
        s.produced.delivered,
        s.topic,
        s.partitions,
        s.produced.delivered as f64 / s.produced.elapsed.as_secs_f64().max(1e-9)
    );
    println!(
        "  ingested  rows in {} = landed {} + quarantined {} in {} batches: {:.0} rows/s",
        i.counts.rows_in,
        i.counts.landed,
        i.counts.quarantined,
        i.batches,
        i.rows_per_sec()
    );
    println!("  fraud     {} rows flagged:", i.counts.fraud);
    for rule in &i.rules {
        println!(
            "              {rule:<14} {}",
            i.counts.flagged.get(rule).copied().unwrap_or(0)
        );
    }
    if let (Some(topic), Some(al)) = (&s.alerts_topic, &i.alerts) {
        println!(
            "  alerts    {} delivered to {topic} (one JSON message per flagged transaction, keyed by customer)",
            al.delivered + al.redelivered
        );
    }
    let count = |st: TestStatus| s.run.tests.iter().filter(|t| t.status == st).count();
    println!(
        "  models    {} built; tests {} pass, {} warn, {} fail; run {} ({})",
        s.run.models.len(),
        count(TestStatus::Pass),
        count(TestStatus::Warn),
        count(TestStatus::Fail) + count(TestStatus::Error),
        s.run.status,
        s.run_record
    );
    let lake = Lake::open(&a.lake)?;
    let root = lake
        .local_root()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| a.lake.clone());
    println!("  lake      {root}");
    println!();
    println!("query it with DuckDB (every table is a Delta table; a mart is also one plain file):");
    println!(
        "  duckdb -c \"SELECT * FROM read_parquet('{root}/marts/daily_sales_summary/*.parquet') ORDER BY event_date\""
    );
    println!(
        "  duckdb -c \"INSTALL delta; LOAD delta; SELECT count(*), count(*) FILTER (WHERE is_fraud) FROM delta_scan('{root}/fact_transaction')\""
    );
    println!("or Python: deltalake.DeltaTable('{root}/fact_transaction'), polars.read_delta(…)");
    if s.run.status != "success" {
        anyhow::bail!(
            "the models/tests run failed: {}",
            s.run.error.unwrap_or_default()
        );
    }
    if let Some(server) = server {
        println!("\ndashboard on http://{}/ ; Ctrl-C to stop", server.addr);
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
