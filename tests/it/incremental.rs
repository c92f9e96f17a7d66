//! Incremental models: after new days, late rows for old days, a producer
//! retry arriving a day later and a compaction in between, the incremental
//! marts equal a `--full-refresh` rebuild row for row (money to the cent), and
//! each run's record names the dates it recomputed and the commits that
//! touched them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::external_readers::{delta_counts, expected_rows};
use crate::helpers::*;
use crate::models::{mart, txn, write_dims, C1, C2, M1, M2};

/// The incremental marts of the built-in project (the others: [`MARTS`]).
const INCREMENTAL: &[&str] = &[
    "int_duplicate_hashes",
    "duplicate_transactions",
    "int_merchant_daily",
    "int_customer_daily",
];

/// All rows of every mart, sorted, as text.
async fn snapshot(lake: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for m in INCREMENTAL.iter().chain(MARTS) {
        let mut rows = mart(lake, m, "SELECT * FROM m").await;
        rows.sort();
        out.push((m.to_string(), rows));
    }
    out
}

fn ingest(t: &TestDir, lake: &str, name: &str, lines: &[String]) {
    let file = t.path(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    run_ok(&[
        "ingest",
        "--lake",
        lake,
        "--from-file",
        file.to_str().unwrap(),
        "--rules",
        &stateless_rules(),
        "--quiet",
    ]);
}

/// The newest run record whose file name contains `kind` (`-models-run-`, `-run-`).
fn newest_record(lake: &str, kind: &str) -> serde_json::Value {
    let newest = std::fs::read_dir(Path::new(lake).join("_txpipe/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains(kind))
        .max()
        .unwrap();
    serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap()
}

/// `models run` (plus `extra`); returns the run record's entry of each
/// incremental model: (mode, partitions, commits).
fn models_run(lake: &str, extra: &[&str]) -> Vec<(String, String, Vec<String>, usize)> {
    let mut args = vec!["models", "run", "--lake", lake];
    args.extend(extra);
    let out = run_ok(&args);
    let record = newest_record(lake, "-models-run-");
    let mut models = Vec::new();
    for m in record["models"].as_array().unwrap() {
        let Some(i) = m.get("incremental") else {
            continue;
        };
        models.push((
            m["name"].as_str().unwrap().to_string(),
            i["mode"].as_str().unwrap().to_string(),
            i["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect(),
            i["commits"].as_array().unwrap().len(),
        ));
    }
    assert!(
        !models.is_empty(),
        "no incremental model in the record:\n{out}"
    );
    models
}

/// `models run`: every incremental model recomputed exactly `dates`, touched
/// by `commits` commits.
fn assert_recomputed(lake: &str, dates: &[&str], commits: usize) {
    for (name, mode, got, n) in models_run(lake, &[]) {
        assert_eq!(mode, "incremental", "{name}");
        assert_eq!(got, dates, "{name}");
        assert_eq!(n, commits, "{name}");
    }
}

/// The Parquet files of each `event_date=` partition of a mart.
fn partition_files(lake: &str, model: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in mart_files(Path::new(lake), model) {
        let day = f.parent().unwrap().file_name().unwrap().to_string_lossy();
        let day = day
            .strip_prefix("event_date=")
            .expect("partitioned")
            .to_string();
        out.entry(day)
            .or_default()
            .push(f.file_name().unwrap().to_string_lossy().into_owned());
    }
    out
}

/// `txpipe run` (plus `extra`): its output and the event dates its tests read.
fn daily_run(lake: &str, extra: &[&str]) -> (String, Option<Vec<String>>) {
    let mut args = vec!["run", "--lake", lake, "--retries", "0", "--no-compact"];
    args.extend(extra);
    let out = run_ok(&args);
    let record = newest_record(lake, "-run-");
    assert_eq!(record["status"], "success", "{out}");
    let dates = record.get("test_dates").map(|d| {
        d.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    });
    (out, dates)
}

fn tx(id: u32, ts: &str, c: &str, m: &str, amount: &str) -> String {
    txn(id, ts, c, m, amount, "USD", 40.0, "credit_card", false)
}

#[tokio::test(flavor = "multi_thread")]
async fn incremental_marts_equal_a_full_refresh_after_late_data_retries_and_compaction() {
    let t = TestDir::new();
    write_dims(&t.path("dims"));
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("dims")]);
    // Day 1 and 2.
    ingest(
        &t,
        &lake,
        "a.jsonl",
        &[
            tx(1, "2026-11-01T10:00:00Z", C1, M1, "100.00"),
            tx(2, "2026-11-01T11:00:00Z", C2, M2, "6000.00"),
            tx(3, "2026-11-02T09:00:00Z", C2, M1, "20.25"),
            tx(4, "2026-11-02T10:00:00Z", C1, M2, "10.10"),
        ],
    );
    let first = models_run(&lake, &[]);
    assert!(
        first.iter().all(|(_, mode, _, _)| mode == "full"),
        "the first build is full: {first:?}"
    );
    // A new day, a late row for day 1 and a producer retry of transaction 3
    // (day 2) arriving a day later.
    ingest(
        &t,
        &lake,
        "b.jsonl",
        &[
            tx(5, "2026-11-03T08:00:00Z", C1, M1, "33.33"),
            tx(6, "2026-11-01T23:59:59Z", C2, M1, "1.01"),
            tx(3, "2026-11-02T09:00:00Z", C2, M1, "20.25"),
        ],
    );
    assert_recomputed(&lake, &["2026-11-01", "2026-11-02", "2026-11-03"], 1);
    assert_eq!(
        mart(
            &lake,
            "duplicate_transactions",
            "SELECT transaction_id, occurrence FROM m"
        )
        .await,
        vec!["00000000-0000-4000-8000-000000000003|2"],
        "the retry a day later is found"
    );
    // A compaction changes no data: only the next late row's day is recomputed.
    run_ok(&["compact", "--lake", &lake]);
    ingest(
        &t,
        &lake,
        "c.jsonl",
        &[tx(7, "2026-11-02T12:00:00Z", C1, M1, "7.77")],
    );
    let before = partition_files(&lake, "int_customer_daily");
    assert_recomputed(&lake, &["2026-11-02"], 1);
    let after = partition_files(&lake, "int_customer_daily");
    for day in ["2026-11-01", "2026-11-03"] {
        assert_eq!(after[day], before[day], "{day} was not rewritten");
    }
    assert!(
        after["2026-11-02"]
            .iter()
            .all(|f| !before["2026-11-02"].contains(f)),
        "2026-11-02 replaced: {before:?} -> {after:?}"
    );
    // The daily job tests only the recomputed dates, everything with --full.
    ingest(
        &t,
        &lake,
        "c2.jsonl",
        &[tx(9, "2026-11-03T12:00:00Z", C2, M2, "9.99")],
    );
    let (out, dates) = daily_run(&lake, &[]);
    assert!(
        out.contains("tests over the 1 event date(s) this run recomputed, 2026-11-03"),
        "{out}"
    );
    assert_eq!(dates, Some(vec!["2026-11-03".to_string()]));
    let (out, dates) = daily_run(&lake, &["--full"]);
    assert!(out.contains("tests over every partition"), "{out}");
    assert_eq!(dates, None);
    // Nothing new: nothing recomputed.
    assert_recomputed(&lake, &[], 0);
    let incremental = snapshot(&lake).await;
    // Delta readers see the partitioned marts as txpipe does.
    let tables: Vec<String> = INCREMENTAL.iter().map(|m| format!("marts/{m}")).collect();
    let tables: Vec<&str> = tables.iter().map(String::as_str).collect();
    let counts = delta_counts(&lake, &tables);
    for table in tables {
        let want = expected_rows(&lake, table, 0, 0).await;
        assert_eq!(
            counts[table],
            serde_json::json!([want, want, want]),
            "{table}"
        );
    }
    let daily = mart(
        &lake,
        "daily_sales_summary",
        "SELECT CAST(event_date AS VARCHAR), txn_count, total_amount_usd FROM m ORDER BY 1",
    )
    .await;
    assert_eq!(
        daily,
        vec![
            "2026-11-01|3|6101.01",
            "2026-11-02|3|38.12",
            "2026-11-03|2|43.32"
        ],
        "the retry counted once, late rows in their own days"
    );
    for (name, mode, _, _) in models_run(&lake, &["--full-refresh"]) {
        assert_eq!(mode, "full", "{name}");
    }
    assert_eq!(
        snapshot(&lake).await,
        incremental,
        "incremental == full refresh"
    );

    // A model switched to a table and back: the table build forgets its
    // incremental state, so the switch back starts with a full build.
    let project = t.path("project");
    project_with_sources(&project, "");
    let model = project.join("models/int_merchant_daily.sql");
    let text = std::fs::read_to_string(&model).unwrap();
    let as_table = text.replacen("materialized='incremental'", "materialized='table'", 1);
    std::fs::write(&model, as_table).unwrap();
    let project_arg = project.to_str().unwrap();
    let switched = models_run(&lake, &["--project", project_arg]);
    assert!(
        !switched.iter().any(|(n, ..)| n == "int_merchant_daily"),
        "built as a table: {switched:?}"
    );
    assert!(!t
        .path("lake/_txpipe/incremental/int_merchant_daily.json")
        .exists());
    ingest(
        &t,
        &lake,
        "d.jsonl",
        &[tx(8, "2026-11-04T12:00:00Z", C2, M2, "8.00")],
    );
    let back = models_run(&lake, &[]);
    let merchant = back
        .iter()
        .find(|(n, ..)| n == "int_merchant_daily")
        .unwrap();
    assert_eq!(merchant.1, "full", "switched back: rebuilt in full");
    let customer = back
        .iter()
        .find(|(n, ..)| n == "int_customer_daily")
        .unwrap();
    assert_eq!(
        (customer.1.as_str(), customer.2.as_slice()),
        ("incremental", ["2026-11-04".to_string()].as_slice())
    );
    let after = snapshot(&lake).await;
    models_run(&lake, &["--full-refresh"]);
    assert_eq!(
        snapshot(&lake).await,
        after,
        "still equal after the switches"
    );
    // Other rules change the `<rule>_hits` columns of int_merchant_daily: its
    // SQL changed, so it is rebuilt in full; int_customer_daily has none.
    let rules = stateless_rules();
    let other = models_run(&lake, &["--rules", &rules]);
    let mode = |m: &str| other.iter().find(|(n, ..)| n == m).unwrap().1.clone();
    assert_eq!(mode("int_merchant_daily"), "full");
    assert_eq!(mode("int_customer_daily"), "incremental");
    let after = snapshot(&lake).await;
    models_run(&lake, &["--rules", &rules, "--full-refresh"]);
    assert_eq!(
        snapshot(&lake).await,
        after,
        "equal under the other rules too"
    );
}
