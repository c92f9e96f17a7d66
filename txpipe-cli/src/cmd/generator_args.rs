//! Generator flags shared by `txpipe generate` and `txpipe produce`.

use txpipe_core::generate::GenerateOptions;

/// How synthetic transactions are generated.
#[derive(clap::Args, Debug, Clone)]
pub struct GeneratorArgs {
    /// Random seed; the same seed gives the same transactions.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Number of customers.
    #[arg(long, default_value_t = 10_000)]
    pub customers: usize,
    /// Number of merchants.
    #[arg(long, default_value_t = 1_000)]
    pub merchants: usize,
    /// Days the transactions span (in time order, like a stream).
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// First day, YYYY-MM-DD (UTC).
    #[arg(long, value_parser = super::parse_date, default_value = "2026-11-01")]
    pub start: i64,
    /// Share of malformed lines (0.0–1.0): bad JSON, wrong types, bad UUIDs, unknown currencies, ...
    #[arg(long, default_value_t = 0.0)]
    pub bad_rate: f64,
    /// Share of transactions in labelled fraud scenarios (0.0–0.2; 0 turns them
    /// off): compromised card, card testing, account takeover, impossible travel
    /// and the Fraud Detection Handbook's three. The truth goes to
    /// DIR/fraud_labels.csv (generate), never into the stream.
    #[arg(long, default_value_t = txpipe_core::generate::DEFAULT_FRAUD_RATE)]
    pub fraud_rate: f64,
}

impl GeneratorArgs {
    /// Generator options for `count` transactions.
    pub fn options(&self, count: u64) -> GenerateOptions {
        GenerateOptions {
            count,
            seed: self.seed,
            customers: self.customers,
            merchants: self.merchants,
            days: self.days,
            start_day: self.start,
            bad_rate: self.bad_rate,
            fraud_rate: self.fraud_rate,
        }
    }
}
