//! `txpipe quality`.

use std::path::PathBuf;

use anyhow::Context;
use txpipe_core::lake::Lake;
use txpipe_core::quality::{quality, Labels};

/// How good the fraud flags are, against labelled fraud.
///
/// For `is_fraud` and for each rule: rows flagged, true positives, precision,
/// recall, F1 and alerts per 1 000 transactions; and per fraud scenario the
/// recall and which rules fired. Labels are a CSV `transaction_id,scenario`
/// (`txpipe generate` writes DIR/fraud_labels.csv), or the lake's
/// `fraud_labels` table (`txpipe seed` loads it) when --labels is not given.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// Labels CSV (`transaction_id,scenario`); default: the lake's fraud_labels table.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Rules file whose rules are listed (also those that never fired);
    /// default: ./sql/rules.toml, else the built-in rules.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let (rules, _) = super::ingest::load_rules(a.rules.as_ref()).context("loading fraud rules")?;
    let labels = match &a.labels {
        Some(p) => Labels::File(p),
        None => Labels::Lake,
    };
    let report = quality(&lake, labels, &rules.names())
        .await
        .with_context(|| format!("measuring the flags of {}", a.lake))?;
    if a.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}
