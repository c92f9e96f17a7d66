//! Machine-readable run records at `LAKE/_txpipe/runs/<time>-<command>-<id>.json`.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::runner::ModelResult;
use super::tester::TestResult;
use crate::error::Result;
use crate::lake::Lake;

/// Folder of the run records.
pub const RUNS: &str = "_txpipe/runs";

/// What one `models run`, `test` or `run` did.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// `models run`, `test` or `run`.
    pub command: String,
    /// Where the models came from.
    pub project: String,
    /// Start time (UTC, RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub started_at: DateTime<Utc>,
    /// End time (UTC, RFC 3339).
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
    /// `success` or `error`.
    pub status: String,
    /// Whether this run's marts were published.
    pub published: bool,
    /// Attempts made (for `txpipe run` with retries).
    pub attempts: u32,
    /// Per model.
    pub models: Vec<ModelResult>,
    /// Per test.
    pub tests: Vec<TestResult>,
    /// `txpipe run`: the event dates the tests read (the ones the run
    /// recomputed); absent when they read everything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_dates: Option<Vec<String>>,
    /// A failure that stopped the run, if any.
    pub error: Option<String>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl RunRecord {
    /// A record of `command` that started at `started_at` and ends now, with
    /// status from `ok`, one attempt, nothing published and no results yet.
    pub fn finished(command: &str, project: &str, started_at: DateTime<Utc>, ok: bool) -> Self {
        RunRecord {
            run_id: uuid::Uuid::new_v4().simple().to_string(),
            command: command.into(),
            project: project.into(),
            started_at,
            finished_at: Utc::now(),
            status: if ok { "success" } else { "error" }.into(),
            published: false,
            attempts: 1,
            models: Vec::new(),
            tests: Vec::new(),
            test_dates: None,
            error: None,
        }
    }

    /// Writes the record; returns its path relative to the lake.
    ///
    /// # Errors
    /// The store failed.
    pub async fn write(&self, lake: &Lake) -> Result<String> {
        let command = self.command.replace(' ', "-");
        let id: String = self.run_id.chars().take(8).collect();
        let path = format!(
            "{RUNS}/{}-{command}-{id}.json",
            self.started_at.format("%Y%m%dT%H%M%S%.3fZ")
        );
        let json = serde_json::to_vec_pretty(self)?;
        lake.put(&path, Bytes::from(json)).await?;
        Ok(path)
    }
}
