//! SQL models and data tests over the lake: the dbt layer, built in.
//!
//! A project is a folder with `models/*.sql` (one SELECT per file, named after
//! the file), `tests.toml` (declared tests) and `tests/*.sql` (singular tests).
//! Models read lake tables by name (`fact_transaction`, `dim_customer`,
//! `dim_merchant`, `fx_rate`, `quarantine`) and other models through
//! `{{ ref('model') }}`, which is also how the dependency order is found.
//! `{{ config(materialized='view') }}` makes a model a view instead of a
//! Parquet mart. The workspace's `sql/` folder is built in as the default
//! project.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use txpipe_core::models::{build_models, run_tests, select_tests, Project, RunOptions};
//! let project = Project::builtin()?;
//! assert_eq!(project.models[0].name, "int_duplicate_hashes");
//! # Ok::<(), txpipe_core::Error>(())
//! # }).unwrap();
//! ```

pub mod daily;
pub mod datatest;
pub mod freshness;
pub mod functions;
pub mod graph;
pub mod incremental;
mod incremental_build;
pub mod jobs;
pub mod model;
pub mod project;
pub mod run_record;
pub mod runner;
pub mod schedule;
pub mod template;
pub mod tester;

pub use daily::{daily_run, DailyEvent, RetryPolicy};
pub use datatest::{DataTest, Severity};
pub use freshness::{Freshness, Staleness};
pub use jobs::{models_run, test_run};
pub use model::{Materialized, Model};
pub use project::Project;
pub use run_record::RunRecord;
pub use runner::{
    build_models, lake_context, register_models, IncrementalInfo, ModelResult, ModelStatus,
    ModelsRun, RunOptions, MARTS,
};
pub use tester::{run_tests, select_tests, tests_passed, TestResult, TestStatus};
