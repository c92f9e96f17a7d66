//! One module per subcommand.

pub mod bench;
pub mod generate;
pub mod ingest;
pub mod seed;

use anyhow::Context;

/// The multi-threaded runtime async commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Parses `YYYY-MM-DD` for clap.
pub fn parse_date(s: &str) -> Result<i64, String> {
    txpipe_core::decode::timestamp::parse_date(s).ok_or_else(|| format!("'{s}' is not a date (YYYY-MM-DD)"))
}
