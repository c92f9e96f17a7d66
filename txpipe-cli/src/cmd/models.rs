//! `txpipe models run` and `txpipe test`.

use std::path::PathBuf;

use anyhow::Context;
use txpipe_core::lake::Lake;
use txpipe_core::models::{
    self, ModelResult, ModelStatus, Project, RunOptions, RunRecord, TestResult, TestStatus,
};

/// Where the models come from and which rules `rule_hits()` lists.
#[derive(clap::Args, Debug, Clone)]
pub struct ProjectArgs {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    pub lake: String,
    /// A project folder with models/*.sql, tests.toml and tests/*.sql
    /// [default: the project built into txpipe (the repository's sql/ folder)].
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Fraud rules file whose rule names `rule_hits()` expands to
    /// [default: PROJECT/rules.toml, else sql/rules.toml, else the built-in rules].
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Only these models (for `models run`) or tests / tested tables (for `test`); repeatable.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    select: Vec<String>,
    /// `models run` and `run`: rebuild incremental models from the whole fact
    /// table instead of only the event dates its new commits touched (dbt's
    /// --full-refresh). The result is the same, row for row.
    #[arg(long)]
    full_refresh: bool,
}

/// Build SQL models over the lake into Parquet marts, in dependency order.
///
/// Each model is one SELECT in PROJECT/models/NAME.sql; it reads lake tables by
/// name and other models through {{ ref('name') }}. Table models land at
/// LAKE/marts/NAME/NAME.parquet, replaced atomically; views are not written.
/// A failing model is reported and its dependents skipped; the exit code is
/// non-zero. A run record is written to LAKE/_txpipe/runs/.
#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    /// Build the models (all, or --select NAME… reading the rest as published).
    Run(ProjectArgs),
    /// List the models in dependency order.
    List(ProjectArgs),
}

/// Run the data tests (tests.toml and tests/*.sql) over the lake and the marts.
///
/// Prints PASS / WARN / FAIL / ERROR per test with the number of failing rows and
/// a few of them; exits non-zero when an error-severity test fails. A run record
/// is written to LAKE/_txpipe/runs/.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    #[command(flatten)]
    project: ProjectArgs,
}

impl ProjectArgs {
    pub fn open(&self) -> anyhow::Result<(Lake, Project, RunOptions)> {
        let lake = Lake::open(&self.lake).with_context(|| format!("opening lake {}", self.lake))?;
        let project = match &self.project {
            Some(dir) => {
                Project::load(dir).with_context(|| format!("loading project {}", dir.display()))?
            }
            None => Project::builtin()?,
        };
        let rules_file = self.rules.clone().or_else(|| {
            self.project
                .as_ref()
                .map(|d| d.join("rules.toml"))
                .filter(|p| p.exists())
        });
        let (rules, _) = super::ingest::load_rules(rules_file.as_ref())?;
        let opts = RunOptions {
            select: self.select.clone(),
            rules: rules.names().into_iter().map(String::from).collect(),
            partitions: None,
            compact: false,
            full_refresh: self.full_refresh,
            full_tests: false,
        };
        Ok((lake, project, opts))
    }
}

pub fn print_model(r: &ModelResult) {
    let what = match (r.status, r.rows) {
        (ModelStatus::Ok, Some(rows)) => format!("{rows} rows"),
        (ModelStatus::Ok, None) => "view".to_string(),
        (_, _) => r.error.clone().unwrap_or_default(),
    };
    let status = match r.status {
        ModelStatus::Ok => "OK",
        ModelStatus::Error => "ERROR",
        ModelStatus::Skipped => "SKIP",
    };
    println!(
        "  {status:<5} {:<24} {what:<24} {:>7.2}s",
        r.name,
        r.duration_ms as f64 / 1000.0
    );
    if let Some(i) = &r.incremental {
        match i.mode {
            "incremental" => println!(
                "        incremental: {} date(s) recomputed{} ({} commit(s))",
                i.partitions.len(),
                match i.partitions.as_slice() {
                    [] => String::new(),
                    [one] => format!(": {one}"),
                    [first, .., last] => format!(": {first} … {last}"),
                },
                i.commits.len()
            ),
            _ => println!("        full build: {}", i.reason),
        }
    }
}

pub fn print_test(r: &TestResult) {
    let status = match r.status {
        TestStatus::Pass => "PASS",
        TestStatus::Warn => "WARN",
        TestStatus::Fail => "FAIL",
        TestStatus::Error => "ERROR",
    };
    let detail = match r.status {
        TestStatus::Pass => String::new(),
        TestStatus::Error => r.error.clone().unwrap_or_default(),
        _ => format!("{} failing rows", r.failures),
    };
    println!(
        "  {status:<5} {:<58} {detail} ({:.2}s)",
        r.name,
        r.duration_ms as f64 / 1000.0
    );
    if let Some(sample) = &r.sample {
        for line in sample.lines() {
            println!("        {line}");
        }
    }
}

pub fn print_test_summary(record: &RunRecord) {
    let count = |s: TestStatus| record.tests.iter().filter(|t| t.status == s).count();
    println!(
        "tests: {} PASS, {} WARN, {} FAIL, {} ERROR of {}",
        count(TestStatus::Pass),
        count(TestStatus::Warn),
        count(TestStatus::Fail),
        count(TestStatus::Error),
        record.tests.len()
    );
}

pub async fn run(c: ModelsCommand) -> anyhow::Result<()> {
    match c {
        ModelsCommand::List(a) => {
            let (_, project, _) = a.open()?;
            for m in &project.models {
                let refs: Vec<&str> = m.refs.iter().map(String::as_str).collect();
                println!(
                    "{:<24} {:<6} reads {}",
                    m.name,
                    match m.materialized {
                        models::Materialized::Table => "table",
                        models::Materialized::View => "view",
                        models::Materialized::Incremental => "incremental",
                    },
                    if refs.is_empty() {
                        "lake tables".to_string()
                    } else {
                        refs.join(", ")
                    }
                );
            }
            Ok(())
        }
        ModelsCommand::Run(a) => {
            let (lake, project, opts) = a.open()?;
            println!("building models from {} into {}", project.origin, a.lake);
            let (record, path) = models::models_run(&lake, &project, &opts, &mut print_model)
                .await
                .with_context(|| format!("building models in {}", a.lake))?;
            let failed = record
                .models
                .iter()
                .filter(|m| m.status != ModelStatus::Ok)
                .count();
            println!(
                "models: {} built, {failed} failed or skipped; marts in {}/marts/; run record {path}",
                record.models.len() - failed,
                a.lake.trim_end_matches('/')
            );
            if failed > 0 {
                anyhow::bail!("{failed} models failed or were skipped");
            }
            Ok(())
        }
    }
}

pub async fn test(a: TestArgs) -> anyhow::Result<()> {
    let p = &a.project;
    let (lake, project, opts) = p.open()?;
    println!("testing {} with {}", p.lake, project.origin);
    let (record, path) = models::test_run(&lake, &project, &p.select, &opts, &mut print_test)
        .await
        .with_context(|| format!("testing {}", p.lake))?;
    print_test_summary(&record);
    println!("run record {path}");
    if record.status != "success" {
        anyhow::bail!("error-severity data tests failed");
    }
    Ok(())
}
