//! The daily job: seed check → models → tests → publish, write-audit-publish
//! with retries. What Airflow ran around dbt, as one call.

use std::time::Duration;

use chrono::Utc;

use super::project::Project;
use super::run_record::RunRecord;
use super::runner::{build_models, ModelResult, ModelStatus, RunOptions};
use super::tester::{narrowed_context, run_tests, select_tests, tests_passed, TestResult};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::{DIM_CUSTOMER, DIM_MERCHANT, FACT_TABLE, FX_RATE};

/// Retry policy of [`daily_run`].
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub retries: u32,
    /// Wait before the first retry; doubled before each further one.
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 2,
            backoff: Duration::from_secs(30),
        }
    }
}

/// What happens during a run, for progress output.
#[derive(Debug)]
pub enum DailyEvent<'a> {
    /// An attempt starts (1-based).
    Attempt(u32),
    /// A model finished.
    Model(&'a ModelResult),
    /// The tests start: over these event dates only (the ones the run
    /// recomputed), or over everything (`None`).
    TestScope(Option<&'a [String]>),
    /// A test finished.
    Test(&'a TestResult),
    /// The fact or quarantine table was compacted before the models.
    Compacted(&'a crate::maintain::CompactReport),
    /// The attempt failed; the next starts after this wait (None: no more).
    Failed(&'a str, Option<Duration>),
}

/// Checks the lake has a fact table and the seeded dimensions.
async fn seed_check(lake: &Lake) -> Result<()> {
    let mut missing = Vec::new();
    for t in [FACT_TABLE, DIM_CUSTOMER, DIM_MERCHANT, FX_RATE] {
        if lake.list(t).await?.is_empty() {
            missing.push(t);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Project(format!(
            "seed check: the lake has no {} (run `txpipe seed` / `txpipe ingest` first)",
            missing.join(", ")
        )))
    }
}

/// One attempt: returns the models, the tests and whether it published.
async fn attempt(
    lake: &Lake,
    project: &Project,
    opts: &RunOptions,
    on_event: &mut (dyn FnMut(DailyEvent<'_>) + Send),
    models: &mut Vec<ModelResult>,
    tests: &mut Vec<TestResult>,
    scope: &mut Option<Vec<String>>,
) -> Result<()> {
    seed_check(lake).await?;
    if opts.compact {
        let reports =
            crate::maintain::compact(lake, &crate::maintain::CompactOptions::default()).await?;
        for r in reports.iter().filter(|r| r.files_removed > 0) {
            on_event(DailyEvent::Compacted(r));
        }
    }
    let mut run =
        build_models(lake, project, opts, &mut |m| on_event(DailyEvent::Model(m))).await?;
    *models = run.results.clone();
    if let Some(bad) = run
        .results
        .iter()
        .find(|m| m.status != ModelStatus::Ok)
        .cloned()
    {
        run.discard(lake).await?;
        return Err(Error::Model {
            model: bad.name,
            message: bad.error.unwrap_or_default(),
        });
    }
    // Audit: the tests read this run's staged results (in memory), not the
    // published marts.
    let selected_models: Vec<&str> = run.results.iter().map(|m| m.name.as_str()).collect();
    let all = select_tests(project, &[])?;
    let chosen: Vec<_> = if opts.select.is_empty() {
        all
    } else {
        all.into_iter()
            .filter(|t| {
                t.reads
                    .iter()
                    .any(|r| selected_models.contains(&r.as_str()))
            })
            .collect()
    };
    let none = std::collections::BTreeSet::new();
    // By default the tests read only the event dates this run recomputed;
    // everything with --full, or when a model was rebuilt in full.
    let narrowed = match run.touched_dates() {
        Some(dates) if !opts.full_tests => {
            *scope = Some(dates.iter().cloned().collect());
            Some(narrowed_context(run.context(), dates).await?)
        }
        _ => {
            *scope = None;
            None
        }
    };
    on_event(DailyEvent::TestScope(scope.as_deref()));
    *tests = run_tests(
        narrowed.as_ref().unwrap_or(run.context()),
        &chosen,
        &none,
        &mut |t| on_event(DailyEvent::Test(t)),
    )
    .await;
    // Source freshness is reported, not an audit of the marts: a stale source
    // does not make them wrong and a retry cannot make it fresh (`txpipe test`
    // exits non-zero on it, like `dbt source freshness`).
    let audited: Vec<&TestResult> = tests
        .iter()
        .zip(&chosen)
        .filter(|(_, t)| t.freshness.is_none())
        .map(|(r, _)| r)
        .collect();
    if audited
        .iter()
        .any(|r| !tests_passed(std::slice::from_ref(*r)))
    {
        run.discard(lake).await?;
        let failed: Vec<&str> = audited
            .iter()
            .filter(|t| !tests_passed(std::slice::from_ref(**t)))
            .map(|t| t.name.as_str())
            .collect();
        return Err(Error::Project(format!(
            "error-severity tests failed: {}; marts not published",
            failed.join(", ")
        )));
    }
    run.publish(lake).await?;
    Ok(())
}

/// Runs seed check → models → tests, publishing the marts only when every
/// model built and no error-severity test failed (write-audit-publish:
/// readers keep the last good marts otherwise). A failed attempt is retried
/// with exponential backoff. Always writes a run record; returns it and its
/// path, with `status` `success` or `error`.
///
/// # Errors
/// Only when the run record cannot be written; failures of the job itself are
/// in the record.
pub async fn daily_run(
    lake: &Lake,
    project: &Project,
    opts: &RunOptions,
    policy: RetryPolicy,
    on_event: &mut (dyn FnMut(DailyEvent<'_>) + Send),
) -> Result<(RunRecord, String)> {
    let started_at = Utc::now();
    let mut models = Vec::new();
    let mut tests = Vec::new();
    let mut scope = None;
    let mut attempts = 0;
    let mut last_error: Option<String>;
    let mut wait = policy.backoff;
    loop {
        attempts += 1;
        on_event(DailyEvent::Attempt(attempts));
        match attempt(
            lake,
            project,
            opts,
            on_event,
            &mut models,
            &mut tests,
            &mut scope,
        )
        .await
        {
            Ok(()) => {
                last_error = None;
                break;
            }
            Err(e) => {
                let msg = e.to_string();
                let more = attempts <= policy.retries;
                on_event(DailyEvent::Failed(&msg, more.then_some(wait)));
                last_error = Some(msg);
                if !more {
                    break;
                }
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
    }
    let ok = last_error.is_none();
    let record = RunRecord {
        published: ok,
        attempts,
        models,
        tests,
        test_dates: scope,
        error: last_error,
        ..RunRecord::finished("run", &project.origin, started_at, ok)
    };
    let path = record.write(lake).await?;
    Ok((record, path))
}
