//! Other people's tools read the lake as is: DuckDB and pyarrow (installed by the test command).

use std::process::Command;

use txpipe_core::arrow::array::AsArray;

use crate::helpers::*;

const SCRIPT: &str = r#"
import sys, duckdb, pyarrow.dataset as ds, pyarrow as pa
lake = sys.argv[1]
con = duckdb.connect()
n, days, fraud, usd = con.execute(f"""
  SELECT count(*), count(DISTINCT event_date), count(*) FILTER (WHERE is_fraud), sum(amount_usd)
  FROM read_parquet('{lake}/fact_transaction/*/*.parquet', hive_partitioning = true)""").fetchone()
q = con.execute(f"SELECT count(*) FROM read_parquet('{lake}/quarantine/*/*.parquet', hive_partitioning = true)").fetchone()[0]
t = ds.dataset(f"{lake}/fact_transaction", format="parquet", partitioning="hive").to_table()
s = t.schema
assert s.field("transaction_ts").type == pa.timestamp("us", tz="UTC"), s.field("transaction_ts").type
assert s.field("amount").type == pa.decimal128(18, 2), s.field("amount").type
assert s.field("amount_usd").type == pa.decimal128(18, 2)
assert pa.types.is_list(s.field("fraud_reasons").type)
assert s.field("is_fraud").type == pa.bool_()
assert s.field("source_partition").type == pa.int32()
assert s.field("source_offset").type == pa.int64()
print(n, days, fraud, q, t.num_rows, usd)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_and_pyarrow_read_the_lake() {
    let t = TestDir::new();
    let (_, valid, bad) = generate(&t.path("gen"), 5_000, 0.02, 3);
    let lake = t.str("lake");
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &t.str("gen/transactions.jsonl"),
        "--quiet",
    ]);
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(&lake)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "DuckDB/pyarrow could not read the lake (the test command installs them with pip):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = stdout.split_whitespace().collect();
    let fraud = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE is_fraud",
    )
    .await[0];
    let usd = query(
        &lake,
        "SELECT CAST(SUM(amount_usd) AS VARCHAR) FROM fact_transaction",
    )
    .await;
    let usd =
        txpipe_core::arrow::util::display::array_value_to_string(usd[0].column(0), 0).unwrap();
    assert_eq!(f[0], valid.to_string(), "DuckDB row count");
    assert_eq!(f[1], "30", "DuckDB sees the event_date partitions");
    assert_eq!(
        f[2],
        fraud.to_string(),
        "DuckDB fraud count = DataFusion fraud count"
    );
    assert_eq!(f[3], bad.to_string(), "DuckDB quarantine count");
    assert_eq!(f[4], valid.to_string(), "pyarrow row count");
    assert_eq!(
        f[5], usd,
        "DuckDB SUM(amount_usd) = DataFusion SUM(amount_usd)"
    );
}

/// The Delta readers' interpreter: a venv with DuckDB 1.5.5 and its delta
/// extension, Python `deltalake` and polars (tests/run.sh makes it).
pub(crate) fn delta_python() -> String {
    std::env::var("TXPIPE_DELTA_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/.cache/txpipe-tools/delta-venv/bin/python",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

const DELTA_SCRIPT: &str = r#"
import sys, json, duckdb, deltalake, polars
from duckdb_extensions import import_extension
lake, tables = sys.argv[1], sys.argv[2:]
con = duckdb.connect()
import_extension("delta", con=con)
out = {}
for t in tables:
    path = f"{lake}/{t}"
    dl = deltalake.DeltaTable(path).to_pyarrow_table().num_rows
    pl = polars.read_delta(path).height
    dd = con.execute(f"SELECT count(*) FROM delta_scan('{path}')").fetchone()[0]
    out[t] = [dl, pl, dd]
fact = f"{lake}/fact_transaction"
out["usd"] = str(con.execute(f"SELECT sum(amount_usd) FROM delta_scan('{fact}')").fetchone()[0])
out["fraud"] = polars.read_delta(fact).filter(polars.col("is_fraud")).height
print(json.dumps(out))
"#;

pub(crate) fn delta_counts(lake: &str, tables: &[&str]) -> serde_json::Value {
    let out = Command::new(delta_python())
        .arg("-c")
        .arg(DELTA_SCRIPT)
        .arg(lake)
        .args(tables)
        .output()
        .expect("the Delta readers' python (tests/run.sh creates the venv)");
    assert!(
        out.status.success(),
        "Delta readers failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Rows of a table as txpipe reads it (DataFusion over the Delta snapshot).
pub(crate) async fn expected_rows(lake: &str, name: &str, valid: u64, bad: u64) -> i64 {
    match name {
        "fact_transaction" => valid as i64,
        "quarantine" => bad as i64,
        n if n.starts_with("marts/") => {
            let model = n.trim_start_matches("marts/");
            let l = txpipe_core::lake::Lake::open(lake).unwrap();
            let ctx = txpipe_core::datafusion::prelude::SessionContext::new();
            assert!(txpipe_core::models::runner::register_mart(&ctx, &l, model)
                .await
                .unwrap());
            let b = ctx
                .sql(&format!("SELECT COUNT(*) FROM {model}"))
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            b[0].column(0)
                .as_primitive::<txpipe_core::arrow::datatypes::Int64Type>()
                .value(0)
        }
        other => query_i64s(lake, &format!("SELECT COUNT(*) FROM {other}")).await[0],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delta_readers_see_exactly_the_committed_rows_also_after_compaction() {
    let t = TestDir::new();
    let (_, valid, bad) = generate(&t.path("gen"), 6_000, 0.02, 5);
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("gen")]);
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &t.str("gen/transactions.jsonl"),
        "--batch-rows",
        "50",
        "--quiet",
    ]);
    run_ok(&["models", "run", "--lake", &lake]);
    // A file of a batch that never committed: in the folder, not in the log.
    let committed = txpipe_core::sink::delta::committed_files(
        &txpipe_core::lake::Lake::open(&lake).unwrap(),
        "fact_transaction",
    )
    .await
    .unwrap();
    let orphan = committed[0].replace("part-", "part-uncommitted-");
    std::fs::copy(
        t.path(&format!("lake/{}", committed[0])),
        t.path(&format!("lake/{orphan}")),
    )
    .unwrap();

    // customer_kpis is one file; int_customer_daily is partitioned by event_date.
    let marts = [
        "marts/daily_sales_summary",
        "marts/customer_kpis",
        "marts/int_customer_daily",
    ];
    let mut tables = vec![
        "fact_transaction",
        "quarantine",
        "dim_customer",
        "dim_merchant",
        "fx_rate",
    ];
    tables.extend(marts);
    let fraud = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE is_fraud",
    )
    .await[0];
    let usd = query(
        &lake,
        "SELECT CAST(SUM(amount_usd) AS VARCHAR) FROM fact_transaction",
    )
    .await;
    let usd =
        txpipe_core::arrow::util::display::array_value_to_string(usd[0].column(0), 0).unwrap();
    let files_before = committed.len();
    for round in ["before compaction", "after compaction, before vacuum"] {
        let got = delta_counts(&lake, &tables);
        for name in &tables {
            let n = expected_rows(&lake, name, valid, bad).await;
            assert!(n > 0, "{name} is empty");
            assert_eq!(
                got[*name],
                serde_json::json!([n, n, n]),
                "{name} {round}: [deltalake, polars, duckdb]"
            );
        }
        assert_eq!(got["usd"], usd, "DuckDB delta_scan SUM(amount_usd) {round}");
        assert_eq!(got["fraud"], fraud, "polars fraud rows {round}");
        if round.starts_with("before") {
            let out = run_ok(&["compact", "--lake", &lake]);
            assert!(out.contains("fact_transaction:"), "{out}");
        }
    }
    let after = txpipe_core::sink::delta::committed_files(
        &txpipe_core::lake::Lake::open(&lake).unwrap(),
        "fact_transaction",
    )
    .await
    .unwrap();
    let days = after
        .iter()
        .map(|f| f.split('/').nth(1).unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert_eq!(
        after.len(),
        days,
        "compaction packed {files_before} files into one per day"
    );
    assert!(files_before > 2 * days, "{files_before} files before");
    assert_eq!(
        query_i64s(&lake, "SELECT COUNT(*) FROM fact_transaction").await[0],
        valid as i64
    );
}
