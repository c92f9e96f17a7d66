#!/usr/bin/env python3
"""Whole-process comparison: `txpipe models run` vs DuckDB building the same marts.

Both read the same lake (fact_transaction partitioned Parquet + dim_customer +
dim_merchant), deduplicate on transaction_id (first by source position), join
the dimensions, and write the six marts (daily_sales_summary, customer_kpis,
merchant_analytics, category_analytics, country_analytics, fraud_by_rule) as
zstd Parquet. Wall time and peak RSS are measured per process with wait4().

    python3 benches/models_duckdb.py --txpipe target/release/txpipe --lake /tmp/lake10m [--runs 3]

Needs `pip install duckdb` and a lake made by `txpipe generate` + `seed` + `ingest`.
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

DUCKDB_JOB = r"""
import sys, duckdb
lake, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f'''
CREATE TEMP VIEW stg AS
WITH ranked AS (
  SELECT *, row_number() OVER (PARTITION BY transaction_id ORDER BY source, source_partition, source_offset) AS position_rank
  FROM read_parquet('{lake}/fact_transaction/*/*.parquet', hive_partitioning = true)
)
SELECT r.*, c.name AS customer_name, c.home_country AS customer_home_country,
       m.name AS merchant_name, m.category AS merchant_category, m.country AS merchant_country
FROM ranked r
LEFT JOIN read_parquet('{lake}/dim_customer/*.parquet') c USING (customer_id)
LEFT JOIN read_parquet('{lake}/dim_merchant/*.parquet') m USING (merchant_id)
WHERE position_rank = 1
''')
con.execute("CREATE TEMP TABLE s AS SELECT * FROM stg")
marts = {
 "daily_sales_summary": '''SELECT event_date, count(*) txn_count, sum(amount_usd) total_amount_usd,
   CAST(avg(amount_usd) AS DECIMAL(18,2)) avg_amount_usd, sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count,
   coalesce(sum(CASE WHEN is_fraud THEN amount_usd END), 0) fraud_amount_usd,
   sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) / count(*) fraud_rate,
   count(DISTINCT customer_id) distinct_customers, count(DISTINCT merchant_id) distinct_merchants,
   sum(CASE WHEN list_contains(fraud_reasons, 'high_amount') THEN 1 ELSE 0 END) high_amount_hits,
   sum(CASE WHEN list_contains(fraud_reasons, 'foreign') THEN 1 ELSE 0 END) foreign_hits,
   sum(CASE WHEN list_contains(fraud_reasons, 'invalid_geo') THEN 1 ELSE 0 END) invalid_geo_hits
   FROM s GROUP BY event_date ORDER BY event_date''',
 "customer_kpis": '''SELECT customer_id, max(customer_name) customer_name, max(customer_home_country) home_country,
   count(*) txn_count, sum(amount_usd) total_spend_usd, CAST(avg(amount_usd) AS DECIMAL(18,2)) avg_spend_usd,
   max(amount_usd) max_spend_usd, min(transaction_ts) first_transaction_ts, max(transaction_ts) last_transaction_ts,
   sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count, sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) / count(*) fraud_rate,
   sum(CASE WHEN is_foreign THEN 1 ELSE 0 END) / count(*) foreign_share FROM s GROUP BY customer_id ORDER BY customer_id''',
 "merchant_analytics": '''SELECT merchant_id, max(merchant_name) merchant_name, max(merchant_category) category,
   max(merchant_country) country, sum(amount_usd) revenue_usd, count(*) txn_count,
   CAST(avg(amount_usd) AS DECIMAL(18,2)) avg_ticket_usd, sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count,
   sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) / count(*) fraud_rate FROM s GROUP BY merchant_id ORDER BY merchant_id''',
 "category_analytics": '''SELECT coalesce(merchant_category, 'unknown') category, sum(amount_usd) revenue_usd, count(*) txn_count,
   CAST(avg(amount_usd) AS DECIMAL(18,2)) avg_ticket_usd, sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count,
   sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) / count(*) fraud_rate, count(DISTINCT merchant_id) merchants
   FROM s GROUP BY 1 ORDER BY 1''',
 "country_analytics": '''SELECT coalesce(merchant_country, 'unknown') country, sum(amount_usd) revenue_usd, count(*) txn_count,
   CAST(avg(amount_usd) AS DECIMAL(18,2)) avg_ticket_usd, sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count,
   sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) / count(*) fraud_rate, count(DISTINCT merchant_id) merchants
   FROM s GROUP BY 1 ORDER BY 1''',
 "fraud_by_rule": '''SELECT event_date, rule, count(*) hits, sum(amount_usd) amount_usd FROM
   (SELECT event_date, amount_usd, unnest(fraud_reasons) rule FROM s WHERE is_fraud) GROUP BY 1, 2 ORDER BY 1, 2''',
}
for name, sql in marts.items():
    con.execute(f"COPY ({sql}) TO '{out}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")
"""


def measure(cmd):
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{cmd[0]} failed with status {status}")
    return wall, usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--txpipe", required=True)
    ap.add_argument("--lake", required=True)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    out = "/tmp/txpipe-models-duckdb-out"
    rows = []
    for run in range(a.runs):
        t_wall, t_rss = measure([a.txpipe, "models", "run", "--lake", a.lake])
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        d_wall, d_rss = measure([sys.executable, "-c", DUCKDB_JOB, a.lake, out])
        rows.append((t_wall, t_rss, d_wall, d_rss))
        print(f"run {run + 1}: txpipe {t_wall:.2f}s {t_rss:.0f} MiB | duckdb {d_wall:.2f}s {d_rss:.0f} MiB", file=sys.stderr)
    best = min(rows, key=lambda r: r[0])
    bestd = min(rows, key=lambda r: r[2])
    print("| engine | best wall (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    print(f"| txpipe models run | {best[0]:.2f} | {best[1]:.0f} |")
    print(f"| DuckDB {__import__('duckdb').__version__} (python) | {bestd[2]:.2f} | {bestd[3]:.0f} |")


if __name__ == "__main__":
    main()
