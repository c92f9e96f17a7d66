//! `/metrics` of `txpipe serve`: the lake's totals from its Delta log, per-table
//! files/bytes/version, the
//! consumer lag, and the newest run's model and test outcomes.

use super::lake_stats::{LakeStats, TableStats};
use crate::metrics::PromText;

/// Renders the lake metrics as Prometheus text.
pub fn render_lake_metrics(s: &LakeStats, last_run: Option<&serde_json::Value>) -> String {
    let mut t = PromText::default();
    let c = &s.counts;
    t.single(
        "txpipe_lake_rows_consumed_total",
        "counter",
        "Messages committed to the lake (landed + quarantined), all streams.",
        c.rows_in as f64,
    );
    t.single(
        "txpipe_lake_rows_landed_total",
        "counter",
        "Rows in the fact table.",
        c.landed as f64,
    );
    t.single(
        "txpipe_lake_rows_quarantined_total",
        "counter",
        "Records in the quarantine table.",
        c.quarantined as f64,
    );
    t.single(
        "txpipe_lake_fraud_rows_total",
        "counter",
        "Fact rows flagged by at least one rule.",
        c.fraud as f64,
    );
    t.family(
        "txpipe_lake_fraud_flagged_total",
        "counter",
        "Fact rows each fraud rule flagged.",
    );
    for (rule, n) in &c.flagged {
        t.sample(
            "txpipe_lake_fraud_flagged_total",
            &[("rule", rule)],
            *n as f64,
        );
    }
    t.single(
        "txpipe_lake_commits_total",
        "counter",
        "Micro-batches committed.",
        s.commits as f64,
    );
    t.single(
        "txpipe_lake_files_written_total",
        "counter",
        "Parquet files published by ingest.",
        s.files as f64,
    );
    t.single(
        "txpipe_lake_bytes_written_total",
        "counter",
        "Parquet bytes published by ingest.",
        s.bytes as f64,
    );
    t.single(
        "txpipe_lake_ingest_rows_per_second",
        "gauge",
        "Rows committed per second over the last minute.",
        s.rows_per_sec_1m,
    );
    if let Some(ms) = s
        .last_commit_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        t.single(
            "txpipe_lake_last_commit_timestamp_seconds",
            "gauge",
            "Time of the newest commit.",
            ms.timestamp_millis() as f64 / 1000.0,
        );
    }
    let per_table: [(&str, &str, fn(&TableStats) -> f64); 4] = [
        (
            "txpipe_table_files",
            "Data files in the table's current Delta snapshot.",
            |t| t.files as f64,
        ),
        (
            "txpipe_table_bytes",
            "Bytes of the data files in the table's current Delta snapshot.",
            |t| t.bytes as f64,
        ),
        (
            "txpipe_table_version",
            "Newest Delta version of the table.",
            |t| t.version as f64,
        ),
        (
            "txpipe_table_last_commit_timestamp_seconds",
            "Time of the table's newest Delta commit.",
            |t| t.last_commit_ms.unwrap_or(0) as f64 / 1000.0,
        ),
    ];
    for (name, help, value) in per_table {
        t.family(name, "gauge", help);
        for (table, ts) in &s.tables {
            t.sample(name, &[("table", table)], value(ts));
        }
    }
    if !s.newest.is_empty() {
        t.family(
            "txpipe_source_freshness_seconds",
            "gauge",
            "Age of the newest value of the fact table's ingested_at and transaction_ts (dbt's source freshness; warn_after/error_after are checked by `txpipe test`).",
        );
        let now = chrono::Utc::now().timestamp_millis();
        for (field, ms) in &s.newest {
            t.sample(
                "txpipe_source_freshness_seconds",
                &[("table", crate::schema::FACT_TABLE), ("field", field)],
                (now - ms).max(0) as f64 / 1000.0,
            );
        }
    }
    if let Some(h) = &s.batch_latency {
        t.histogram(
            "txpipe_lake_batch_latency_seconds",
            "Time from a batch's first message to its lake commit, per commit.",
            h,
        );
    }
    if let Some(lag) = &s.lag {
        t.family(
            "txpipe_consumer_lag",
            "gauge",
            "Kafka messages not yet in the lake per partition.",
        );
        for (p, l) in lag {
            t.sample(
                "txpipe_consumer_lag",
                &[("partition", &p.to_string())],
                *l as f64,
            );
        }
    }
    if let Some(run) = last_run {
        let ok = run["status"] == "success";
        t.single(
            "txpipe_run_success",
            "gauge",
            "1 when the newest models/test run succeeded.",
            if ok { 1.0 } else { 0.0 },
        );
        t.family(
            "txpipe_model_duration_seconds",
            "gauge",
            "Duration of each model in the newest run.",
        );
        for m in run["models"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            t.sample(
                "txpipe_model_duration_seconds",
                &[("model", name)],
                m["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            );
        }
        t.family(
            "txpipe_model_failed",
            "gauge",
            "1 when a model failed or was skipped in the newest run.",
        );
        for m in run["models"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            t.sample(
                "txpipe_model_failed",
                &[("model", name)],
                if m["status"] == "ok" { 0.0 } else { 1.0 },
            );
        }
        t.family(
            "txpipe_test_duration_seconds",
            "gauge",
            "Duration of each data test in the newest run.",
        );
        for x in run["tests"].as_array().into_iter().flatten() {
            let name = x["name"].as_str().unwrap_or_default();
            t.sample(
                "txpipe_test_duration_seconds",
                &[("test", name)],
                x["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0,
            );
        }
        t.family(
            "txpipe_test_failures",
            "gauge",
            "Failing rows of each data test in the newest run.",
        );
        for x in run["tests"].as_array().into_iter().flatten() {
            let name = x["name"].as_str().unwrap_or_default();
            let status = x["status"].as_str().unwrap_or_default();
            t.sample(
                "txpipe_test_failures",
                &[("test", name), ("status", status)],
                x["failures"].as_f64().unwrap_or(0.0),
            );
        }
    }
    t.finish()
}
