//! Other people's tools read the lake as is: DuckDB and pyarrow (installed by the test command).

use std::process::Command;

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
