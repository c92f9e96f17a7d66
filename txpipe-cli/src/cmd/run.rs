//! `txpipe run` and `txpipe schedule`: the daily job.

use std::time::Duration;

use anyhow::Context;
use txpipe_core::models::schedule::{parse_at, parse_every, Timetable};
use txpipe_core::models::{daily_run, DailyEvent, RetryPolicy, RunRecord};

use super::models::{print_model, print_test, print_test_summary, ProjectArgs};

/// Run the daily job: seed check → models → data tests → publish.
///
/// Marts are published only when every model built and no error-severity test
/// failed (write-audit-publish: readers keep the last good marts otherwise).
/// A failed attempt is retried after --retry-backoff seconds, doubling each
/// time. Writes a run record to LAKE/_txpipe/runs/ and exits non-zero on
/// failure, so any scheduler (cron, Airflow, systemd timers) can alert.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    project: ProjectArgs,
    /// Retries after a failed attempt.
    #[arg(long, default_value_t = 2)]
    retries: u32,
    /// Seconds before the first retry (doubled before each further one).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    retry_backoff: f64,
    /// Do not compact the fact and quarantine tables before building the
    /// models (by default small files of streaming ingest are packed first).
    #[arg(long)]
    no_compact: bool,
    /// Data tests read every partition. By default, after an incremental
    /// run, tests of tables with an event_date column read only the event
    /// dates the run recomputed (tables without one are read whole).
    #[arg(long)]
    full: bool,
}

/// Run the daily job on a timetable, in the foreground (Ctrl-C to stop).
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["at", "every"])))]
pub struct ScheduleArgs {
    #[command(flatten)]
    run: Args,
    /// Every day at HH:MM (UTC).
    #[arg(long, value_name = "HH:MM")]
    at: Option<String>,
    /// At this interval, starting now: 90s, 15m, 6h, 1d.
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
}

fn print_event(e: DailyEvent<'_>) {
    match e {
        DailyEvent::Attempt(n) => println!("attempt {n}:"),
        DailyEvent::Model(m) => print_model(m),
        DailyEvent::Compacted(r) => println!(
            "  compacted {}: {} -> {} files",
            r.table, r.files_before, r.files_after
        ),
        DailyEvent::TestScope(None) => println!("  tests over every partition"),
        DailyEvent::TestScope(Some(dates)) => println!(
            "  tests over the {} event date(s) this run recomputed{} (--full for all)",
            dates.len(),
            match (dates.first(), dates.last()) {
                (Some(a), Some(b)) if a != b => format!(", {a} .. {b}"),
                (Some(a), _) => format!(", {a}"),
                _ => String::new(),
            }
        ),
        DailyEvent::Test(t) => print_test(t),
        DailyEvent::Failed(why, Some(wait)) => {
            println!("  failed: {why}; retrying in {:.0}s", wait.as_secs_f64())
        }
        DailyEvent::Failed(why, None) => println!("  failed: {why}; no retries left"),
    }
}

async fn once(a: &Args) -> anyhow::Result<RunRecord> {
    let (lake, project, mut opts) = a.project.open()?;
    opts.compact = !a.no_compact;
    opts.full_tests = a.full;
    let policy = RetryPolicy {
        retries: a.retries,
        backoff: Duration::from_secs_f64(a.retry_backoff.max(0.0)),
    };
    println!("daily run of {} over {}", project.origin, a.project.lake);
    let (record, path) = daily_run(&lake, &project, &opts, policy, &mut print_event)
        .await
        .context("writing the run record")?;
    if !record.tests.is_empty() {
        print_test_summary(&record);
    }
    println!(
        "run {}: {} after {} attempt(s); marts {}; run record {path}",
        record.run_id,
        record.status,
        record.attempts,
        if record.published {
            "published"
        } else {
            "NOT published (readers keep the last good marts)"
        }
    );
    Ok(record)
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let record = once(&a).await?;
    if record.status != "success" {
        anyhow::bail!("daily run failed: {}", record.error.unwrap_or_default());
    }
    Ok(())
}

pub async fn schedule(a: ScheduleArgs) -> anyhow::Result<()> {
    let timetable: Timetable = match (&a.at, &a.every) {
        (Some(at), _) => parse_at(at)?,
        (None, Some(every)) => parse_every(every)?,
        (None, None) => anyhow::bail!("give --at HH:MM or --every DURATION"),
    };
    let mut first = true;
    loop {
        let wait = timetable.wait_from_now(first);
        first = false;
        if !wait.is_zero() {
            println!("next run in {:.0}s", wait.as_secs_f64());
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        // A failed run is reported and the schedule goes on.
        if let Err(e) = once(&a.run).await {
            eprintln!("error: {e:#}");
        }
    }
}
