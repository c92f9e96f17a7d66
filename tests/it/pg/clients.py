"""Python's Postgres clients against txpipe's Postgres endpoint.

usage: clients.py HOST PORT LAKE_DIR MART [MART ...]

* psycopg 3: types of the fact table's values (Decimal with scale 2,
  timezone-aware datetimes, lists for text[], bools, dates, NULLs);
* SQLAlchemy's inspector (what Superset and pandas see): table names and
  column types;
* pandas.read_sql of every mart == the same mart read by pyarrow (through the
  Delta log, with the deltalake package);
* per-day counts and money sums of the fact table == DuckDB's delta_scan of
  the same lake, to the cent.

Prints JSON with what it saw; exits non-zero with a message on a mismatch.
"""
import datetime
import decimal
import json
import math
import sys

import deltalake
import duckdb
import pandas as pd
import psycopg
import sqlalchemy as sa
from duckdb_extensions import import_extension

host, port, lake = sys.argv[1], int(sys.argv[2]), sys.argv[3]
marts = sys.argv[4:]
out = {}


def fail(msg):
    print(json.dumps(out, default=str))
    sys.exit("MISMATCH: " + msg)


dsn = f"host={host} port={port} dbname=txpipe user=txpipe"
with psycopg.connect(dsn, autocommit=True) as conn:
    row = conn.execute(
        "SELECT transaction_id, amount_usd, transaction_ts, fraud_reasons, is_fraud, "
        "latitude, device_id, event_date FROM fact_transaction "
        "WHERE cardinality(fraud_reasons) > 0 ORDER BY transaction_id LIMIT 1"
    ).fetchone()
    if row is None:
        fail("no flagged row in fact_transaction")
    tid, amount, ts, reasons, is_fraud, lat, device, event_date = row
    out["psycopg_types"] = [type(v).__name__ for v in row]
    if not isinstance(amount, decimal.Decimal) or amount.as_tuple().exponent != -2:
        fail(f"amount_usd should be a Decimal with scale 2, got {amount!r}")
    if not isinstance(ts, datetime.datetime) or ts.utcoffset() is None:
        fail(f"transaction_ts should be timezone-aware, got {ts!r}")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        fail(f"fraud_reasons should be a list of str, got {reasons!r}")
    if not isinstance(is_fraud, bool):
        fail(f"is_fraud should be bool, got {is_fraud!r}")
    if not isinstance(event_date, datetime.date) or isinstance(event_date, datetime.datetime):
        fail(f"event_date should be a date, got {event_date!r}")
    nulls = conn.execute(
        "SELECT count(*) FROM fact_transaction WHERE device_id IS NULL"
    ).fetchone()[0]
    out["null_device_ids"] = nulls

    # Parameters over the extended protocol, prepared server-side.
    cust = conn.execute("SELECT customer_id FROM fact_transaction LIMIT 1").fetchone()[0]
    for _ in range(3):
        n = conn.execute(
            "SELECT count(*) FROM fact_transaction WHERE customer_id = %s",
            (cust,),
            prepare=True,
        ).fetchone()[0]
    out["prepared_count"] = n

    # The newest transactions of the busiest customer: the lookup shape the
    # endpoint answers from its customer index, over both protocols, text
    # and binary results, unprepared and prepared, equal to the same rows
    # through DataFusion's scan (the `AND TRUE` keeps it off the index).
    busiest = conn.execute(
        "SELECT customer_id FROM fact_transaction GROUP BY customer_id "
        "ORDER BY count(*) DESC, customer_id LIMIT 1"
    ).fetchone()[0]
    lookup = ("SELECT * FROM fact_transaction WHERE customer_id = {} "
              "ORDER BY transaction_ts DESC LIMIT 50")
    scanned = conn.execute(
        "SELECT * FROM fact_transaction WHERE customer_id = %s AND TRUE "
        "ORDER BY transaction_ts DESC LIMIT 50", (busiest,)
    ).fetchall()
    if not scanned:
        fail("the busiest customer has no rows")

    def same(got, how):
        if sorted(map(repr, got)) != sorted(map(repr, scanned)):
            fail(f"point lookup ({how}) differs from the scan: {got[:1]} vs {scanned[:1]}")
        if [r[1] for r in got] != [r[1] for r in scanned]:
            fail(f"point lookup ({how}) is not newest first")

    same(conn.execute(lookup.format("%s"), (busiest,)).fetchall(), "parameter")
    for _ in range(3):
        got = conn.execute(lookup.format("%s"), (busiest,), prepare=True).fetchall()
    same(got, "prepared")
    with conn.cursor(binary=True) as cur:
        same(cur.execute(lookup.format("%s"), (busiest,)).fetchall(), "binary results")
    simple = lookup.format("'" + busiest + "'")
    with psycopg.ClientCursor(conn) as cur:
        same(cur.execute(simple).fetchall(), "simple protocol")
    out["point_lookup_rows"] = len(scanned)

    # Exact to the cent against DuckDB reading the same lake.
    ours = conn.execute(
        "SELECT CAST(event_date AS VARCHAR), count(*), sum(amount_usd), sum(amount) "
        "FROM fact_transaction GROUP BY 1 ORDER BY 1"
    ).fetchall()

con = duckdb.connect()
import_extension("delta", con=con)
theirs = con.execute(
    f"SELECT CAST(event_date AS VARCHAR), count(*), sum(amount_usd), sum(amount) "
    f"FROM delta_scan('{lake}/fact_transaction') GROUP BY 1 ORDER BY 1"
).fetchall()
ours = [(d, int(c), decimal.Decimal(a), decimal.Decimal(b)) for d, c, a, b in ours]
theirs = [(d, int(c), decimal.Decimal(a), decimal.Decimal(b)) for d, c, a, b in theirs]
if ours != theirs:
    fail(f"per-day sums differ from DuckDB: {ours[:3]} vs {theirs[:3]}")
out["days_equal_to_duckdb"] = len(ours)
out["total_usd"] = str(sum(r[2] for r in ours))

engine = sa.create_engine(f"postgresql+psycopg://txpipe@{host}:{port}/txpipe")
insp = sa.inspect(engine)
names = set(insp.get_table_names())
out["sqlalchemy_tables"] = sorted(names)
for t in ["fact_transaction", "quarantine", "dim_customer", "dim_merchant", "fx_rate", *marts]:
    if t not in names:
        fail(f"SQLAlchemy's get_table_names misses {t}")
cols = {c["name"]: c["type"] for c in insp.get_columns("fact_transaction")}
out["sqlalchemy_columns"] = {k: str(v) for k, v in cols.items()}
expect = {
    "amount_usd": sa.types.Numeric,
    "transaction_ts": sa.types.DateTime,
    "fraud_reasons": sa.types.ARRAY,
    "is_fraud": sa.types.Boolean,
    "event_date": sa.types.Date,
    "latitude": sa.types.Float,
}
for name, kind in expect.items():
    if not isinstance(cols.get(name), kind):
        fail(f"SQLAlchemy sees {name} as {cols.get(name)!r}, expected {kind.__name__}")
if not getattr(cols["transaction_ts"], "timezone", False):
    fail("transaction_ts should be TIMESTAMP WITH TIME ZONE")
if getattr(cols["amount_usd"], "scale", None) != 2:
    fail(f"amount_usd should be NUMERIC(…, 2), got {cols['amount_usd']!r}")


def norm(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if isinstance(v, list):
        return tuple(norm(x) for x in v)
    if isinstance(v, decimal.Decimal):
        return str(v.quantize(decimal.Decimal("0.01")) if v.as_tuple().exponent == -2 else v)
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, pd.Timestamp):
        v = v.to_pydatetime()
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return v.astimezone(datetime.timezone.utc).isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    if hasattr(v, "item"):
        return norm(v.item())
    return v


def rows(df):
    cols = sorted(df.columns)
    return sorted(
        (tuple(norm(r[c]) for c in cols) for r in df.to_dict("records")), key=repr
    )


compared = {}
for m in marts:
    via_pg = pd.read_sql(f'SELECT * FROM "{m}"', engine, coerce_float=False)
    via_arrow = deltalake.DeltaTable(f"{lake}/marts/{m}").to_pyarrow_table().to_pandas()
    if sorted(via_pg.columns) != sorted(via_arrow.columns):
        fail(f"{m}: columns {sorted(via_pg.columns)} vs {sorted(via_arrow.columns)}")
    a, b = rows(via_pg), rows(via_arrow)
    if a != b:
        diff = [x for x in a if x not in b][:2]
        fail(f"{m}: pandas.read_sql differs from pyarrow ({len(a)} vs {len(b)} rows), e.g. {diff}")
    compared[m] = len(a)
out["marts_equal"] = compared
print(json.dumps(out, default=str))
