//! The commands' jobs: build + publish models, run tests, each with a run record.

use chrono::Utc;

use super::project::Project;
use super::run_record::RunRecord;
use super::runner::{build_models, lake_context, register_models, ModelResult, RunOptions};
use super::tester::{run_tests, select_tests, tests_passed, TestResult};
use crate::error::Result;
use crate::lake::Lake;

/// Builds the selected models, publishes those that built and writes a run
/// record (status `error` when any model failed or was skipped).
///
/// # Errors
/// A bad selection, an unbuilt upstream table, or a store failure.
pub async fn models_run(
    lake: &Lake,
    project: &Project,
    opts: &RunOptions,
    progress: &mut (dyn FnMut(&ModelResult) + Send),
) -> Result<(RunRecord, String)> {
    let started_at = Utc::now();
    let mut run = build_models(lake, project, opts, progress).await?;
    let ok = run.ok();
    run.publish(lake).await?;
    let record = RunRecord {
        run_id: run.run_id.clone(),
        published: true,
        models: run.results.clone(),
        ..RunRecord::finished("models run", &project.origin, started_at, ok)
    };
    let path = record.write(lake).await?;
    Ok((record, path))
}

/// Runs the selected tests against the lake and the published marts and
/// writes a run record (status `error` when an error-severity test failed).
///
/// # Errors
/// A bad selection, a view that does not plan, or a store failure.
pub async fn test_run(
    lake: &Lake,
    project: &Project,
    select: &[String],
    opts: &RunOptions,
    progress: &mut (dyn FnMut(&TestResult) + Send),
) -> Result<(RunRecord, String)> {
    let started_at = Utc::now();
    let tests = select_tests(project, select)?;
    let ctx = lake_context(lake, opts.partitions).await?;
    let unbuilt = register_models(&ctx, lake, project, &opts.rules).await?;
    let results = run_tests(&ctx, &tests, &unbuilt, progress).await;
    let ok = tests_passed(&results);
    let record = RunRecord {
        tests: results,
        ..RunRecord::finished("test", &project.origin, started_at, ok)
    };
    let path = record.write(lake).await?;
    Ok((record, path))
}
