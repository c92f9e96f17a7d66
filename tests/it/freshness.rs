//! Source freshness checks (dbt's `sources: freshness:`): `txpipe test`,
//! the daily job and `txpipe serve`'s /metrics.

use crate::helpers::*;
use crate::models::fixture_lake;

/// Source freshness (dbt's `warn_after` / `error_after`): the fixture's
/// transactions are from November 2026, landed just now. The built-in check on
/// `ingested_at` passes; one on `transaction_ts` warns (exit 0) or fails (exit
/// non-zero) by its thresholds; the age is in the run record and on
/// `txpipe serve`'s /metrics as `txpipe_source_freshness_seconds`.
#[tokio::test(flavor = "multi_thread")]
async fn source_freshness_passes_warns_and_fails_by_its_thresholds() {
    let t = TestDir::new();
    let lake = fixture_lake(&t);
    let check = |name: &str, after: &str| -> (bool, String) {
        let dir = t.path(name);
        project_with_sources(
            &dir,
            &format!(
                "\n[[source]]\ntable = \"fact_transaction\"\nloaded_at_field = \"transaction_ts\"\n{after}\n"
            ),
        );
        let out = txpipe()
            .args(["test", "--lake", &lake, "--project", dir.to_str().unwrap()])
            .args(["--select", "fact_transaction"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, stdout) = check(
        "warn",
        "warn_after = { count = 1, period = \"minute\" }\nerror_after = { count = 36500, period = \"day\" }",
    );
    assert!(ok, "a warning does not fail the tests:\n{stdout}");
    assert!(
        stdout.contains("WARN  source_freshness_fact_transaction_transaction_ts"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PASS  source_freshness_fact_transaction_ingested_at"),
        "the built-in check on ingested_at passes right after the ingest:\n{stdout}"
    );
    assert!(
        stdout.contains("newest 2026-11-02") && stdout.contains("warn after 1m 0s"),
        "the newest value, its age and the thresholds are shown:\n{stdout}"
    );
    let (ok, stdout) = check("error", "error_after = { count = 1, period = \"day\" }");
    assert!(!ok, "past error_after the tests fail:\n{stdout}");
    assert!(
        stdout.contains("FAIL  source_freshness_fact_transaction_transaction_ts"),
        "{stdout}"
    );
    let record = std::fs::read_dir(t.path("lake/_txpipe/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("-test-"))
        .max()
        .unwrap();
    // The daily job reports a stale source but still publishes: the marts are
    // not wrong, and a retry cannot make the source fresh.
    let dir = t.str("error");
    let daily = run_ok(&["run", "--lake", &lake, "--project", &dir]);
    assert!(
        daily.contains("FAIL  source_freshness_fact_transaction_transaction_ts")
            && daily.contains("marts published"),
        "{daily}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    let fresh = record["tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "source_freshness_fact_transaction_transaction_ts")
        .unwrap()
        .clone();
    assert_eq!(fresh["status"], "fail");
    assert!(fresh["age_seconds"].as_i64().unwrap() > 86_400, "{fresh}");
    let bad = t.path("bad");
    project_with_sources(
        &bad,
        "\n[[source]]\ntable = \"fact_transaction\"\nloaded_at_field = \"ingested_at\"\nwarn_after = { count = 1, period = \"week\" }\n",
    );
    let out = txpipe()
        .args(["test", "--lake", &lake, "--project", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("period 'week'"),
        "{stderr}"
    );
    // /metrics of `txpipe serve`: the age of both fields.
    let server = serve(&lake, &[]);
    let (code, text) = http_get(&server.addr, "/metrics");
    assert_eq!(code, 200);
    let age = |field: &str| -> f64 {
        let prefix = format!(
            "txpipe_source_freshness_seconds{{table=\"fact_transaction\",field=\"{field}\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert!(age("ingested_at") < 600.0, "landed minutes ago");
    assert!(age("transaction_ts") > 86_400.0, "November's transactions");
}
