#!/usr/bin/env bash
# txpipe's Postgres wire endpoint (`txpipe serve --pg-addr`) vs a real PostgreSQL 15
# holding the same data, for BENCHMARKS.md.
#
# For each size (transactions over 30 days, default 1 000 000 and 10 000 000):
#   * build a lake with the release binary: generate, seed, ingest, `txpipe run`
#     (the marts), then `txpipe compact --table fact_transaction --zorder-by customer_id`
#     (the lake's counterpart of PostgreSQL's index below: each day's file sorted by
#     customer, so min/max statistics and page indexes skip the rest); kept in
#     target/txpipe-bench/pg/nSIZE and reused by later runs (REBUILD=1 builds it again; the input JSON lines are deleted once ingested);
#   * start PostgreSQL 15 (/usr/lib/postgresql/15/bin, PGBIN to change) on
#     127.0.0.1 with a fresh data dir: shared_buffers=1GB, work_mem=64MB,
#     maintenance_work_mem=1GB, max_parallel_workers_per_gather=2, effective_cache_size=8GB,
#     C locale, JIT left at its default (on). fsync=off, synchronous_commit=off,
#     full_page_writes=off and wal_level=minimal only speed up the load: queries are
#     measured, not durability;
#   * load every table txpipe serves into it: DuckDB's delta_scan of each Delta table
#     -> CSV -> COPY, with the types a Postgres user would choose (numeric(p,s),
#     timestamptz, date, text, boolean, double precision, bigint, text[], bytea),
#     then CREATE INDEX ON fact_transaction (customer_id, transaction_ts DESC) and
#     VACUUM (ANALYZE). The load time is reported on its own (the export is not in it);
#   * start `txpipe serve --pg-addr 127.0.0.1:0 --pg-lookup-cache 1024` on the same
#     lake (the lookups' cache of decoded blocks gets the 1 GiB PostgreSQL's
#     shared_buffers get; LOOKUP_CACHE to change, in MiB);
#   * run the same queries against both from one psycopg 3 client (benches/pg_bench.py):
#     the dashboard's panel queries over the marts (plain, and filtered to 7 days and
#     one country over int_merchant_daily joined to dim_merchant), a GROUP BY over the
#     fact table, the 100 newest transactions of the busiest customer (a psycopg
#     parameter: extended protocol; once unprepared, once as a prepared statement;
#     PostgreSQL uses its index, txpipe its Z-ordered files), and the transfer of
#     `SELECT * FROM fact_transaction LIMIT 1000000` to the client (text format).
#     One warm-up, then RUNS (5) timed runs; the median is reported. Queries without
#     parameters go over the simple protocol (psycopg's default), on both servers.
# Prints, per size, the load time and markdown tables; progress goes to stderr.
# Both servers are stopped on exit; the PostgreSQL data dir is deleted (KEEP=1 keeps it).
# Disk at 10 M: ~4 GB of JSON lines while ingesting, a ~1 GB lake, a few GB of CSV
# and PostgreSQL data while it runs.
#
#   TXPIPE_DELTA_PYTHON=~/.cache/txpipe-tools/delta-venv/bin/python benches/pg.sh [--pg-only] [SIZE...]
#
# --pg-only (or PG_ONLY=1) skips txpipe's endpoint: PostgreSQL only (a txpipe
# binary without --pg-addr still builds the lakes). Also: RUNS, TRANSFER_ROWS, BENCH_DIR,
# LOOKUP_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
TX="${TXPIPE:-$PWD/target/release/txpipe}"
PY="${TXPIPE_DELTA_PYTHON:-python3}"
WORK="${BENCH_DIR:-$PWD/target/txpipe-bench/pg}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
RUNS="${RUNS:-5}"
LOOKUP_CACHE="${LOOKUP_CACHE:-1024}"
TRANSFER_ROWS="${TRANSFER_ROWS:-1000000}"
BENCH_PY="$PWD/benches/pg_bench.py"
PG_ONLY="${PG_ONLY:-}"
SIZES=()
for a in "$@"; do
  case "$a" in
    --pg-only) PG_ONLY=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *[!0-9]*|'') echo "not a size: $a" >&2; exit 2 ;;
    *) SIZES+=("$a") ;;
  esac
done
[ "${#SIZES[@]}" -gt 0 ] || SIZES=(1000000 10000000)

"$PY" -c 'import duckdb, psycopg, duckdb_extensions' 2>/dev/null || {
  echo "$PY lacks duckdb, duckdb_extensions (delta) or psycopg 3;" \
    "set TXPIPE_DELTA_PYTHON=~/.cache/txpipe-tools/delta-venv/bin/python" >&2
  exit 1
}
[ -x "$PGBIN/postgres" ] || { echo "no PostgreSQL at $PGBIN (apt-get install postgresql)" >&2; exit 1; }
[ -n "$PG_ONLY" ] || "$TX" serve --help 2>/dev/null | grep -- '--pg-addr' >/dev/null || {
  echo "$TX serve has no --pg-addr: build it (cargo build --release) or pass --pg-only" >&2
  exit 1
}

log() { echo "[pg.sh] $*" >&2; }
# PostgreSQL refuses to run as root: run its tools as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

PGDATA_DIR=""
TX_PID=""
stop_txpipe() {
  if [ -n "$TX_PID" ]; then
    kill -TERM "$TX_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$TX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TX_PID" 2>/dev/null || true
    wait "$TX_PID" 2>/dev/null || true
    TX_PID=""
  fi
}
stop_pg() {
  if [ -n "$PGDATA_DIR" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 ||
      as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$PGDATA_DIR"
    PGDATA_DIR=""
  fi
}
CSV_DIR=""
cleanup() { stop_txpipe; stop_pg; [ -z "$CSV_DIR" ] || rm -rf "$CSV_DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

build_lake() { # N DIR
  local n=$1 dir=$2 t0
  if [ -z "${REBUILD:-}" ] && [ -f "$dir/lake.done" ]; then
    log "n=$n: reusing the lake in $dir/lake"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  t0=$(date +%s)
  log "n=$n: building the lake in $dir/lake"
  {
    "$TX" generate --quiet --count "$n" --days 30 --start 2026-11-01 --seed 1 --out "$dir/in"
    "$TX" seed --lake "$dir/lake" --dir "$dir/in"
    "$TX" ingest --lake "$dir/lake" --from-file "$dir/in/transactions.jsonl" --quiet
    rm -f "$dir/in/transactions.jsonl"
    "$TX" run --lake "$dir/lake" --retries 0
    "$TX" compact --lake "$dir/lake" --table fact_transaction --zorder-by customer_id
  } >"$dir/build.log" 2>&1 || { tail -n 40 "$dir/build.log" >&2; log "building the lake failed (log: $dir/build.log)"; exit 1; }
  touch "$dir/lake.done"
  log "n=$n: lake built in $(( $(date +%s) - t0 )) s"
}

start_pg() { # DIR -> sets PGDATA_DIR, PG_PORT
  local data="$1/pgdata"
  rm -rf "$data"
  mkdir -p "$data"
  chmod 700 "$data"
  [ "$(id -u)" != 0 ] || chown postgres:postgres "$data"
  PGDATA_DIR="$data"
  as_pg "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C >"$1/initdb.log" 2>&1 ||
    { cat "$1/initdb.log" >&2; exit 1; }
  PG_PORT=$(free_port)
  as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF
# benches/pg.sh
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
shared_buffers = 1GB
work_mem = 64MB
maintenance_work_mem = 1GB
effective_cache_size = 8GB
max_parallel_workers_per_gather = 2
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 8GB
EOF
  as_pg "$PGBIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 120 start >/dev/null ||
    { cat "$data/server.log" >&2; exit 1; }
  log "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT ($data)"
}

start_txpipe() { # DIR -> sets TX_PID, TX_PG_PORT
  local out="$1/serve.log"
  : >"$out"
  "$TX" serve --lake "$1/lake" --addr 127.0.0.1:0 --pg-addr 127.0.0.1:0 \
    --pg-lookup-cache "$LOOKUP_CACHE" >"$out" 2>&1 &
  TX_PID=$!
  TX_PG_PORT=""
  for _ in $(seq 600); do
    # "postgres on 127.0.0.1:PGPORT (database txpipe, no password): psql -h ... -p PGPORT -d txpipe"
    TX_PG_PORT=$(sed -n 's/^postgres on [^ ]*:\([0-9][0-9]*\) .*/\1/p' "$out")
    [ -z "$TX_PG_PORT" ] || break
    kill -0 "$TX_PID" 2>/dev/null || { cat "$out" >&2; log "txpipe serve exited"; TX_PID=""; exit 1; }
    sleep 0.1
  done
  [ -n "$TX_PG_PORT" ] || { cat "$out" >&2; log "txpipe serve printed no Postgres port"; exit 1; }
  log "txpipe serve (pid $TX_PID) Postgres endpoint on 127.0.0.1:$TX_PG_PORT"
}

mkdir -p "$WORK"
log "work dir $WORK; $(df -h --output=avail "$WORK" | tail -n 1 | tr -d ' ') free"
for N in "${SIZES[@]}"; do
  dir="$WORK/n$N"
  build_lake "$N" "$dir"
  start_pg "$dir"
  pg_dsn="host=127.0.0.1 port=$PG_PORT dbname=postgres user=postgres"
  printf '\n### %s transactions\n\n' "$N"
  log "n=$N: loading PostgreSQL"
  CSV_DIR="$dir/csv"
  "$PY" "$BENCH_PY" load "$dir/lake" "$pg_dsn" "$CSV_DIR"
  rm -rf "$CSV_DIR"
  printf '\n'
  tx_dsn=()
  if [ -z "$PG_ONLY" ]; then
    start_txpipe "$dir"
    tx_dsn=("host=127.0.0.1 port=$TX_PG_PORT dbname=txpipe user=txpipe")
  fi
  log "n=$N: querying"
  "$PY" "$BENCH_PY" bench --runs "$RUNS" --transfer-rows "$TRANSFER_ROWS" "$pg_dsn" "${tx_dsn[@]}"
  stop_txpipe
  stop_pg
done
