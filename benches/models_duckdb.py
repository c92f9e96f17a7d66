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


# The same plan as txpipe's models: duplicate candidates by a 64-bit hash of the
# id, anti-join, per-day merchant/customer building blocks, dims joined after
# aggregating.
DUCKDB_SAME_PLAN = r'''
import sys, duckdb
lake, out = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"CREATE TEMP VIEW fact AS SELECT * FROM read_parquet('{lake}/fact_transaction/*/*.parquet', hive_partitioning = true)")
con.execute(f"CREATE TEMP TABLE dc AS SELECT * FROM read_parquet('{lake}/dim_customer/*.parquet')")
con.execute(f"CREATE TEMP TABLE dm AS SELECT * FROM read_parquet('{lake}/dim_merchant/*.parquet')")
con.execute("CREATE TEMP TABLE h AS SELECT hash(transaction_id) h FROM fact GROUP BY 1 HAVING count(*) > 1")
con.execute("""CREATE TEMP TABLE dup AS SELECT * FROM (SELECT f.transaction_id, f.source, f.source_partition, f.source_offset,
  row_number() OVER (PARTITION BY f.transaction_id ORDER BY f.source, f.source_partition, f.source_offset) occ
  FROM fact f JOIN h ON hash(f.transaction_id) = h.h) WHERE occ > 1""")
con.execute("CREATE TEMP VIEW t AS SELECT f.* FROM fact f ANTI JOIN dup d ON f.source = d.source AND f.source_partition = d.source_partition AND f.source_offset = d.source_offset")
con.execute("""CREATE TEMP TABLE md AS SELECT event_date, merchant_id, count(*) txn_count, sum(amount_usd) amount_usd,
  sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count, sum(CASE WHEN is_fraud THEN amount_usd END) fraud_amount_usd,
  sum(CASE WHEN list_contains(fraud_reasons, 'high_amount') THEN 1 ELSE 0 END) high_amount_hits,
  sum(CASE WHEN list_contains(fraud_reasons, 'foreign') THEN 1 ELSE 0 END) foreign_hits,
  sum(CASE WHEN list_contains(fraud_reasons, 'invalid_geo') THEN 1 ELSE 0 END) invalid_geo_hits
  FROM t GROUP BY ALL""")
con.execute("""CREATE TEMP TABLE cd AS SELECT event_date, customer_id, count(*) txn_count, sum(amount_usd) amount_usd,
  max(amount_usd) max_amount_usd, min(transaction_ts) first_ts, max(transaction_ts) last_ts,
  sum(CASE WHEN is_fraud THEN 1 ELSE 0 END) fraud_count, sum(CASE WHEN is_foreign THEN 1 ELSE 0 END) foreign_count
  FROM t GROUP BY ALL""")
marts = {
 "daily_sales_summary": """SELECT m.*, c.distinct_customers FROM (SELECT event_date, sum(txn_count) txn_count, sum(amount_usd) total,
   sum(fraud_count) fraud_count, sum(fraud_amount_usd) fraud_amount, count(*) distinct_merchants, sum(high_amount_hits) h1,
   sum(foreign_hits) h2, sum(invalid_geo_hits) h3 FROM md GROUP BY 1) m JOIN (SELECT event_date, count(*) distinct_customers FROM cd GROUP BY 1) c USING (event_date)""",
 "customer_kpis": """SELECT k.*, c.name, c.home_country FROM (SELECT customer_id, sum(txn_count) n, sum(amount_usd) s, max(max_amount_usd) mx,
   min(first_ts) f, max(last_ts) l, sum(fraud_count) fc, sum(foreign_count) fo FROM cd GROUP BY 1) k LEFT JOIN dc c USING (customer_id)""",
 "merchant_analytics": """SELECT k.*, m.name, m.category, m.country FROM (SELECT merchant_id, sum(amount_usd) r, sum(txn_count) n, sum(fraud_count) fc
   FROM md GROUP BY 1) k LEFT JOIN dm m USING (merchant_id)""",
 "category_analytics": """SELECT coalesce(m.category, 'unknown') c, sum(d.amount_usd), sum(d.txn_count), sum(d.fraud_count), count(DISTINCT d.merchant_id)
   FROM md d LEFT JOIN dm m USING (merchant_id) GROUP BY 1""",
 "country_analytics": """SELECT coalesce(m.country, 'unknown') c, sum(d.amount_usd), sum(d.txn_count), sum(d.fraud_count), count(DISTINCT d.merchant_id)
   FROM md d LEFT JOIN dm m USING (merchant_id) GROUP BY 1""",
 "fraud_by_rule": """SELECT event_date, rule, count(*) hits, sum(amount_usd) FROM (SELECT event_date, amount_usd, unnest(fraud_reasons) rule FROM t WHERE is_fraud) GROUP BY 1, 2""",
}
for name, sql in marts.items():
    con.execute(f"COPY ({sql}) TO '{out}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")
'''


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
        shutil.rmtree(out, ignore_errors=True)
        os.makedirs(out)
        s_wall, s_rss = measure([sys.executable, "-c", DUCKDB_SAME_PLAN, a.lake, out])
        rows.append((t_wall, t_rss, d_wall, d_rss, s_wall, s_rss))
        print(f"run {run + 1}: txpipe {t_wall:.2f}s {t_rss:.0f} MiB | duckdb window {d_wall:.2f}s {d_rss:.0f} MiB"
              f" | duckdb same plan {s_wall:.2f}s {s_rss:.0f} MiB", file=sys.stderr)
    best = min(rows, key=lambda r: r[0])
    bestd = min(rows, key=lambda r: r[2])
    bests = min(rows, key=lambda r: r[4])
    print("| engine | best wall (s) | peak RSS (MiB) |")
    print("|---|---:|---:|")
    print(f"| txpipe models run | {best[0]:.2f} | {best[1]:.0f} |")
    v = __import__("duckdb").__version__
    print(f"| DuckDB {v}, window dedup (textbook SQL) | {bestd[2]:.2f} | {bestd[3]:.0f} |")
    print(f"| DuckDB {v}, txpipe's plan (hashed-id candidates, aggregate then join) | {bests[4]:.2f} | {bests[5]:.0f} |")


if __name__ == "__main__":
    main()
