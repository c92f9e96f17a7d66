//! The daily job: `txpipe run` (write-audit-publish, retries) and `txpipe schedule`.

use crate::helpers::*;
use crate::models::{fixture_lake, txn, write_dims, C1, M1};

fn run_records(t: &TestDir, command: &str) -> Vec<serde_json::Value> {
    let mut paths: Vec<_> = std::fs::read_dir(t.path("lake/_txpipe/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(&format!("-{command}-")))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn daily_run_publishes_only_when_error_tests_pass() {
    let t = TestDir::new();
    let lake = fixture_lake(&t);
    let out = run_ok(&["run", "--lake", &lake, "--retries", "0"]);
    assert!(
        out.contains("success after 1 attempt(s); marts published"),
        "{out}"
    );
    let mart = mart_file(&t.path("lake"), "daily_sales_summary").unwrap();
    let good = std::fs::read(&mart).unwrap();

    // New data with a bad payment method: the audit fails, the marts stay.
    let extra = t.path("extra.jsonl");
    std::fs::write(
        &extra,
        txn(
            9,
            "2026-11-02T12:00:00Z",
            C1,
            M1,
            "1.00",
            "USD",
            40.0,
            "cash",
            false,
        ) + "\n",
    )
    .unwrap();
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        extra.to_str().unwrap(),
        "--quiet",
    ]);
    let out = txpipe()
        .args([
            "run",
            "--lake",
            &lake,
            "--retries",
            "1",
            "--retry-backoff",
            "0",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL  accepted_values_fact_transaction_payment_method"),
        "{stdout}"
    );
    assert!(stdout.contains("NOT published"), "{stdout}");
    assert_eq!(
        std::fs::read(&mart).unwrap(),
        good,
        "readers keep the last good mart"
    );
    let records = run_records(&t, "run");
    let last = records.last().unwrap();
    assert_eq!(last["status"], "error");
    assert_eq!(last["published"], false);
    assert_eq!(last["attempts"], 2);
    assert!(last["error"]
        .as_str()
        .unwrap()
        .contains("accepted_values_fact_transaction_payment_method"));
    // Nothing staged is left behind.
    let staged = t.path("lake/_txpipe/staging/marts");
    assert!(
        !staged.exists()
            || std::fs::read_dir(&staged)
                .unwrap()
                .all(|d| std::fs::read_dir(d.unwrap().path())
                    .unwrap()
                    .next()
                    .is_none())
    );
}

#[test]
fn a_transient_failure_succeeds_on_retry() {
    let t = TestDir::new();
    // Facts landed but the dimensions not seeded yet: the first attempt fails.
    let input = t.path("in.jsonl");
    std::fs::write(
        &input,
        txn(
            1,
            "2026-11-01T10:00:00Z",
            C1,
            M1,
            "5.00",
            "USD",
            40.0,
            "credit_card",
            false,
        ) + "\n",
    )
    .unwrap();
    let lake = t.str("lake");
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        input.to_str().unwrap(),
        "--quiet",
    ]);
    write_dims(&t.path("dims"));
    let child = txpipe()
        .args([
            "run",
            "--lake",
            &lake,
            "--retries",
            "4",
            "--retry-backoff",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("dims")]);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("seed check") && stdout.contains("retrying in 1s"),
        "{stdout}"
    );
    let record = run_records(&t, "run").pop().unwrap();
    assert_eq!(record["status"], "success");
    assert!(record["attempts"].as_u64().unwrap() >= 2);
    assert!(mart_file(&t.path("lake"), "customer_kpis").is_some());
}

#[test]
fn schedule_every_runs_the_job_repeatedly_until_stopped() {
    let t = TestDir::new();
    let lake = fixture_lake(&t);
    let mut child = txpipe()
        .args([
            "schedule",
            "--lake",
            &lake,
            "--every",
            "1s",
            "--retries",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while run_records_count(&t) < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let records = run_records(&t, "run");
    assert!(
        records.len() >= 2,
        "two scheduled runs, got {}",
        records.len()
    );
    assert!(records.iter().all(|r| r["status"] == "success"));
    // A bad timetable is a usage error.
    let out = txpipe()
        .args(["schedule", "--lake", &lake, "--every", "soon"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an interval"));
}

fn run_records_count(t: &TestDir) -> usize {
    std::fs::read_dir(t.path("lake/_txpipe/runs")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().contains("-run-"))
                .unwrap_or(false)
        })
        .count()
    })
}
