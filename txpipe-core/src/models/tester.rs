//! Runs data tests: each query's failing rows are counted, a few are kept.

use std::time::Instant;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::datatest::{DataTest, Severity};
use super::project::Project;
use crate::error::{Error, Result};

/// Failing rows shown per test.
pub const SAMPLE_ROWS: usize = 5;

/// Outcome of one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestStatus {
    /// No failing rows.
    Pass,
    /// Failing rows, severity warn.
    Warn,
    /// Failing rows, severity error.
    Fail,
    /// The query itself failed (missing table, bad SQL): counts as a failure.
    Error,
}

/// What one test found.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// Test name.
    pub name: String,
    /// The table or model tested.
    pub table: String,
    /// Declared severity.
    pub severity: Severity,
    /// Pass, warn, fail or error.
    pub status: TestStatus,
    /// Number of failing rows.
    pub failures: u64,
    /// The first failing rows, as a text table.
    pub sample: Option<String>,
    /// Why the query failed.
    pub error: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The compiled SQL.
    pub sql: String,
}

/// The tests `select` picks: by test name or by the table/model they test
/// (all when empty).
///
/// # Errors
/// A selector matches no test.
pub fn select_tests<'a>(project: &'a Project, select: &[String]) -> Result<Vec<&'a DataTest>> {
    if select.is_empty() {
        return Ok(project.tests.iter().collect());
    }
    for s in select {
        if !project.tests.iter().any(|t| &t.name == s || &t.table == s) {
            return Err(Error::Project(format!(
                "--select {s}: no test has that name or tests that table"
            )));
        }
    }
    Ok(project
        .tests
        .iter()
        .filter(|t| select.iter().any(|s| s == &t.name || s == &t.table))
        .collect())
}

/// Runs `tests` in `ctx` (lake tables and models registered); `progress` is
/// called after each. Tests reading a model in `unbuilt` are reported as
/// errors that say so, without running.
pub async fn run_tests(
    ctx: &SessionContext,
    tests: &[&DataTest],
    unbuilt: &std::collections::BTreeSet<String>,
    progress: &mut (dyn FnMut(&TestResult) + Send),
) -> Vec<TestResult> {
    let mut out = Vec::with_capacity(tests.len());
    for t in tests {
        let started = Instant::now();
        let mut r = TestResult {
            name: t.name.clone(),
            table: t.table.clone(),
            severity: t.severity,
            status: TestStatus::Pass,
            failures: 0,
            sample: None,
            error: None,
            duration_ms: 0,
            sql: t.sql.clone(),
        };
        if let Some(m) = t.reads.iter().find(|r| unbuilt.contains(*r)) {
            r.status = TestStatus::Error;
            r.error = Some(format!(
                "model {m} has not been built yet (run `txpipe models run`)"
            ));
            r.duration_ms = started.elapsed().as_millis() as u64;
            progress(&r);
            out.push(r);
            continue;
        }
        match failing_rows(ctx, &t.sql).await {
            Ok((0, _)) => {}
            Ok((n, sample)) => {
                r.failures = n;
                r.sample = Some(sample);
                r.status = match t.severity {
                    Severity::Error => TestStatus::Fail,
                    Severity::Warn => TestStatus::Warn,
                };
            }
            Err(e) => {
                r.status = TestStatus::Error;
                r.error = Some(e.to_string());
            }
        }
        r.duration_ms = started.elapsed().as_millis() as u64;
        progress(&r);
        out.push(r);
    }
    out
}

/// Counts the rows of `sql` and formats the first few.
async fn failing_rows(ctx: &SessionContext, sql: &str) -> Result<(u64, String)> {
    let df = ctx.sql(sql).await?;
    let n = df.clone().count().await? as u64;
    if n == 0 {
        return Ok((0, String::new()));
    }
    let sample = df.limit(0, Some(SAMPLE_ROWS))?.collect().await?;
    let text = pretty_format_batches(&sample)?.to_string();
    Ok((n, text))
}

/// True when no error-severity test failed or errored.
pub fn tests_passed(results: &[TestResult]) -> bool {
    !results
        .iter()
        .any(|r| matches!(r.status, TestStatus::Fail | TestStatus::Error))
}
