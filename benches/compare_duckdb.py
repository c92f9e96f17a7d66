#!/usr/bin/env python3
"""Whole-process comparison: txpipe ingest vs DuckDB on the same JSON-lines file.

Both do the same job: read JSON lines, type them (UTC timestamps, Decimal(18,2)),
convert to USD through the fx table, evaluate the three default fraud rules into
fraud_reasons / is_fraud, and write zstd Parquet partitioned by event_date.
Wall time and peak RSS are measured per process with wait4().

    python3 benches/compare_duckdb.py --txpipe target/release/txpipe --rows 1000000 10000000

Needs `pip install duckdb`. Writes a markdown table to stdout.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

DUCKDB_JOB = r"""
import sys, duckdb
src, fx, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
con = duckdb.connect()
con.execute(f"SET threads={threads}")
con.execute(f"CREATE TEMP TABLE fx AS SELECT * FROM read_csv('{fx}')")
con.execute(f'''
COPY (
  WITH t AS (
    SELECT * FROM read_json('{src}', format = 'newline_delimited', columns = {{
      transaction_id: 'VARCHAR', transaction_ts: 'VARCHAR', customer_id: 'VARCHAR', merchant_id: 'VARCHAR',
      amount: 'DECIMAL(18,2)', currency: 'VARCHAR', latitude: 'DOUBLE', longitude: 'DOUBLE',
      device_id: 'VARCHAR', payment_method: 'VARCHAR', is_foreign: 'BOOLEAN'}})
  ), typed AS (
    SELECT t.* REPLACE (CAST(transaction_ts AS TIMESTAMP) AS transaction_ts),
           CAST(round(amount * usd_rate, 2) AS DECIMAL(18,2)) AS amount_usd
    FROM t JOIN fx USING (currency)
  ), ruled AS (
    SELECT *, list_filter([
        CASE WHEN amount_usd > 5000 THEN 'high_amount' END,
        CASE WHEN is_foreign THEN 'foreign' END,
        CASE WHEN latitude IS NULL OR longitude IS NULL OR latitude NOT BETWEEN -90 AND 90
                  OR longitude NOT BETWEEN -180 AND 180 THEN 'invalid_geo' END], lambda x: x IS NOT NULL) AS fraud_reasons
    FROM typed
  )
  SELECT *, len(fraud_reasons) > 0 AS is_fraud, '{src}' AS source, 0 AS source_partition,
         now() AS ingested_at, CAST(transaction_ts AS DATE) AS event_date
  FROM ruled
) TO '{out}' (FORMAT parquet, PARTITION_BY (event_date), COMPRESSION zstd)
''')
"""


def measure(cmd, env=None):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        sys.exit(f"{cmd[0]} failed ({status}):\n{err}")
    return wall, usage.ru_maxrss / 1024.0  # KiB -> MiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--txpipe", default="target/release/txpipe")
    ap.add_argument("--dir", default="target/compare")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the best is reported")
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    a = ap.parse_args()
    import duckdb  # noqa: F401  (fail early with a clear error)

    print(f"| rows | tool | seconds | M rows/s | MB/s | peak RSS (MiB) |")
    print(f"|---:|---|---:|---:|---:|---:|")
    for rows in a.rows:
        data = os.path.join(a.dir, f"in-{rows}")
        src = os.path.join(data, "transactions.jsonl")
        if not os.path.exists(src):
            subprocess.run([a.txpipe, "generate", "--count", str(rows), "--out", data, "--quiet"], check=True,
                           stdout=subprocess.DEVNULL)
        size = os.path.getsize(src)
        results = {}
        for tool in ("txpipe", "duckdb"):
            best = None
            for _ in range(a.repeat):
                out = os.path.join(a.dir, f"out-{tool}-{rows}")
                shutil.rmtree(out, ignore_errors=True)
                if tool == "txpipe":
                    cmd = [a.txpipe, "ingest", "--lake", out, "--from-file", src, "--quiet", "--workers", str(a.threads)]
                else:
                    cmd = [sys.executable, "-c", DUCKDB_JOB, src, os.path.join(data, "fx_rates.csv"), out, str(a.threads)]
                wall, rss = measure(cmd)
                if best is None or wall < best[0]:
                    best = (wall, rss)
            results[tool] = best
            wall, rss = best
            print(f"| {rows:,} | {tool} | {wall:.2f} | {rows / wall / 1e6:.2f} | {size / wall / 1e6:.0f} | {rss:.0f} |", flush=True)
        ratio = results["duckdb"][0] / results["txpipe"][0]
        print(f"| {rows:,} | **txpipe speed-up** | | **{ratio:.2f}x** | | |", flush=True)


if __name__ == "__main__":
    main()
