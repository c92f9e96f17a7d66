//! Runs data tests: each query's failing rows are counted, a few are kept.

use std::time::Instant;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use super::datatest::{DataTest, Severity};
use super::freshness::{human_age, Freshness, Staleness};
use super::project::Project;
use crate::error::{Error, Result};
use crate::schema::EVENT_DATE;

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
    /// Freshness checks: seconds since the newest loaded value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
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
            age_seconds: None,
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
        if let Some(f) = t.freshness {
            judge_freshness(ctx, t, f, &mut r).await;
        } else {
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
        }
        r.duration_ms = started.elapsed().as_millis() as u64;
        progress(&r);
        out.push(r);
    }
    out
}

/// Runs a freshness check into `r`: pass, warn or fail by its thresholds.
async fn judge_freshness(ctx: &SessionContext, t: &DataTest, f: Freshness, r: &mut TestResult) {
    let (age, newest) = match freshness(ctx, &t.sql).await {
        Ok(found) => found,
        Err(e) => {
            r.status = TestStatus::Error;
            r.error = Some(e.to_string());
            return;
        }
    };
    let verdict = f.judge(age);
    r.status = match verdict {
        Staleness::Fresh => TestStatus::Pass,
        Staleness::Warn => TestStatus::Warn,
        Staleness::Error => TestStatus::Fail,
    };
    r.failures = u64::from(verdict != Staleness::Fresh);
    let limit = |l: Option<u64>| l.map_or("never".into(), |s| human_age(s as i64));
    r.sample = Some(match (age, newest) {
        (Some(a), Some(n)) => format!(
            "newest {n}, {} old (warn after {}, error after {})",
            human_age(a),
            limit(f.warn_after),
            limit(f.error_after)
        ),
        _ => "no rows: the source was never loaded".to_string(),
    });
    r.age_seconds = age;
}

/// A freshness query's `age_seconds` and `newest` (both `None` on an empty table).
async fn freshness(ctx: &SessionContext, sql: &str) -> Result<(Option<i64>, Option<String>)> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Int64Type};
    let batches = ctx.sql(sql).await?.collect().await?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok((None, None));
    };
    let age = cast(b.column(0), &DataType::Int64)?;
    let age = age.as_primitive::<Int64Type>();
    let newest = cast(b.column(1), &DataType::Utf8)?;
    let newest = newest.as_string::<i32>();
    Ok((
        (!age.is_null(0)).then(|| age.value(0)),
        (!newest.is_null(0)).then(|| newest.value(0).to_string()),
    ))
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

/// A session over the same tables as `ctx` (lake tables, views and this
/// run's models), where every table with an `event_date` column holds only
/// the rows of `dates`: the daily job's tests then read only the partitions
/// the run recomputed (the filter reaches the Parquet scans and prunes).
/// Tables without the column are read whole.
///
/// # Errors
/// A table could not be read or registered.
pub async fn narrowed_context(
    ctx: &SessionContext,
    dates: &std::collections::BTreeSet<String>,
) -> Result<SessionContext> {
    let config = ctx.copied_config();
    let opts = config.options();
    let (catalog, schema) = (
        opts.catalog.default_catalog.clone(),
        opts.catalog.default_schema.clone(),
    );
    let out = SessionContext::new_with_config_rt(config.clone(), ctx.runtime_env());
    super::functions::register(&out);
    let names = ctx
        .catalog(&catalog)
        .and_then(|c| c.schema(&schema))
        .map(|s| s.table_names())
        .unwrap_or_default();
    let filter = super::incremental_build::date_filter(dates, false);
    for name in names {
        let Some(provider) = ctx.table_provider(name.as_str()).await.ok() else {
            continue;
        };
        if provider.schema().field_with_name(EVENT_DATE).is_ok() {
            let df = ctx.read_table(provider)?;
            let predicate = df.parse_sql_expr(&filter)?;
            out.register_table(name.as_str(), df.filter(predicate)?.into_view())?;
        } else {
            out.register_table(name.as_str(), provider)?;
        }
    }
    Ok(out)
}

/// True when no error-severity test failed or errored.
pub fn tests_passed(results: &[TestResult]) -> bool {
    !results
        .iter()
        .any(|r| matches!(r.status, TestStatus::Fail | TestStatus::Error))
}
