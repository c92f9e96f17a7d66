#!/usr/bin/env python3
"""Kafka measurements for BENCHMARKS.md, against a running broker.

1. produce rate: `txpipe produce --count N` to a new 4-partition topic;
2. bare consume rate: `txpipe bench --kafka-bare` (a plain rdkafka consumer that
   reads every partition to its end and does nothing with the messages);
3. Kafka -> lake rate: `txpipe ingest --brokers ... --max-messages N` on the same topic;
4. produce -> committed latency: `txpipe ingest --batch-ms 1000 --metrics-addr ...`
   running while `txpipe produce --rate R` publishes; p50/p99 are read from the
   ingest's end-to-end latency histogram (Kafka message timestamp -> lake commit).

    python3 benches/kafka_bench.py --txpipe target/release/txpipe --brokers 127.0.0.1:9092
"""
import argparse
import re
import shutil
import subprocess
import sys
import time
import urllib.request


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout


def rate(pattern, text):
    m = re.search(pattern, text)
    if not m:
        sys.exit(f"no match for {pattern!r} in:\n{text}")
    return float(m.group(1))


def quantile(buckets, q):
    """Prometheus-style histogram_quantile over cumulative (le, count) pairs."""
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            within = (rank - prev_c) / max(c - prev_c, 1)
            return prev_le + (le - prev_le) * within
        prev_le, prev_c = le, c
    return prev_le


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--txpipe", required=True)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--count", type=int, default=500_000)
    ap.add_argument("--rate", type=int, default=5_000)
    ap.add_argument("--seconds", type=int, default=30)
    a = ap.parse_args()
    tag = str(int(time.time()))
    topic = f"bench-{tag}"
    tp = a.txpipe

    out = run([tp, "produce", "--brokers", a.brokers, "--topic", topic, "--count", str(a.count),
               "--partitions", "4", "--quiet"])
    produce = rate(r"\(([\d.]+) msgs/s", out)
    print(f"produce: {out.strip()}", file=sys.stderr)

    out = run([tp, "bench", "--kafka-bare", a.brokers, "--topic", topic])
    bare = rate(r"s: ([\d.]+) msgs/s", out)
    print(out.strip(), file=sys.stderr)

    lake = f"/tmp/txpipe-kafka-bench-{tag}"
    out = run([tp, "ingest", "--lake", lake, "--brokers", a.brokers, "--topic", topic, "--group",
               "bench", "--max-messages", str(a.count), "--quiet"])
    ingest = rate(r"s: ([\d.]+) rows/s", out)
    print(out.strip(), file=sys.stderr)
    shutil.rmtree(lake, ignore_errors=True)

    # Latency at a steady produce rate with 1 s batches.
    ltopic = f"latency-{tag}"
    n = a.rate * a.seconds
    run([tp, "produce", "--brokers", a.brokers, "--topic", ltopic, "--count", "1", "--partitions", "4", "--quiet"])
    addr = "127.0.0.1:9899"
    ing = subprocess.Popen([tp, "ingest", "--lake", lake, "--brokers", a.brokers, "--topic", ltopic,
                            "--group", "latency", "--batch-ms", "1000", "--metrics-addr", addr,
                            "--stop-when-idle", "10", "--quiet"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5)  # joined and idle
    run([tp, "produce", "--brokers", a.brokers, "--topic", ltopic, "--count", str(n),
         "--rate", str(a.rate), "--seed", "2", "--quiet"])
    time.sleep(4)
    text = urllib.request.urlopen(f"http://{addr}/metrics").read().decode()
    ing.wait()
    shutil.rmtree(lake, ignore_errors=True)
    def histogram(name):
        buckets = []
        for line in text.splitlines():
            m = re.match(name + r'_bucket\{le="([^"]+)"\} (\S+)', line)
            if m:
                le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
                buckets.append((le, float(m.group(2))))
        return buckets

    buckets = histogram("txpipe_end_to_end_latency_seconds")
    p50, p99 = quantile(buckets, 0.5), quantile(buckets, 0.99)
    commits = histogram("txpipe_commit_duration_seconds")
    c50, c99 = quantile(commits, 0.5), quantile(commits, 0.99)

    print("| measurement | value |")
    print("|---|---:|")
    print(f"| produce rate, {a.count} msgs, 4 partitions, lz4, acks=all | {produce:,.0f} msgs/s |")
    print(f"| bare rdkafka consume rate (baseline) | {bare:,.0f} msgs/s |")
    print(f"| txpipe ingest Kafka -> lake | {ingest:,.0f} rows/s ({100 * ingest / bare:.0f}% of bare) |")
    print(f"| produce -> committed latency at {a.rate} msgs/s, 1 s batches, p50 | {p50:.2f} s |")
    print(f"| same, p99 | {p99:.2f} s |")
    print(f"| lake commit per batch (files + fact and quarantine Delta commits), {int(commits[-1][1])} batches, p50 | {c50 * 1000:.1f} ms |")
    print(f"| same, p99 | {c99 * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
