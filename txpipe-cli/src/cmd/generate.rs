//! `txpipe generate`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use txpipe_core::generate::generate;

use crate::progress::Progress;

/// Generate synthetic transactions and the dimension CSVs they reference.
///
/// Writes DIR/transactions.jsonl, DIR/dim_customer.csv, DIR/dim_merchant.csv,
/// DIR/fx_rates.csv and DIR/fraud_labels.csv (the truth of the injected fraud
/// scenarios, for `txpipe quality`). The same --seed gives byte-identical output.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Number of transaction lines to write (malformed ones included).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    #[command(flatten)]
    generator: super::generator_args::GeneratorArgs,
    /// Output folder (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = a.generator.options(a.count);
    let started = Instant::now();
    let mut progress = Progress::new(a.quiet);
    let s = generate(&a.out, &opts, &mut |n| {
        progress.tick(|| format!("generated {n} / {} lines", a.count));
    })
    .with_context(|| format!("generating into {}", a.out.display()))?;
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "wrote {} lines ({} valid, {} malformed, {} foreign, {} huge, {} invalid geo) to {} in {secs:.2}s ({:.2} M rows/s, {:.0} MB)",
        s.lines,
        s.valid,
        s.bad_total(),
        s.foreign,
        s.huge,
        s.invalid_geo,
        a.out.join("transactions.jsonl").display(),
        s.lines as f64 / secs / 1e6,
        s.bytes as f64 / 1e6
    );
    if !s.bad.is_empty() {
        let kinds: Vec<String> = s.bad.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("malformed lines by kind: {}", kinds.join(" "));
    }
    if !s.fraud.is_empty() {
        let kinds: Vec<String> = s.fraud.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "labelled fraud: {} rows ({:.2} %) in {}: {}",
            s.fraud_total(),
            s.fraud_total() as f64 * 100.0 / s.lines.max(1) as f64,
            a.out.join(txpipe_core::generate::LABELS_FILE).display(),
            kinds.join(" ")
        );
    }
    Ok(())
}
