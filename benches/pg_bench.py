"""Helper of benches/pg.sh: loads a txpipe lake into PostgreSQL, then times the
same queries against PostgreSQL and txpipe's Postgres endpoint.

  pg_bench.py load  LAKE PG_DSN CSV_DIR
      Every table txpipe's endpoint serves (fact_transaction, quarantine,
      dim_customer, dim_merchant, fx_rate and each mart under LAKE/marts/) is
      read with DuckDB's delta_scan, written to CSV and COPYed into PostgreSQL
      under the same name, with the column types a Postgres user would give
      them (derived from DuckDB's DESCRIBE of the Delta table). Then
      CREATE INDEX ON fact_transaction (customer_id, transaction_ts DESC) and
      VACUUM (ANALYZE). Prints one markdown line with the timings.

  pg_bench.py bench PG_DSN [TXPIPE_DSN] [--runs N] [--transfer-rows N]
      The dashboard's panel queries over the marts, a GROUP BY over the fact
      table, a point lookup by customer (psycopg parameters: extended protocol,
      once unprepared and once prepared) and the transfer of TRANSFER_ROWS rows
      of fact_transaction to the client. Each query: one warm-up, then N timed
      runs; the median is reported. Prints markdown tables. Without TXPIPE_DSN
      only PostgreSQL is measured.

Needs duckdb with the delta extension (duckdb_extensions) and psycopg 3, e.g.
~/.cache/txpipe-tools/delta-venv/bin/python.
"""
import argparse
import os
import re
import statistics
import sys
import time

import psycopg

# The tables txpipe's endpoint serves besides the marts (txpipe_core::read::LAKE_TABLES).
LAKE_TABLES = ["fact_transaction", "quarantine", "dim_customer", "dim_merchant", "fx_rate"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def qi(name):
    """A quoted identifier (same rules in DuckDB and PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------
# load

SIMPLE_TYPES = {
    "VARCHAR": "text",
    "BOOLEAN": "boolean",
    "DOUBLE": "double precision",
    "FLOAT": "real",
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "TINYINT": "smallint",
    "UTINYINT": "smallint",
    "USMALLINT": "integer",
    "UINTEGER": "bigint",
    "UBIGINT": "numeric(20,0)",
    "HUGEINT": "numeric(38,0)",
    "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIME": "time",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "BLOB": "bytea",
}


def pg_type(duck):
    """(PostgreSQL type, how DuckDB must render the column for COPY csv) of a
    DuckDB type; the second is a function of the quoted column name."""
    if duck.endswith("[]"):
        elem, _ = pg_type(duck[:-2])
        if elem.endswith("[]") or elem == "bytea":
            raise SystemExit(f"column type {duck} is not supported")
        # A Postgres array literal: {"a","b\"c",NULL}; quoting is valid for any element type.
        render = lambda c: (  # noqa: E731
            f"CASE WHEN {c} IS NULL THEN NULL ELSE '{{' || array_to_string(list_transform({c}, "
            f"x -> CASE WHEN x IS NULL THEN 'NULL' ELSE '\"' || "
            f"replace(replace(CAST(x AS VARCHAR), '\\', '\\\\'), '\"', '\\\"') || '\"' END), ',') || '}}' END"
        )
        return elem + "[]", render
    m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", duck)
    if m:
        return f"numeric({m.group(1)},{m.group(2)})", lambda c: c
    if duck == "BLOB":
        return "bytea", lambda c: f"CASE WHEN {c} IS NULL THEN NULL ELSE '\\x' || lower(hex({c})) END"
    if duck in SIMPLE_TYPES:
        return SIMPLE_TYPES[duck], lambda c: c
    log(f"  note: DuckDB type {duck} loaded as text")
    return "text", lambda c: f"CAST({c} AS VARCHAR)"


def lake_tables(lake):
    """(name, folder) of every table the endpoint serves that has a Delta log."""
    found = [(t, os.path.join(lake, t)) for t in LAKE_TABLES]
    marts = os.path.join(lake, "marts")
    if os.path.isdir(marts):
        found += [(m, os.path.join(marts, m)) for m in sorted(os.listdir(marts))]
    return [(n, p) for n, p in found if os.path.isdir(os.path.join(p, "_delta_log"))]


def load(lake, dsn, csv_dir):
    import duckdb
    from duckdb_extensions import import_extension

    duck = duckdb.connect()
    import_extension("delta", con=duck)
    duck.execute("SET TimeZone = 'UTC'")
    os.makedirs(csv_dir, exist_ok=True)
    export_s = copy_s = 0.0
    rows = {}
    with psycopg.connect(dsn, autocommit=True) as pg:
        pg.execute("SET TimeZone = 'UTC'")
        for name, path in lake_tables(lake):
            scan = f"delta_scan('{path}')"
            cols = duck.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
            ddl, select = [], []
            for col, dtype, *_ in cols:
                pgt, render = pg_type(dtype)
                ddl.append(f"{qi(col)} {pgt}")
                select.append(f"{render(qi(col))} AS {qi(col)}")
            csv = os.path.join(csv_dir, f"{name}.csv")
            t = time.perf_counter()
            duck.execute(f"COPY (SELECT {', '.join(select)} FROM {scan}) TO '{csv}' (FORMAT csv, HEADER false)")
            export_s += time.perf_counter() - t
            t = time.perf_counter()
            # One transaction: with wal_level=minimal the COPY into a table created
            # in the same transaction skips the WAL.
            with pg.transaction():
                pg.execute(f"DROP TABLE IF EXISTS {qi(name)}")
                pg.execute(f"CREATE TABLE {qi(name)} ({', '.join(ddl)})")
                with pg.cursor() as cur, cur.copy(f"COPY {qi(name)} FROM STDIN (FORMAT csv)") as cp, open(csv, "rb") as f:
                    while chunk := f.read(1 << 20):
                        cp.write(chunk)
            copy_s += time.perf_counter() - t
            os.remove(csv)
            rows[name] = pg.execute(f"SELECT count(*) FROM {qi(name)}").fetchone()[0]
            log(f"  loaded {name}: {rows[name]} rows")
        t = time.perf_counter()
        pg.execute("CREATE INDEX ON fact_transaction (customer_id, transaction_ts DESC)")
        index_s = time.perf_counter() - t
        t = time.perf_counter()
        pg.execute("VACUUM (ANALYZE)")
        vacuum_s = time.perf_counter() - t
        size = pg.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
    total = copy_s + index_s + vacuum_s
    print(
        f"PostgreSQL load of {len(rows)} tables ({rows.get('fact_transaction', 0):,} fact rows): "
        f"**{total:.1f} s** = COPY {copy_s:.1f} s + CREATE INDEX {index_s:.1f} s + VACUUM (ANALYZE) {vacuum_s:.1f} s; "
        f"{size} on disk. Not counted: DuckDB exporting the Delta tables to CSV, {export_s:.1f} s."
    )


# ---------------------------------------------------------------------------
# bench


def queries(top_country, date_from, date_to):
    """(label, SQL, uses the point-lookup customer, prepare) — the same SQL for both servers."""
    f = f"d.event_date >= DATE '{date_from}' AND d.event_date <= DATE '{date_to}' AND m.country = '{top_country}'"
    merchant_days = (
        "(SELECT d.event_date, d.merchant_id, m.name AS merchant_name, "
        "COALESCE(m.category, 'unknown') AS category, COALESCE(m.country, 'unknown') AS country, "
        "d.txn_count, d.amount_usd, d.fraud_count FROM int_merchant_daily d "
        f"LEFT JOIN dim_merchant m ON d.merchant_id = m.merchant_id WHERE {f}) AS md"
    )
    breakdown = lambda key, mart: (  # noqa: E731
        f"SELECT {key} AS name, CAST(revenue_usd AS DOUBLE PRECISION) AS revenue_usd, txn_count, fraud_count, "
        f"fraud_rate FROM {mart} ORDER BY revenue_usd DESC"
    )
    top = lambda order: (  # noqa: E731
        "SELECT merchant_id, merchant_name, category, country, CAST(revenue_usd AS DOUBLE PRECISION) AS revenue_usd, "
        f"txn_count, fraud_count, fraud_rate FROM merchant_analytics WHERE txn_count >= 5 ORDER BY {order} LIMIT 10"
    )
    return [
        ("panel: daily revenue & fraud (daily_sales_summary)",
         "SELECT CAST(event_date AS VARCHAR) AS day, txn_count, CAST(total_amount_usd AS DOUBLE PRECISION) AS revenue_usd, "
         "fraud_count, fraud_rate FROM daily_sales_summary ORDER BY event_date", False, False),
        ("panel: fraud by rule (fraud_by_rule)",
         "SELECT rule, SUM(hits) AS hits, CAST(SUM(amount_usd) AS DOUBLE PRECISION) AS amount_usd "
         "FROM fraud_by_rule GROUP BY rule ORDER BY hits DESC", False, False),
        ("panel: categories (category_analytics)", breakdown("category", "category_analytics"), False, False),
        ("panel: countries (country_analytics)", breakdown("country", "country_analytics"), False, False),
        ("panel: top 10 merchants by revenue (merchant_analytics)", top("revenue_usd DESC"), False, False),
        ("panel: top 10 merchants by fraud rate (merchant_analytics)", top("fraud_rate DESC, fraud_count DESC"), False, False),
        ("panel: top 10 risky customers (customer_kpis)",
         "SELECT customer_id, customer_name, home_country, txn_count, CAST(total_spend_usd AS DOUBLE PRECISION) AS total_spend_usd, "
         "fraud_count, fraud_rate, foreign_share FROM customer_kpis ORDER BY fraud_count DESC, fraud_rate DESC LIMIT 10",
         False, False),
        (f"panel, filtered (7 days, country {top_country}): daily (int_merchant_daily ⋈ dim_merchant)",
         "SELECT CAST(event_date AS VARCHAR) AS day, SUM(txn_count) AS txn_count, "
         "CAST(SUM(amount_usd) AS DOUBLE PRECISION) AS revenue_usd, SUM(fraud_count) AS fraud_count, "
         f"CAST(SUM(fraud_count) AS DOUBLE PRECISION) / SUM(txn_count) AS fraud_rate FROM {merchant_days} "
         "GROUP BY event_date ORDER BY event_date", False, False),
        (f"panel, filtered (7 days, country {top_country}): top 10 merchants",
         "SELECT merchant_id, merchant_name, category, country, revenue_usd, txn_count, fraud_count, "
         "CAST(fraud_count AS DOUBLE PRECISION) / txn_count AS fraud_rate FROM ( "
         "SELECT merchant_id, max(merchant_name) AS merchant_name, max(category) AS category, "
         "max(country) AS country, CAST(SUM(amount_usd) AS DOUBLE PRECISION) AS revenue_usd, "
         f"SUM(txn_count) AS txn_count, SUM(fraud_count) AS fraud_count FROM {merchant_days} "
         "GROUP BY merchant_id) AS t WHERE txn_count >= 5 ORDER BY revenue_usd DESC LIMIT 10", False, False),
        ("fact: GROUP BY event_date, merchant_id",
         "SELECT event_date, merchant_id, count(*), sum(amount_usd) FROM fact_transaction "
         "GROUP BY event_date, merchant_id", False, False),
        ("fact: point lookup, 100 newest of one customer (parameter)",
         "SELECT * FROM fact_transaction WHERE customer_id = %s ORDER BY transaction_ts DESC LIMIT 100", True, False),
        ("fact: same point lookup, prepared statement",
         "SELECT * FROM fact_transaction WHERE customer_id = %s ORDER BY transaction_ts DESC LIMIT 100", True, True),
    ]


def connect(dsn):
    # No automatic server-side prepare: every run plans its query, on both
    # servers, except where a query asks for prepare=True. (A threshold of
    # None would disable prepare=True as well: psycopg then never prepares.)
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=10**9)


def reconnect(conns, name, dsn):
    """A fresh connection in place of a broken one (kept when that fails: the
    next queries report the error)."""
    if conns[name].closed or conns[name].broken:
        try:
            conns[name] = connect(dsn)
        except psycopg.Error:
            pass


def timed(conn, sql, params, prepare, runs):
    """(rows, median seconds) over `runs` runs after one warm-up."""
    times, n = [], None
    for i in range(runs + 1):
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql, params, prepare=prepare)
            got = cur.fetchall()
        dt = time.perf_counter() - t
        if i:
            times.append(dt)
        n = len(got)
    return n, statistics.median(times)


def transfer(conn, rows, runs):
    """(rows, median seconds until libpq holds the whole result, median seconds
    until every row was also converted to Python values)."""
    sql = f"SELECT * FROM fact_transaction LIMIT {rows}"
    wire, total, n = [], [], 0
    for i in range(runs + 1):
        t = time.perf_counter()
        with conn.cursor() as cur:
            cur.execute(sql)
            t_wire = time.perf_counter() - t
            n = 0
            while batch := cur.fetchmany(50_000):
                n += len(batch)
            del batch
        if i:
            wire.append(t_wire)
            total.append(time.perf_counter() - t)
    return n, statistics.median(wire), statistics.median(total)


def ratio(pg_s, tx_s):
    r = tx_s / pg_s
    if r <= 1:
        return f"{r:.2f} ({pg_s / tx_s:.1f}× faster)"
    return f"{r:.2f} ({r:.1f}× slower)"


def err_text(e):
    state = getattr(getattr(e, "diag", None), "sqlstate", None) or type(e).__name__
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"error {state}: {msg[:120]}".replace("|", "\\|")


def bench(pg_dsn, tx_dsn, runs, transfer_rows):
    servers = [("PostgreSQL 15", pg_dsn)] + ([("txpipe", tx_dsn)] if tx_dsn else [])
    with connect(pg_dsn) as pg:
        customer, n_cust = pg.execute(
            "SELECT customer_id, count(*) FROM fact_transaction GROUP BY customer_id "
            "ORDER BY count(*) DESC, customer_id LIMIT 1"
        ).fetchone()
        top_country = pg.execute(
            "SELECT country FROM country_analytics ORDER BY revenue_usd DESC, country LIMIT 1"
        ).fetchone()[0]
        last_day = pg.execute("SELECT max(event_date) FROM daily_sales_summary").fetchone()[0]
        fact_rows = pg.execute("SELECT count(*) FROM fact_transaction").fetchone()[0]
    import datetime

    first_day = last_day - datetime.timedelta(days=6)
    log(f"  point-lookup customer {customer} ({n_cust} transactions); filtered panels: {first_day}..{last_day}, {top_country}")
    conns = {name: connect(dsn) for name, dsn in servers}
    results = []  # (label, {server: (rows, seconds) | error text})
    try:
        for label, sql, param, prepare in queries(top_country, first_day, last_day):
            res = {}
            for name, _ in servers:
                try:
                    res[name] = timed(conns[name], sql, (customer,) if param else None, prepare, runs)
                except psycopg.Error as e:
                    res[name] = err_text(e)
                    reconnect(conns, name, dict(servers)[name])
                log(f"  {name:13} {label}: {res[name] if isinstance(res[name], str) else f'{res[name][1] * 1000:.1f} ms'}")
            results.append((label, res))
        moved = {}
        for name, _ in servers:
            try:
                moved[name] = transfer(conns[name], transfer_rows, runs)
            except psycopg.Error as e:
                moved[name] = err_text(e)
                reconnect(conns, name, dict(servers)[name])
            m = moved[name]
            log(f"  {name:13} transfer: {m if isinstance(m, str) else f'{m[0]} rows in {m[2]:.2f} s ({m[1]:.2f} s on the wire)'}")
    finally:
        for c in conns.values():
            c.close()

    tx = "txpipe" if tx_dsn else None
    print(f"fact_transaction: {fact_rows:,} rows. Point lookup: customer {customer} ({n_cust} transactions). "
          f"Median of {runs} runs after a warm-up, psycopg {psycopg.__version__} on the same machine.\n")
    print("| query | rows | PostgreSQL 15 median ms | txpipe median ms | txpipe / PostgreSQL |")
    print("|---|---:|---:|---:|---|")
    for label, res in results:
        p = res["PostgreSQL 15"]
        t = res.get(tx) if tx else None
        rows = p[0] if not isinstance(p, str) else (t[0] if t and not isinstance(t, str) else "")
        if t and not isinstance(t, str) and not isinstance(p, str) and t[0] != p[0]:
            rows = f"{p[0]} (txpipe: {t[0]}!)"
        cell = lambda r: r if isinstance(r, str) else f"{r[1] * 1000:.1f}"  # noqa: E731
        tcell = "–" if t is None else cell(t)
        rcell = ratio(p[1], t[1]) if t and not isinstance(t, str) and not isinstance(p, str) else "–"
        print(f"| {label} | {rows} | {cell(p)} | {tcell} | {rcell} |")

    print(f"\n| transfer: `SELECT * FROM fact_transaction LIMIT {transfer_rows}`, fetched whole | rows | "
          "received by libpq (s) | rows/s | + converted to Python rows (s) | rows/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _ in servers:
        m = moved[name]
        if isinstance(m, str):
            print(f"| {name} | | {m} | | | |")
        else:
            n, w, tot = m
            print(f"| {name} | {n} | {w:.2f} | {n / w:,.0f} | {tot:.2f} | {n / tot:,.0f} |")
    if tx and not isinstance(moved.get(tx), str) and not isinstance(moved["PostgreSQL 15"], str):
        p, t = moved["PostgreSQL 15"], moved[tx]
        print(f"\ntxpipe / PostgreSQL for the transfer: received {ratio(p[1], t[1])}, "
              f"with Python rows {ratio(p[2], t[2])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("lake")
    lp.add_argument("dsn")
    lp.add_argument("csv_dir")
    bp = sub.add_parser("bench")
    bp.add_argument("pg_dsn")
    bp.add_argument("tx_dsn", nargs="?")
    bp.add_argument("--runs", type=int, default=5)
    bp.add_argument("--transfer-rows", type=int, default=1_000_000)
    a = ap.parse_args()
    if a.cmd == "load":
        load(a.lake, a.dsn, a.csv_dir)
    else:
        bench(a.pg_dsn, a.tx_dsn, a.runs, a.transfer_rows)


if __name__ == "__main__":
    main()
