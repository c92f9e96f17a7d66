//! `txpipe serve`.

use anyhow::Context;
use txpipe_core::lake::Lake;

/// Serve the dashboard, JSON panels and Prometheus metrics of a lake.
///
/// GET / is the dashboard (daily revenue and fraud, fraud by rule, category and
/// country, top merchants, risky customers, live ingest stats, the last run); it
/// reads the marts and refreshes every 10 s. GET /api/{daily, fraud_by_rule,
/// categories, countries, top_merchants?by=revenue|fraud_rate, risky_customers,
/// ingest, runs/latest} return the panels as JSON; GET /metrics is Prometheus text
/// (lake totals, fraud per rule, files and bytes, consumer lag, model and test
/// durations and failures of the last run). Everything is served by the binary;
/// no CDN. Ctrl-C stops.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Kafka brokers, to show the consumer lag of --topic against the lake.
    #[arg(long, requires = "topic")]
    brokers: Option<String>,
    /// Kafka topic being ingested into the lake.
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let kafka = a.brokers.clone().zip(a.topic.clone());
    let server = txpipe_core::serve::serve(lake, &a.addr, kafka)
        .await
        .context("starting the dashboard server")?;
    println!(
        "dashboard on http://{}/ (metrics at /metrics); Ctrl-C to stop",
        server.addr
    );
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    server.task.abort();
    Ok(())
}
