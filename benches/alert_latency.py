#!/usr/bin/env python3
"""Alert latency for BENCHMARKS.md: produce -> alert visible to a consumer.

`txpipe produce --rate R` publishes generated transactions (with the generator's
labelled fraud, ~0.5 %) while `txpipe ingest --alerts-topic A --batch-ms B`
lands them and publishes each flagged one. An independent confluent-kafka
consumer (read_committed) reads the alerts topic as they come and notes when
each arrived; the source message's own Kafka timestamp (its produce time) is
read back afterwards by (partition, offset). Latency = arrival - produce time.
Same machine, same clock. One run per --batch-ms value.

    python3 benches/alert_latency.py --txpipe target/release/txpipe --brokers 127.0.0.1:9092
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, TopicPartition


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def consume_alerts(brokers, topic, stop, out):
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"lat-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "isolation.level": "read_committed", "fetch.wait.max.ms": 10})
    c.subscribe([topic])
    while not stop.is_set():
        m = c.poll(0.05)
        if m is None or m.error():
            continue
        a = json.loads(m.value())
        out.append((time.time(), a["partition"], a["offset"], a["alert_id"]))
    c.close()


def source_times(brokers, topic, wanted):
    """Kafka timestamp (ms) of each (partition, offset) in `wanted`."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"ts-{topic}",
                  "enable.auto.commit": False})
    times = {}
    by_part = {}
    for p, o in wanted:
        by_part.setdefault(p, set()).add(o)
    for p, offsets in by_part.items():
        for o in sorted(offsets):
            c.assign([TopicPartition(topic, p, o)])
            m = c.poll(10)
            if m is not None and not m.error():
                times[(p, o)] = m.timestamp()[1]
    c.close()
    return times


def one_run(a, batch_ms):
    tag = f"{int(time.time())}-{batch_ms}"
    src, alerts = f"lat-src-{tag}", f"lat-alerts-{tag}"
    lake = tempfile.mkdtemp(prefix="txpipe-alert-lat-")
    count = a.rate * a.seconds
    subprocess.run([a.txpipe, "produce", "--brokers", a.brokers, "--topic", src, "--count", "1",
                    "--partitions", "4", "--quiet"], check=True, capture_output=True)
    ingest = subprocess.Popen([a.txpipe, "ingest", "--lake", lake, "--brokers", a.brokers,
                               "--topic", src, "--group", f"g-{tag}", "--alerts-topic", alerts,
                               "--batch-ms", str(batch_ms), "--stop-when-idle", "5", "--quiet"],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # let the ingest join its group and create the alerts topic
    got, stop = [], threading.Event()
    t = threading.Thread(target=consume_alerts, args=(a.brokers, alerts, stop, got))
    t.start()
    subprocess.run([a.txpipe, "produce", "--brokers", a.brokers, "--topic", src, "--count",
                    str(count), "--rate", str(a.rate), "--seed", "7", "--quiet"], check=True,
                   capture_output=True)
    summary, _ = ingest.communicate(timeout=300)
    time.sleep(2)
    stop.set()
    t.join()
    times = source_times(a.brokers, src, {(p, o) for _, p, o, _ in got})
    lat = [arrived - times[(p, o)] / 1000 for arrived, p, o, _ in got if (p, o) in times]
    ids = [x[3] for x in got]
    shutil.rmtree(lake, ignore_errors=True)
    return {
        "batch_ms": batch_ms, "produced": count, "alerts": len(ids),
        "duplicates": len(ids) - len(set(ids)), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
        "max": max(lat), "summary": summary.strip().splitlines()[-6:],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--txpipe", required=True)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--batch-ms", type=int, nargs="+", default=[1000, 200])
    a = ap.parse_args()
    rows = [one_run(a, b) for b in a.batch_ms]
    print(f"| --batch-ms | produced at {a.rate}/s | alerts | duplicates | p50 (s) | p99 (s) | max (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch_ms']} | {r['produced']} | {r['alerts']} | {r['duplicates']} | "
              f"{r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} |")
    for r in rows:
        print("\n".join(r["summary"]), file=sys.stderr)


if __name__ == "__main__":
    main()
