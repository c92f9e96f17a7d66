#!/usr/bin/env python3
"""Delta lake benchmarks for BENCHMARKS.md (issue 10), side by side in one run.

1. The same rows landed as many micro-batches (one Delta commit each) and as a
   few big batches: `txpipe models run` and `txpipe test` on both, then on the
   many-batch lake after `txpipe compact`; file counts.
2. Restart cost: `txpipe ingest` of an already-landed file ("nothing new") on
   lakes of different ages (number of commits).

Usage:
  python3 benches/delta_lake.py --txpipe target/release/txpipe \
      --rows 200000 --micro-rows 20 --restart-commits 10 1000 10000
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def run(cmd, **kw):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return dt, p.stdout + p.stderr


def data_files(lake, table):
    n = 0
    for root, _dirs, files in os.walk(os.path.join(lake, table)):
        if "_delta_log" in root:
            continue
        n += sum(1 for f in files if f.endswith(".parquet"))
    return n


def commits(lake, table="fact_transaction"):
    log = os.path.join(lake, table, "_delta_log")
    return sum(1 for f in os.listdir(log) if f.endswith(".json")) if os.path.isdir(log) else 0


def best(n, f):
    return min(f() for _ in range(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--txpipe", required=True)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--micro-lines", type=int, default=None, help="land only the first N lines as micro-batches")
    ap.add_argument("--micro-rows", type=int, default=20, help="rows per micro-batch of the many-commit lake")
    ap.add_argument("--restart-commits", type=int, nargs="*", default=[10, 1000, 10000])
    ap.add_argument("--runs", type=int, default=2, help="timed repetitions (best is reported)")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    tx = os.path.abspath(a.txpipe)
    work = a.work or tempfile.mkdtemp(prefix="txpipe-delta-bench-")
    gen = os.path.join(work, "gen")
    run([tx, "generate", "--count", str(a.rows), "--seed", "7", "--out", gen])
    src = os.path.join(gen, "transactions.jsonl")

    print(f"## {a.rows} rows: many micro-batches vs few (work dir {work})\n")
    lakes = {}
    lines = open(src).read().splitlines(keepends=True)
    if a.micro_lines:
        lines = lines[: a.micro_lines]
        src = os.path.join(work, "subset.jsonl")
        with open(src, "w") as f:
            f.writelines(lines)
    for name, batch in [("one-batch", 50_000), ("micro", a.micro_rows)]:
        lake = os.path.join(work, name)
        shutil.rmtree(lake, ignore_errors=True)
        run([tx, "seed", "--lake", lake, "--dir", gen])
        # --commit-rows 0: one commit per micro-batch, as a live topic at one
        # batch a second makes them (no backlog to group).
        dt, _ = run([tx, "ingest", "--lake", lake, "--from-file", src, "--batch-rows", str(batch),
                     "--commit-rows", "0", "--quiet"])
        lakes[name] = lake
        print(f"ingest {name} (--batch-rows {batch}): {dt:.1f} s, {commits(lake)} fact log entries, "
              f"{data_files(lake, 'fact_transaction')} fact files")

    def models(lake):
        return lambda: run([tx, "models", "run", "--lake", lake])[0]

    def tests(lake):
        return lambda: run([tx, "test", "--lake", lake])[0]

    rows = []
    for name in ["one-batch", "micro"]:
        lake = lakes[name]
        rows.append((name, data_files(lake, "fact_transaction"), best(a.runs, models(lake)), best(a.runs, tests(lake))))
    dt, out = run([tx, "compact", "--lake", lakes["micro"]])
    print(f"\ncompact of the micro-batch lake: {dt:.1f} s\n  " + out.strip().replace("\n", "\n  "))
    lake = lakes["micro"]
    # Compacted, not vacuumed: the small files are still on disk; the snapshot has the big ones.
    rows.append(("micro, compacted", data_files(lake, "fact_transaction"), best(a.runs, models(lake)), best(a.runs, tests(lake))))
    print("\n| lake | files on disk | models run (s) | test (s) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]:.2f} | {r[3]:.2f} |")

    print("\n## Restart (\"nothing new\") vs lake age\n")
    print("| fact commits | seconds (best of runs) |")
    print("|---:|---:|")
    for n in a.restart_commits:
        lake = os.path.join(work, f"age-{n}")
        shutil.rmtree(lake, ignore_errors=True)
        part = os.path.join(work, f"age-{n}.jsonl")
        with open(part, "w") as f:
            f.writelines(lines[: min(n, len(lines))])
        run([tx, "ingest", "--lake", lake, "--from-file", part, "--batch-rows", "1",
             "--commit-rows", "0", "--quiet"])
        t = best(a.runs + 1, lambda: run([tx, "ingest", "--lake", lake, "--from-file", part, "--quiet"])[0])
        print(f"| {commits(lake):,} | {t:.3f} |")


if __name__ == "__main__":
    main()
