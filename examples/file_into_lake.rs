//! Embedding txpipe-core: land a JSON-lines file in a Parquet lake, then query it.
//!
//! Generates 20,000 transactions (1% malformed), seeds the dimension tables,
//! ingests the file exactly once into a local lake, and reads the lake back with
//! DataFusion: revenue and fraud per day.
//!
//! Run: `cargo run -p txpipe-core --example file_into_lake [LAKE_DIR]`

use std::sync::Arc;

use txpipe_core::arrow::util::pretty::pretty_format_batches;
use txpipe_core::datafusion::prelude::SessionContext;
use txpipe_core::generate::{generate, GenerateOptions};
use txpipe_core::lake::Lake;
use txpipe_core::pipeline::{ingest_file, IngestOptions};
use txpipe_core::rules::RuleSet;

#[tokio::main]
async fn main() -> Result<(), txpipe_core::Error> {
    let work = std::env::temp_dir().join(format!("txpipe-example-{}", std::process::id()));
    let lake_dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| work.join("lake").display().to_string());

    let input_dir = work.join("input");
    let generated = generate(
        &input_dir,
        &GenerateOptions {
            count: 20_000,
            days: 7,
            bad_rate: 0.01,
            ..Default::default()
        },
        &mut |_| {},
    )?;
    println!(
        "generated {} lines ({} malformed)",
        generated.lines,
        generated.bad_total()
    );

    let lake = Lake::open(&lake_dir)?;
    txpipe_core::seed::seed(&lake, &input_dir).await?;
    let input = input_dir.join("transactions.jsonl").display().to_string();
    let summary = ingest_file(
        &lake,
        &input,
        Arc::new(RuleSet::defaults()?),
        &IngestOptions::default(),
        &mut |_| {},
    )
    .await?;
    println!(
        "landed {} rows, quarantined {}, flagged {} in {:.2}s",
        summary.counts.landed,
        summary.counts.quarantined,
        summary.counts.fraud,
        summary.elapsed.as_secs_f64()
    );

    let ctx = SessionContext::new();
    txpipe_core::read::register_lake(&ctx, &lake).await?;
    let daily = ctx
        .sql(
            "SELECT event_date, COUNT(*) AS txns, SUM(amount_usd) AS revenue_usd, \
             SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud \
             FROM fact_transaction GROUP BY event_date ORDER BY event_date",
        )
        .await?
        .collect()
        .await?;
    println!("{}", pretty_format_batches(&daily)?);
    println!("lake: {lake_dir}");
    Ok(())
}
