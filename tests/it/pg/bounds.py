"""Read-only refusals, limits, auth and TLS of txpipe's Postgres endpoint.

usage: bounds.py MODE HOST PORT [ARGS...]

Every mode prints one JSON object of what it saw and exits non-zero with a
message when the server answered otherwise. After a failing statement each
mode checks that the same or a new connection still answers `SELECT 1`.
"""
import json
import socket
import struct
import sys
import threading
import time

import psycopg

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
args = sys.argv[4:]
out = {"mode": mode}
# A runaway: 8e9+ rows to filter (a bare count(*) of a cross join is
# answered from statistics without running it).
BIG = (
    "SELECT count(*) FROM fact_transaction a CROSS JOIN fact_transaction b "
    "CROSS JOIN fact_transaction c WHERE a.amount_usd + b.amount_usd + c.amount_usd > 0"
)


def fail(msg):
    print(json.dumps(out, default=str))
    sys.exit("UNEXPECTED: " + msg)


def connect(**kw):
    params = dict(host=host, port=port, dbname="txpipe", user="txpipe", autocommit=True)
    params.update(kw)
    return psycopg.connect(**params)


def still_answers(conn=None):
    c = conn or connect()
    if c.execute("SELECT 1").fetchone()[0] != 1:
        fail("SELECT 1 after the failure")


if mode == "readonly":
    refused = {}
    with connect() as conn:
        for sql in [
            "INSERT INTO fact_transaction (transaction_id) VALUES ('x')",
            "UPDATE fact_transaction SET is_fraud = true",
            "DELETE FROM fact_transaction",
            "CREATE TABLE evil (a int)",
            "DROP TABLE fact_transaction",
            "COPY (SELECT 1) TO '/tmp/txpipe-pg-evil.csv'",
            "CREATE EXTERNAL TABLE evil STORED AS PARQUET LOCATION '/tmp/evil'",
            "TRUNCATE fact_transaction",
        ]:
            try:
                conn.execute(sql)
                fail(f"{sql} was not refused")
            except psycopg.Error as e:
                refused[sql.split()[0] + " " + sql.split()[1]] = [e.sqlstate, str(e).strip()]
                if e.sqlstate != "25006":
                    fail(f"{sql}: SQLSTATE {e.sqlstate}, expected 25006: {e}")
        # The extended protocol too (parameters force it).
        try:
            conn.execute("DELETE FROM fact_transaction WHERE customer_id = %s", ("x",))
            fail("parameterised DELETE was not refused")
        except psycopg.Error as e:
            refused["DELETE (extended)"] = [e.sqlstate, str(e).strip()]
            if e.sqlstate != "25006":
                fail(f"extended DELETE: {e.sqlstate}")
        still_answers(conn)
    out["refused"] = refused

elif mode == "timeout":
    with connect() as conn:
        t0 = time.monotonic()
        try:
            conn.execute(BIG).fetchall()
            fail("the cross join finished")
        except psycopg.errors.QueryCanceled as e:
            out["sqlstate"], out["message"] = e.sqlstate, str(e).strip()
        out["seconds"] = round(time.monotonic() - t0, 2)
        still_answers(conn)
        # A client's own, shorter statement_timeout is honoured too.
        conn.execute("SET statement_timeout = 500")
        t0 = time.monotonic()
        try:
            conn.execute(BIG).fetchall()
            fail("the cross join finished under SET statement_timeout")
        except psycopg.errors.QueryCanceled as e:
            out["client_timeout_seconds"] = round(time.monotonic() - t0, 2)
        still_answers(conn)

elif mode == "cancel":
    with connect() as conn:
        timer = threading.Timer(1.0, conn.cancel_safe)
        timer.start()
        t0 = time.monotonic()
        try:
            conn.execute(BIG).fetchall()
            fail("the cross join finished")
        except psycopg.errors.QueryCanceled as e:
            out["sqlstate"], out["message"] = e.sqlstate, str(e).strip()
        out["seconds"] = round(time.monotonic() - t0, 2)
        still_answers(conn)

elif mode == "memory":
    with connect() as conn:
        try:
            # One array of 4e6+ strings (~150 MB) must be held whole; array_agg
            # cannot spill (sorts and group-bys spill to disk instead).
            conn.execute(
                "SELECT cardinality(array_agg(a.transaction_id)) "
                "FROM fact_transaction a CROSS JOIN fact_transaction b"
            ).fetchall()
            fail("the cross join's build side fit in the memory limit")
        except psycopg.Error as e:
            out["sqlstate"], out["message"] = e.sqlstate, str(e).strip()[:300]
            if e.sqlstate != "53200" or "Resources exhausted" not in str(e):
                fail(f"expected 53200 out_of_memory, got {e.sqlstate}: {e}")
        still_answers(conn)

elif mode == "disconnect":
    # Raw protocol: start a query with a large result, read a little, hang up.
    s = socket.create_connection((host, port), timeout=10)
    body = b"user\0txpipe\0database\0txpipe\0\0"
    s.sendall(struct.pack("!ii", 8 + len(body), 196608) + body)
    buf = b""
    while b"Z\0\0\0\x05" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            fail("closed during startup")
        buf += chunk
    q = b"SELECT a.transaction_id, b.transaction_id FROM fact_transaction a CROSS JOIN fact_transaction b\0"
    s.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
    got = 0
    while got < 256 * 1024:
        chunk = s.recv(65536)
        if not chunk:
            fail("the server ended the result early")
        got += len(chunk)
    s.close()
    out["read_bytes_before_hangup"] = got
    still_answers()

elif mode == "malformed":
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"\x00\x00\x00\x10GARBAGEGARBAGE!!" + b"\xff" * 64)
    closed = False
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            closed = True
            break
        if not chunk:
            closed = True
            break
    if not closed:
        fail("the server kept a connection that sent garbage")
    out["closed"] = True
    still_answers()

elif mode == "maxconn":
    limit = int(args[0])
    held = [connect() for _ in range(limit)]
    try:
        connect()
        fail(f"connection {limit + 1} was admitted")
    except psycopg.OperationalError as e:
        out["refused"] = str(e).strip()
        if "too many clients" not in str(e):
            fail(f"expected 'too many clients', got {e}")
    held.pop().close()
    # A freed slot is usable again (the server releases it when the client goes).
    deadline = time.monotonic() + 10
    while True:
        try:
            still_answers()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                fail("a freed slot was not reusable")
            time.sleep(0.1)
    for c in held:
        c.close()

elif mode == "auth":
    user, password, cert = args[0], args[1], args[2]
    results = {}
    for label, kw in [
        ("no password", dict(user=user, sslmode="disable")),
        ("wrong password", dict(user=user, password="not-the-password", sslmode="disable")),
        ("unknown user", dict(user="mallory", password=password, sslmode="disable")),
    ]:
        try:
            connect(**kw)
            fail(f"{label} was admitted")
        except psycopg.OperationalError as e:
            results[label] = str(e).strip()
    for label in ("wrong password", "unknown user"):
        if "28P01" not in results[label] and "password authentication failed" not in results[label].lower():
            fail(f"{label}: expected 28P01, got {results[label]}")
    with connect(user=user, password=password, sslmode="disable") as c:
        results["right password"] = c.execute("SELECT count(*) FROM dim_merchant").fetchone()[0]
    with connect(user=user, password=password, sslmode="verify-full", sslrootcert=cert, host="localhost") as c:
        results["tls"] = [c.pgconn.ssl_in_use]
        if not c.pgconn.ssl_in_use:
            fail("sslmode=verify-full connected without TLS")
        still_answers(c)
    out["results"] = results

else:
    sys.exit(f"unknown mode {mode}")

print(json.dumps(out, default=str))
