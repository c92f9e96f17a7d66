#!/usr/bin/env bash
# The test command (README "Run the tests"). On a fresh Debian machine it installs
# and starts everything the tests need, skipping what is already there:
#   * DuckDB, pyarrow and confluent-kafka from PyPI (independent readers/clients),
#     and a venv with the Delta readers (DuckDB 1.5.5 + delta extension,
#     Python deltalake, polars);
#   * Debian's chromium (headless dashboard test), psql, pgjdbc and a JDK (the
#     Postgres endpoint's clients) and, when missing, the OpenSSL headers
#     librdkafka's TLS/SASL build needs (libssl-dev, pkg-config), with apt-get;
#   * Tansu, an Apache-2.0 Kafka-compatible broker, via `cargo install` (~9 min once,
#     kept in ~/.cache/txpipe-tools), started on 127.0.0.1 with SQLite storage;
#   * moto's S3 server (PyPI moto[s3], flask, flask-cors; it honours the
#     conditional puts Delta commits rely on), started on 127.0.0.1 with a bucket
#     for the S3 lake tests;
# then runs every unit, property, integration and doc test on a debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
TOOLS="${TXPIPE_TOOLS:-$HOME/.cache/txpipe-tools}"

log() { printf '\n== %s\n' "$*"; }

# Tansu's build is the longest install: it runs in the background while the
# downloads below and this workspace's build proceed, and competes with that
# build for the same cores. It is built with the SQLite storage only (the
# tests' broker) and at opt-level 1: a test broker needs no more, and the
# build takes 27 % less CPU than at release's opt-level 3 (21.7 against 29.8
# CPU-minutes, measured alone).
TANSU_PID=""
if [ ! -x "$TOOLS/bin/tansu" ]; then
  log "installing the Tansu broker into $TOOLS (cargo install, once; in the background)"
  mkdir -p "$TOOLS"
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install tansu --locked --features libsql --root "$TOOLS" \
    >"$TOOLS/tansu-install.log" 2>&1 &
  TANSU_PID=$!
fi

python_deps=(duckdb pyarrow confluent-kafka "moto[s3]" flask flask-cors)
if ! python3 -c 'import duckdb, pyarrow, confluent_kafka, moto, flask, flask_cors' 2>/dev/null; then
  log "installing ${python_deps[*]} (pip)"
  python3 -m pip install --quiet --disable-pip-version-check "${python_deps[@]}"
fi

# Delta-aware readers in their own venv: DuckDB 1.5.5 with the PyPI delta
# extension (DuckDB 2.0's `INSTALL delta` downloads at run time), Python
# deltalake and polars; and the Postgres clients BI tools are built on
# (psycopg 3, SQLAlchemy, pandas) for the Postgres endpoint's tests.
DELTA_VENV="$TOOLS/delta-venv"
if ! "$DELTA_VENV/bin/python" -c 'import duckdb, deltalake, polars, duckdb_extensions, psycopg, sqlalchemy, pandas' 2>/dev/null; then
  log "installing the Delta readers into $DELTA_VENV (pip)"
  mkdir -p "$TOOLS"
  python3 -m venv "$DELTA_VENV"
  "$DELTA_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "duckdb==1.5.5" "duckdb-extension-delta==1.5.5" "duckdb-extensions==1.5.5" deltalake polars pyarrow \
    "psycopg[binary]" sqlalchemy pandas
fi
export TXPIPE_DELTA_PYTHON="$DELTA_VENV/bin/python"

apt_packages=()
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openssl; } || apt_packages+=(pkg-config libssl-dev)
# Postgres clients for the Postgres endpoint's tests: psql, and pgjdbc (the
# driver inside Metabase, DBeaver and Tableau) with a JDK to run it; openssl
# makes the TLS test's certificate.
command -v psql >/dev/null 2>&1 || apt_packages+=(postgresql-client)
command -v java >/dev/null 2>&1 || apt_packages+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || apt_packages+=(libpostgresql-jdbc-java)
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
if [ "${#apt_packages[@]}" -gt 0 ]; then
  log "installing Debian's ${apt_packages[*]} (apt-get)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi


# A clean clone builds everything once: incremental compilation's caches only
# cost time there (CI sets CI=true; a developer's reruns keep them).
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"; fi

log "building the workspace's tests (debug)"
cargo test --workspace --locked --no-run "$@"

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/txpipe-tests.XXXXXX")"
BROKER_PID=""
S3_PID=""
cleanup() {
  for pid in "$BROKER_PID" "$S3_PID"; do
    if [ -n "$pid" ]; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

# An S3 endpoint on loopback for the S3 lake tests: moto's server, one bucket.
S3_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log "starting moto's S3 server on 127.0.0.1:$S3_PORT"
python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$WORK_DIR/s3.log" 2>&1 &
S3_PID=$!
export TXPIPE_TEST_S3_BUCKET="txpipe-test"
s3_ready=0
for _ in $(seq 1 120); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$S3_PORT/$TXPIPE_TEST_S3_BUCKET', method='PUT'), timeout=1)" 2>/dev/null; then s3_ready=1; break; fi
  if ! kill -0 "$S3_PID" 2>/dev/null; then cat "$WORK_DIR/s3.log"; echo "S3 server died" >&2; exit 1; fi
  sleep 0.5
done
if [ "$s3_ready" -ne 1 ]; then cat "$WORK_DIR/s3.log"; echo "S3 server did not start" >&2; exit 1; fi
# object_store reads these (a test key pair moto accepts; nothing secret).
export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing

if [ -n "$TANSU_PID" ]; then
  log "waiting for the Tansu install"
  if ! wait "$TANSU_PID"; then
    tail -n 40 "$TOOLS/tansu-install.log"
    echo "installing Tansu failed" >&2
    exit 1
  fi
fi

# A free loopback port for this run's broker.
PORT="${TXPIPE_TEST_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
log "starting Tansu on 127.0.0.1:$PORT (storage $WORK_DIR/tansu.db)"
(
  cd "$WORK_DIR"
  exec "$TOOLS/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "sqlite://tansu.db"
) >"$WORK_DIR/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 120); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$PORT),0.5)" 2>/dev/null; then break; fi
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then cat "$WORK_DIR/broker.log"; echo "broker died" >&2; exit 1; fi
  sleep 0.5
done
export TXPIPE_TEST_BROKERS="127.0.0.1:$PORT"
# Tests that kill and restart a broker, or put TLS in front of one, start their own.
export TXPIPE_TEST_TANSU="$TOOLS/bin/tansu"

# Tansu (started first, ~30 CPU-minutes) finishes before this workspace's
# build, so the tests run in one pass once both are there.
log "cargo test (debug build, all crates, doctests and examples)"
status=0
# A clean pass takes 10-15 minutes here; a test that hangs is killed with
# the whole run after 40 (its name is the one "running for over 60 seconds"
# without an "ok" above) instead of eating CI's limit.
timeout --kill-after=30s 40m cargo test --workspace --locked "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  log "cargo test did not end within 40 minutes: a test hangs (see above)"
fi
if [ "$status" -ne 0 ]; then
  log "broker log (last 40 lines)"
  tail -n 40 "$WORK_DIR/broker.log" || true
fi
exit "$status"
