#!/usr/bin/env bash
# Incremental daily job vs a full run (issue 13), for BENCHMARKS.md.
#
# For lakes of 10, 30 and 90 days at ~330 000 transactions a day (3.3 M, 9.9 M and
# 29.7 M rows): land the days, build the models once, then land one new day
# (330 000 rows) plus 1 000 late rows spread over the five days before it, and time
#   * `txpipe models run`                 (incremental: only the touched dates)
#   * `txpipe models run --full-refresh`  (every model from the whole fact table)
#   * `txpipe run --no-compact`           (the daily job: models, data tests on
#                                          the touched dates, publish)
#   * `txpipe run --no-compact --full-refresh --full` (all of it, in full)
#   * DuckDB computing the two per-day building blocks (merchant x day,
#     customer x day) over the same Parquet, in full and for the touched dates only
#     (hand-written incremental SQL, hive partition pruning).
# Release build; stateless rules for the setup (the rules are not what is measured).
#
#   benches/incremental.sh [DAYS...]        (default: 10 30 90)
set -euo pipefail
cd "$(dirname "$0")/.."
TX="${TXPIPE:-$PWD/target/release/txpipe}"
PY="${TXPIPE_DELTA_PYTHON:-python3}"
WORK="${BENCH_DIR:-$PWD/target/txpipe-bench/incremental}"
PER_DAY=330000
DAYS=("$@")
[ "${#DAYS[@]}" -gt 0 ] || DAYS=(10 30 90)
RULES="$PWD/sql/rules_stateless.toml"

secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }

printf '| days | fact rows | models run full (s) | models run incremental (s) | speed-up | daily job full (s) | daily job incremental (s) | speed-up | DuckDB full building blocks (s) | DuckDB touched dates only (s) |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for D in "${DAYS[@]}"; do
  dir="$WORK/d$D"
  rm -rf "$dir"
  mkdir -p "$dir"
  lake="$dir/lake"
  "$TX" generate --quiet --count $((PER_DAY * D)) --days "$D" --start 2026-01-01 --seed 1 --out "$dir/base"
  "$TX" seed --lake "$lake" --dir "$dir/base" >/dev/null
  "$TX" ingest --lake "$lake" --from-file "$dir/base/transactions.jsonl" --rules "$RULES" --quiet >/dev/null
  rm -f "$dir/base/transactions.jsonl"
  "$TX" models run --lake "$lake" >/dev/null
  new_day=$(date -u -d "2026-01-01 + $D days" +%F)
  late_start=$(date -u -d "2026-01-01 + $((D - 5)) days" +%F)
  "$TX" generate --quiet --count "$PER_DAY" --days 1 --start "$new_day" --seed 2 --out "$dir/new"
  "$TX" generate --quiet --count 1000 --days 5 --start "$late_start" --seed 3 --out "$dir/late"
  "$TX" ingest --lake "$lake" --from-file "$dir/new/transactions.jsonl" --rules "$RULES" --quiet >/dev/null
  "$TX" ingest --lake "$lake" --from-file "$dir/late/transactions.jsonl" --rules "$RULES" --quiet >/dev/null
  # Copy the lake so both runs start from the same state.
  for copy in lake-full lake-run lake-run-full; do cp -r "$lake" "$dir/$copy"; done
  inc=$(secs "$TX" models run --lake "$lake")
  full=$(secs "$TX" models run --lake "$dir/lake-full" --full-refresh)
  run_inc=$(secs "$TX" run --lake "$dir/lake-run" --no-compact --retries 0)
  run_full=$(secs "$TX" run --lake "$dir/lake-run-full" --no-compact --retries 0 --full-refresh --full)
  rows=$("$PY" -c "import duckdb; print(duckdb.sql(\"SELECT count(*) FROM read_parquet('$lake/fact_transaction/event_date=*/*.parquet')\").fetchall()[0][0])")
  read -r dfull dinc < <("$PY" - "$lake" "$late_start" "$new_day" <<'PY'
import sys, time, duckdb
lake, late_start, new_day = sys.argv[1:]
src = f"read_parquet('{lake}/fact_transaction/event_date=*/*.parquet', hive_partitioning = true)"
def blocks(where):
    con = duckdb.connect()
    t = time.perf_counter()
    for key in ("merchant_id", "customer_id"):
        con.sql(f"""CREATE OR REPLACE TABLE b_{key} AS
            SELECT event_date, {key}, COUNT(*) AS txn_count, SUM(amount_usd) AS amount_usd,
                   SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count
            FROM {src} {where} GROUP BY ALL""")
    return time.perf_counter() - t
full = blocks("")
inc = blocks(f"WHERE event_date BETWEEN DATE '{late_start}' AND DATE '{new_day}'")
print(f"{full:.3f} {inc:.3f}")
PY
)
  printf '| %s | %s | %.2f | %.2f | %.1fx | %.2f | %.2f | %.1fx | %s | %s |\n' "$D" "$rows" "$full" "$inc" "$(echo "$full / $inc" | bc -l)" \
    "$run_full" "$run_inc" "$(echo "$run_full / $run_inc" | bc -l)" "$dfull" "$dinc"
  [ -n "${KEEP:-}" ] || rm -rf "$dir"
done
