//! `txpipe`: the command-line face of txpipe-core. Glue only: flags → core calls.

mod cmd;
mod malloc;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Real-time payment-transaction monitoring: Kafka/JSON → fraud rules → Parquet lake.
#[derive(Parser, Debug)]
#[command(name = "txpipe", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The whole stack in one command: in-process broker, produce, ingest, models, tests.
    Demo(cmd::demo::Args),
    /// Generate synthetic transactions (JSON lines) and matching dimension CSVs.
    Generate(cmd::generate::Args),
    /// Load dimension CSVs (customers, merchants, fx rates) into the lake.
    Seed(cmd::seed::Args),
    /// Land transactions in the lake exactly once: decode, flag fraud, write Parquet.
    Ingest(cmd::ingest::Args),
    /// Publish transactions to a Kafka topic (generated or from a file).
    Produce(cmd::produce::Args),
    /// SQL models over the lake: build the marts (the dbt layer, built in).
    #[command(subcommand)]
    Models(cmd::models::ModelsCommand),
    /// Run the data tests over the lake and the marts, and the source freshness
    /// checks (dbt-style summary; non-zero exit on an error-severity failure or a
    /// source past its error_after).
    Test(cmd::models::TestArgs),
    /// The daily job: seed check, models, tests, publish only if tests pass; retries.
    Run(cmd::run::Args),
    /// Run the daily job on a timetable (--at HH:MM or --every 15m), in the foreground.
    Schedule(cmd::run::ScheduleArgs),
    /// Compact small files of the lake's Delta tables (OPTIMIZE).
    Compact(cmd::maintain::CompactArgs),
    /// Delete files no current snapshot needs (VACUUM); --dry-run lists them.
    Vacuum(cmd::maintain::VacuumArgs),
    /// Precision, recall and alert volume of the fraud flags against labels.
    Quality(cmd::quality::Args),
    /// Serve the dashboard, /api JSON panels and Prometheus /metrics of a lake
    /// (and, with --pg-addr, the lake over the Postgres wire protocol).
    Serve(cmd::serve::Args),
    /// Measure decode, rules, Parquet and end-to-end throughput and memory.
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    malloc::tune();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::demo::run(a))),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Seed(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::seed::run(a))),
        Command::Ingest(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::ingest::run(a))),
        Command::Produce(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::produce::run(a))),
        Command::Models(c) => cmd::runtime().and_then(|rt| rt.block_on(cmd::models::run(c))),
        Command::Test(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::models::test(a))),
        Command::Run(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::run::run(a))),
        Command::Schedule(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::run::schedule(a))),
        Command::Compact(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::maintain::compact(a))),
        Command::Vacuum(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::maintain::vacuum(a))),
        Command::Quality(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::quality::run(a))),
        Command::Serve(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::serve::run(a))),
        Command::Bench(a) => cmd::runtime().and_then(|rt| rt.block_on(cmd::bench::run(a))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
