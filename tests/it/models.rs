//! SQL models and data tests: marts checked to the cent against hand-computed
//! numbers on a small fixture lake, and each test kind shown to catch a seeded
//! violation.

use std::path::Path;

use txpipe_core::arrow::datatypes::DataType;
use txpipe_core::arrow::util::display::{ArrayFormatter, FormatOptions};
use txpipe_core::datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::helpers::*;

pub(crate) const C1: &str = "00000000-0000-4000-8000-0000000000c1";
pub(crate) const C2: &str = "00000000-0000-4000-8000-0000000000c2";
pub(crate) const M1: &str = "00000000-0000-4000-8000-0000000000a1";
pub(crate) const M2: &str = "00000000-0000-4000-8000-0000000000a2";
pub(crate) const M3: &str = "00000000-0000-4000-8000-0000000000a3";

#[allow(clippy::too_many_arguments)]
pub(crate) fn txn(
    id: u32,
    ts: &str,
    c: &str,
    m: &str,
    amount: &str,
    cur: &str,
    lat: f64,
    pm: &str,
    foreign: bool,
) -> String {
    format!(
        r#"{{"transaction_id":"00000000-0000-4000-8000-{id:012}","transaction_ts":"{ts}","customer_id":"{c}","merchant_id":"{m}","amount":{amount},"currency":"{cur}","latitude":{lat},"longitude":10.0,"device_id":"dev-1","payment_method":"{pm}","is_foreign":{foreign}}}"#
    )
}

pub(crate) fn write_dims(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("dim_customer.csv"),
        format!("customer_id,name,home_country,signup_date\n{C1},Alice,US,2024-01-01\n{C2},Bob,KR,2024-02-01\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("dim_merchant.csv"),
        format!("merchant_id,name,category,country\n{M1},Shop A,electronics,US\n{M2},Cafe B,restaurants,KR\n"),
    )
    .unwrap();
}

/// The fixture: five transactions over two days (one in EUR at 1.08), and a
/// producer retry of the first one on a later line.
pub(crate) fn fixture_lake(t: &TestDir) -> String {
    let lines = [
        txn(
            1,
            "2026-11-01T10:00:00Z",
            C1,
            M1,
            "100.00",
            "USD",
            40.0,
            "credit_card",
            false,
        ),
        txn(
            2,
            "2026-11-01T11:00:00Z",
            C1,
            M2,
            "6000.00",
            "USD",
            37.5,
            "debit_card",
            true,
        ),
        txn(
            3,
            "2026-11-01T12:00:00Z",
            C2,
            M2,
            "50.50",
            "USD",
            37.5,
            "mobile_wallet",
            false,
        ),
        txn(
            4,
            "2026-11-02T09:00:00Z",
            C2,
            M1,
            "20.25",
            "USD",
            40.0,
            "credit_card",
            true,
        ),
        txn(
            5,
            "2026-11-02T10:00:00Z",
            C1,
            M1,
            "10.00",
            "EUR",
            40.0,
            "bank_transfer",
            false,
        ),
        txn(
            1,
            "2026-11-01T10:00:00Z",
            C1,
            M1,
            "100.00",
            "USD",
            40.0,
            "credit_card",
            false,
        ),
    ];
    let input = t.path("fixture.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    write_dims(&t.path("dims"));
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("dims")]);
    // The hand-computed numbers assume the stateless rules (each flag is fraud).
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        input.to_str().unwrap(),
        "--rules",
        &stateless_rules(),
        "--quiet",
    ]);
    lake
}

/// Rows of `SELECT …` over one published mart (registered as `m`), each row
/// formatted as `a|b|c`.
pub(crate) async fn mart(lake: &str, model: &str, select: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    let folder = format!("{lake}/marts/{model}/");
    // An incremental mart lives in hive partition folders (event_date=…/).
    let partitioned = std::fs::read_dir(&folder).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("event_date=")
    });
    let mut options = ParquetReadOptions::default();
    if partitioned {
        options = options.table_partition_cols(vec![("event_date".into(), DataType::Date32)]);
    }
    ctx.register_parquet("m", &folder, options).await.unwrap();
    let batches = ctx.sql(select).await.unwrap().collect().await.unwrap();
    let mut rows = Vec::new();
    let opts = FormatOptions::default().with_null("NULL");
    for b in batches {
        let fmts: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            rows.push(
                fmts.iter()
                    .map(|f| f.value(i).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn models_match_hand_computed_numbers_to_the_cent() {
    let t = TestDir::new();
    let lake = fixture_lake(&t);
    let out = run_ok(&["models", "run", "--lake", &lake]);
    assert!(out.contains("OK    daily_sales_summary"), "{out}");

    assert_eq!(
        mart(
            &lake,
            "daily_sales_summary",
            "SELECT event_date, txn_count, total_amount_usd, avg_amount_usd, fraud_count, \
             fraud_amount_usd, round(fraud_rate, 4), distinct_customers, distinct_merchants, \
             high_amount_hits, foreign_hits, invalid_geo_hits FROM m ORDER BY event_date"
        )
        .await,
        vec![
            "2026-11-01|3|6150.50|2050.17|1|6000.00|0.3333|2|2|1|1|0",
            "2026-11-02|2|31.05|15.53|1|20.25|0.5|2|1|0|1|0",
        ]
    );
    assert_eq!(
        mart(&lake, "customer_kpis",
            "SELECT customer_id, customer_name, home_country, txn_count, total_spend_usd, \
             avg_spend_usd, max_spend_usd, first_transaction_ts, last_transaction_ts, fraud_count, \
             round(fraud_rate, 4), round(foreign_share, 4) FROM m ORDER BY customer_id").await,
        vec![
            format!("{C1}|Alice|US|3|6110.80|2036.93|6000.00|2026-11-01T10:00:00Z|2026-11-02T10:00:00Z|1|0.3333|0.3333"),
            format!("{C2}|Bob|KR|2|70.75|35.38|50.50|2026-11-01T12:00:00Z|2026-11-02T09:00:00Z|1|0.5|0.5"),
        ]
    );
    assert_eq!(
        mart(
            &lake,
            "merchant_analytics",
            "SELECT merchant_id, merchant_name, category, country, revenue_usd, txn_count, \
             avg_ticket_usd, fraud_count, round(fraud_rate, 4) FROM m ORDER BY merchant_id"
        )
        .await,
        vec![
            format!("{M1}|Shop A|electronics|US|131.05|3|43.68|1|0.3333"),
            format!("{M2}|Cafe B|restaurants|KR|6050.50|2|3025.25|1|0.5"),
        ]
    );
    assert_eq!(
        mart(&lake, "category_analytics",
            "SELECT category, revenue_usd, txn_count, avg_ticket_usd, fraud_count, round(fraud_rate, 4), merchants FROM m ORDER BY category").await,
        vec!["electronics|131.05|3|43.68|1|0.3333|1", "restaurants|6050.50|2|3025.25|1|0.5|1"]
    );
    assert_eq!(
        mart(
            &lake,
            "country_analytics",
            "SELECT country, revenue_usd, txn_count, fraud_count FROM m ORDER BY country"
        )
        .await,
        vec!["KR|6050.50|2|1", "US|131.05|3|1"]
    );
    assert_eq!(
        mart(
            &lake,
            "fraud_by_rule",
            "SELECT event_date, rule, hits, amount_usd FROM m ORDER BY event_date, rule"
        )
        .await,
        vec![
            "2026-11-01|foreign|1|6000.00",
            "2026-11-01|high_amount|1|6000.00",
            "2026-11-02|foreign|1|20.25",
        ]
    );
    // The producer retry (line 6 repeats line 1) is the one duplicate dropped.
    assert_eq!(
        mart(
            &lake,
            "duplicate_transactions",
            "SELECT transaction_id, source_offset, occurrence FROM m"
        )
        .await,
        vec!["00000000-0000-4000-8000-000000000001|5|2"]
    );
    // The staging view is not written; each mart folder holds one file, and a
    // second run replaces it.
    assert!(!t.path("lake/marts/stg_transactions").exists());
    run_ok(&[
        "models",
        "run",
        "--lake",
        &lake,
        "--select",
        "daily_sales_summary",
    ]);
    // One data file (the Delta table's only one) beside the Delta log.
    let mut files: Vec<_> = std::fs::read_dir(t.path("lake/marts/daily_sales_summary"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0] == "_delta_log" && files[1].ends_with(".parquet"),
        "{files:?}"
    );
    assert!(
        std::fs::read_dir(t.path("lake/_txpipe/staging/marts")).map_or(true, |d| d
            .flat_map(|e| std::fs::read_dir(e.unwrap().path()).unwrap())
            .next()
            .is_none())
    );
    // Run records: two model runs, machine-readable.
    let records: Vec<serde_json::Value> = std::fs::read_dir(t.path("lake/_txpipe/runs"))
        .unwrap()
        .map(|e| serde_json::from_slice(&std::fs::read(e.unwrap().path()).unwrap()).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    let full = records
        .iter()
        .find(|r| r["models"].as_array().unwrap().len() == 12)
        .unwrap();
    assert_eq!(full["status"], "success");
    let daily = full["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "daily_sales_summary")
        .unwrap();
    assert_eq!(daily["rows"], 2);
    assert_eq!(daily["status"], "ok");
}

#[tokio::test(flavor = "multi_thread")]
async fn data_tests_pass_on_clean_data_and_warn_on_a_raw_duplicate() {
    let t = TestDir::new();
    let lake = fixture_lake(&t);
    // Before any models run: the lake's own tests run, the marts' say why not.
    let early = txpipe().args(["test", "--lake", &lake]).output().unwrap();
    let early_out = String::from_utf8_lossy(&early.stdout);
    assert!(!early.status.success());
    assert!(
        early_out.contains("PASS  not_null_fact_transaction_transaction_id"),
        "{early_out}"
    );
    assert!(
        early_out.contains("model customer_kpis has not been built yet"),
        "{early_out}"
    );
    run_ok(&["models", "run", "--lake", &lake]);
    let out = run_ok(&["test", "--lake", &lake]);
    assert!(
        out.contains("WARN  unique_fact_transaction_transaction_id"),
        "{out}"
    );
    assert!(out.contains("1 failing rows"), "{out}");
    assert!(
        out.contains("PASS  unique_stg_transactions_transaction_id"),
        "{out}"
    );
    assert!(out.contains("PASS  revenue_reconciles"), "{out}");
    assert!(out.contains(" 0 FAIL, 0 ERROR"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_test_kind_catches_a_seeded_violation() {
    let t = TestDir::new();
    let lines = [
        txn(
            1,
            "2026-11-01T10:00:00Z",
            C1,
            M1,
            "10.00",
            "USD",
            40.0,
            "credit_card",
            false,
        ),
        // Orphan merchant, unknown payment method, impossible latitude.
        txn(
            2,
            "2026-11-01T11:00:00Z",
            C1,
            M3,
            "11.00",
            "USD",
            40.0,
            "credit_card",
            false,
        ),
        txn(
            3,
            "2026-11-01T12:00:00Z",
            C2,
            M2,
            "12.00",
            "USD",
            40.0,
            "cash",
            false,
        ),
        txn(
            4,
            "2026-11-01T13:00:00Z",
            C2,
            M2,
            "13.00",
            "USD",
            95.0,
            "credit_card",
            false,
        ),
    ];
    let input = t.path("bad.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    write_dims(&t.path("dims"));
    // A rule set without the geo rule lets the bad latitude through unflagged.
    let rules = t.path("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"high_amount\"\nsql = \"amount_usd > 5000\"\n",
    )
    .unwrap();
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("dims")]);
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        input.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--quiet",
    ]);
    run_ok(&[
        "models",
        "run",
        "--lake",
        &lake,
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let out = txpipe().args(["test", "--lake", &lake]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "error-severity failures exit non-zero:\n{stdout}"
    );
    for failing in [
        "FAIL  relationships_fact_transaction_merchant_id__dim_merchant",
        "FAIL  accepted_values_fact_transaction_payment_method",
        "FAIL  range_fact_transaction_latitude",
    ] {
        assert!(stdout.contains(failing), "{failing} missing:\n{stdout}");
    }
    assert!(
        stdout.contains(M3) && stdout.contains("cash"),
        "failing rows are shown:\n{stdout}"
    );
    assert!(
        stdout.contains("PASS  not_null_fact_transaction_transaction_id"),
        "{stdout}"
    );
    // The run record has the counts.
    let record = std::fs::read_dir(t.path("lake/_txpipe/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-test-"))
        .unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    assert_eq!(record["status"], "error");
    let failures = |name: &str| {
        record["tests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap()["failures"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        failures("relationships_fact_transaction_merchant_id__dim_merchant"),
        1
    );
    assert_eq!(
        failures("accepted_values_fact_transaction_payment_method"),
        1
    );
    assert_eq!(failures("range_fact_transaction_latitude"), 1);
    // --select runs only the tests of one table.
    let out = txpipe()
        .args(["test", "--lake", &lake, "--select", "dim_customer"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn cycles_missing_tables_and_bad_selections_are_clear_errors() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let project = |name: &str, files: &[(&str, &str)]| {
        let dir = t.path(name);
        std::fs::create_dir_all(dir.join("models")).unwrap();
        for (f, sql) in files {
            std::fs::write(dir.join("models").join(f), sql).unwrap();
        }
        dir.display().to_string()
    };
    let cyclic = project(
        "cyclic",
        &[
            ("a.sql", "SELECT * FROM {{ ref('b') }}"),
            ("b.sql", "SELECT * FROM {{ ref('a') }}"),
        ],
    );
    let out = txpipe()
        .args(["models", "run", "--lake", &lake, "--project", &cyclic])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cycle: a -> b -> a"), "{err}");

    let missing = project("missing", &[("lonely.sql", "SELECT * FROM no_such_table")]);
    let out = txpipe()
        .args(["models", "run", "--lake", &lake, "--project", &missing])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("lonely") && all.contains("no_such_table"),
        "{all}"
    );

    let out = txpipe()
        .args(["models", "run", "--lake", &lake, "--select", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--select nope: no such model"));
}
