//! `txpipe seed`.

use std::path::PathBuf;

use anyhow::Context;
use txpipe_core::lake::Lake;

/// Load dim_customer.csv, dim_merchant.csv and fx_rates.csv from DIR into the lake.
///
/// Each table is replaced as a whole. Without DIR/fx_rates.csv the built-in default
/// rates (data/fx_rates.csv) are loaded. When DIR/fraud_labels.csv exists (the truth
/// `txpipe generate` writes), it is loaded as the fraud_labels table, which
/// `txpipe quality` and the dashboard's quality panel read.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// Folder holding the CSVs.
    #[arg(long)]
    dir: PathBuf,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let s = txpipe_core::seed::seed(&lake, &a.dir)
        .await
        .with_context(|| format!("seeding {} from {}", a.lake, a.dir.display()))?;
    println!(
        "seeded {}: dim_customer {} rows, dim_merchant {} rows, fx_rate {} rows{}",
        a.lake,
        s.customers,
        s.merchants,
        s.fx_rates,
        if s.fx_from_defaults {
            " (built-in default rates)"
        } else {
            ""
        }
    );
    if let Some(n) = s.fraud_labels {
        println!("  fraud_labels {n} rows (for `txpipe quality` and the dashboard)");
    }
    Ok(())
}
