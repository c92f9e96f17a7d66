"""Point-lookup latency against Postgres servers, interleaved run by run.

usage: pg_lookups.py CUSTOMER DSN [DSN ...] [--runs N]

e.g. "host=127.0.0.1 port=5433 dbname=txpipe user=txpipe" for txpipe's
endpoint and "host=127.0.0.1 port=PORT dbname=postgres user=postgres" for the
PostgreSQL that `KEEP=1 benches/pg.sh` leaves loaded (start it again with
pg_ctl on target/txpipe-bench/pg/nSIZE/pgdata).

Each run executes every query once on every server, one after the other
(a new cursor each time, as benches/pg_bench.py does), so a slow phase of the
machine hits all servers alike; N runs (default 400), then the median and
90th percentile in ms per server and query: CUSTOMER's 100 newest
transactions unprepared and prepared, the same with LIMIT 1, `SELECT 1`
for the round trip, and the 100 newest transactions of another customer at
every run (unprepared; customers from dim_customer in a fixed shuffled order,
so each run asks for rows no earlier run asked for: what an analyst's or a
fraud queue's drill-downs look like, where the busiest customer's rows are
always in cache).
"""
import random
import statistics
import sys
import time

import psycopg

args = sys.argv[1:]
runs = 400
if "--runs" in args:
    at = args.index("--runs")
    runs = int(args[at + 1])
    del args[at:at + 2]
customer, dsns = args[0], args[1:]
# Prepared only where asked (prepare_threshold=None would ignore prepare=True).
conns = [psycopg.connect(d, autocommit=True, prepare_threshold=10**9) for d in dsns]
lookup = ("SELECT * FROM fact_transaction WHERE customer_id = %s "
          "ORDER BY transaction_ts DESC LIMIT 100")
queries = [
    ("lookup, unprepared", lookup, (customer,), False),
    ("lookup, prepared", lookup, (customer,), True),
    ("lookup LIMIT 1, prepared", lookup.replace("100", "1"), (customer,), True),
    ("SELECT 1", "SELECT 1", None, False),
    ("lookup, another customer", lookup, "each", False),
]
others = sorted(r[0] for r in conns[0].execute("SELECT customer_id FROM dim_customer"))
random.Random(1).shuffle(others)
times = {}
for run in range(runs):
    for q, (label, sql, params, prepare) in enumerate(queries):
        if params == "each":
            params = (others[run % len(others)],)
        for s, conn in enumerate(conns):
            start = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(sql, params, prepare=prepare)
                cur.fetchall()
            times.setdefault((q, s), []).append((time.perf_counter() - start) * 1000)
for q, (label, *_rest) in enumerate(queries):
    for s, dsn in enumerate(dsns):
        t = sorted(times[(q, s)])
        print(f"{label:26} {dsn.split(' dbname')[0]:28} "
              f"median {statistics.median(t):6.3f} ms  p90 {t[int(len(t) * 0.9)]:6.3f} ms")
