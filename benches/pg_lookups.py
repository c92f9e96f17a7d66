"""Latency of point lookups against a running Postgres endpoint (or PostgreSQL).

usage: pg_lookups.py DSN CUSTOMER [RUNS]

e.g. DSN "host=127.0.0.1 port=5433 dbname=txpipe user=txpipe" for txpipe's
endpoint, "host=127.0.0.1 port=PORT dbname=postgres user=postgres" for the
PostgreSQL that `KEEP=1 benches/pg.sh` leaves loaded.

Runs each query RUNS times (default 300) on one psycopg connection and prints
the median in ms: the lookup of CUSTOMER's 100 newest transactions prepared and
unprepared, the same with LIMIT 1, with one column, and `SELECT 1` for the
round trip. A loop on one connection gives steadier numbers than pg.sh's
five runs; pg.sh is the side-by-side comparison.
"""
import statistics
import sys
import time

import psycopg

dsn, customer = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 300
conn = psycopg.connect(dsn, autocommit=True, prepare_threshold=None)
lookup = ("SELECT * FROM fact_transaction WHERE customer_id = %s "
          "ORDER BY transaction_ts DESC LIMIT 100")


def median_ms(sql, params, prepare):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        conn.execute(sql, params, prepare=prepare).fetchall()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


for label, sql, params, prepare in [
    ("lookup, prepared", lookup, (customer,), True),
    ("lookup, unprepared", lookup, (customer,), False),
    ("lookup LIMIT 1, prepared", lookup.replace("100", "1"), (customer,), True),
    ("one column, LIMIT 1, prepared",
     lookup.replace("*", "transaction_id").replace("100", "1"), (customer,), True),
    ("SELECT 1", "SELECT 1", None, False),
]:
    print(f"{label:32} {median_ms(sql, params, prepare):7.2f} ms")
