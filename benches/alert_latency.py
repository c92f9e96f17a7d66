#!/usr/bin/env python3
"""Alert latency for BENCHMARKS.md: produce -> alert visible to a consumer.

`txpipe produce --rate R` publishes generated transactions (with the generator's
labelled fraud, ~0.5 %) while `txpipe ingest --alerts-topic A --batch-ms B`
lands them and publishes each flagged one. An independent confluent-kafka
consumer (read_committed) reads the alerts topic as they come and notes when
each arrived; the source message's own Kafka timestamp (its produce time) is
read back afterwards by (partition, offset). Latency = arrival - produce time.
Same machine, same clock. One run per --batch-ms value.

    python3 benches/alert_latency.py --txpipe target/release/txpipe \
        --tansu ~/.cache/txpipe-tools/bin/tansu
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def consume_alerts(brokers, topic, partitions, stop, out):
    """Reads every partition of the alerts topic from offset 0 (assigned, not a
    group member: no join delay) and notes each alert's arrival time."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"lat-{topic}",
                  "enable.auto.commit": False, "isolation.level": "read_committed",
                  "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    while not stop.is_set():
        m = c.poll(0.05)
        if m is None or m.error():
            continue
        a = json.loads(m.value())
        out.append((time.time(), a["partition"], a["offset"], a["alert_id"]))
    c.close()


def consume_source(brokers, topic, partitions, stop, out):
    """The broker's own floor: every source message's produce -> visible to a plain
    consumer, measured the same way in the same run."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"floor-{topic}",
                  "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    while not stop.is_set():
        for m in c.consume(1000, 0.05):
            if not m.error():
                out.append(time.time() - m.timestamp()[1] / 1000)
    c.close()


def wait_for(what, cond, seconds):
    deadline = time.time() + seconds
    while not cond():
        if time.time() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.05)


def source_times(brokers, topic, partitions, wanted):
    """Kafka timestamp (ms) of each (partition, offset) in `wanted`: one sequential
    pass over the source topic (a seek per alert is far too slow on Tansu)."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"ts-{topic}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    times, done, deadline = {}, set(), time.time() + 120
    while len(done) < partitions and time.time() < deadline:
        m = c.poll(1)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                done.add(m.partition())
            continue
        key = (m.partition(), m.offset())
        if key in wanted:
            times[key] = m.timestamp()[1]
    c.close()
    return times


def breakdown(a, lake, got, times):
    """Median of each stage, from the lake's own record of every flagged row:
    produce -> ingested_at (consumed and decoded), ingested_at -> the Delta commit
    that landed it (the commit file's mtime), commit -> alert at the consumer."""
    import duckdb
    import glob
    commits = sorted((os.path.getmtime(f), int(os.path.basename(f)[:20]))
                     for f in glob.glob(os.path.join(lake, "fact_transaction", "_delta_log", "*.json")))
    rows = duckdb.sql(f"""
        SELECT source_partition, source_offset, epoch_us(ingested_at) / 1e6 AS ing
        FROM read_parquet('{lake}/fact_transaction/**/*.parquet', hive_partitioning = true)
        WHERE is_fraud""").fetchall()
    ingested = {(p, o): t for p, o, t in rows}
    s1, s2, s3 = [], [], []
    for arrived, p, o, _ in got:
        if (p, o) not in times or (p, o) not in ingested:
            continue
        ing = ingested[(p, o)]
        committed = next((m for m, _ in commits if m >= ing), None)
        if committed is None:
            continue
        s1.append(ing - times[(p, o)] / 1000)
        s2.append(committed - ing)
        s3.append(arrived - committed)
    if a.keep:
        print(f"lake kept: {lake}", file=sys.stderr)
    return {"consume": pct(s1, 0.5), "commit": pct(s2, 0.5), "alert": pct(s3, 0.5),
            "consume99": pct(s1, 0.99), "commit99": pct(s2, 0.99), "alert99": pct(s3, 0.99)}


def floor_run(a):
    """The broker's own floor, without txpipe: the same producer at the same rate,
    every message's produce -> visible to a plain consumer (2 cores are shared by
    the broker, the producer and the consumer, as in the runs with txpipe)."""
    topic = f"lat-floor-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": a.brokers})
    for f in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        f.result(timeout=30)
    floor, stop = [], threading.Event()
    t = threading.Thread(target=consume_source, args=(a.brokers, topic, 4, stop, floor))
    t.start()
    time.sleep(1)  # a benchmark warm-up, not synchronisation: the consumer is assigned, not joined
    subprocess.run([a.txpipe, "produce", "--brokers", a.brokers, "--topic", topic, "--count",
                    str(a.rate * a.seconds), "--rate", str(a.rate), "--seed", "7", "--quiet"],
                   check=True, capture_output=True)
    wait_for("the floor consumer", lambda: len(floor) >= a.rate * a.seconds, 60)
    stop.set()
    t.join()
    return pct(floor, 0.5), pct(floor, 0.99)


def one_run(a, batch_ms):
    tag = f"{int(time.time())}-{batch_ms}"
    src, alerts = f"lat-src-{tag}", f"lat-alerts-{tag}"
    lake = tempfile.mkdtemp(prefix="txpipe-alert-lat-", dir=SCRATCH)
    count = a.rate * a.seconds
    admin = AdminClient({"bootstrap.servers": a.brokers})
    for f in admin.create_topics([NewTopic(src, 4, 1), NewTopic(alerts, 4, 1)]).values():
        f.result(timeout=30)
    # One warm-up message: the ingest has joined its group and committed once when
    # the fact table's version 1 exists, so no produced message waits for a join.
    subprocess.run([a.txpipe, "produce", "--brokers", a.brokers, "--topic", src, "--count", "1",
                    "--seed", "1", "--quiet"], check=True, capture_output=True)
    ingest = subprocess.Popen([a.txpipe, "ingest", "--lake", lake, "--brokers", a.brokers,
                               "--topic", src, "--group", f"g-{tag}", "--alerts-topic", alerts,
                               "--batch-ms", str(batch_ms), "--stop-when-idle", "5", "--quiet", *a.ingest_arg],
                              stdout=subprocess.PIPE, text=True)
    first = os.path.join(lake, "fact_transaction", "_delta_log", "%020d.json" % 1)
    wait_for("the ingest's first commit", lambda: os.path.exists(first), 120)
    got, stop = [], threading.Event()
    t = threading.Thread(target=consume_alerts, args=(a.brokers, alerts, 4, stop, got))
    t.start()
    started = time.time()
    subprocess.run([a.txpipe, "produce", "--brokers", a.brokers, "--topic", src, "--count",
                    str(count), "--rate", str(a.rate), "--seed", "7", "--quiet"], check=True,
                   capture_output=True)
    produce_s = time.time() - started
    summary, _ = ingest.communicate(timeout=300)
    if ingest.returncode != 0:
        sys.exit(f"ingest failed ({ingest.returncode}):\n{summary}")
    delivered = int(re.search(r"alerts delivered (\d+)", summary).group(1))
    wait_for(f"{delivered} alerts at the consumer", lambda: len(got) >= delivered, 60)
    stop.set()
    t.join()
    times = source_times(a.brokers, src, 4, {(p, o) for _, p, o, _ in got})
    lat = [arrived - times[(p, o)] / 1000 for arrived, p, o, _ in got if (p, o) in times]
    ids = [x[3] for x in got]
    stages = breakdown(a, lake, got, times)
    if not a.keep:
        shutil.rmtree(lake, ignore_errors=True)
    return {"stages": stages,
        "batch_ms": batch_ms, "produced": count, "rate": count / produce_s,
        "alerts": len(ids), "timed": len(lat),
        "duplicates": len(ids) - len(set(ids)), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
        "max": max(lat), "summary": summary.strip().splitlines()[-6:],
    }


class FreshTansu:
    """A Tansu broker with an empty SQLite store on a free loopback port, so each
    measurement starts from the same broker state (Tansu slows down as its store
    grows: a 1.3 GB store doubled the floor)."""

    def __init__(self, tansu):
        import socket
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        # In memory (/dev/shm): Kafka acknowledges from the page cache without an
        # fsync per message, Tansu's SQLite store fsyncs each write, and on this
        # VM's disk that made run-to-run p99 vary 5x.
        self.dir = tempfile.mkdtemp(prefix="txpipe-lat-tansu-", dir=SCRATCH)
        url = f"tcp://127.0.0.1:{port}"
        self.proc = subprocess.Popen([tansu, "broker", "--listener-url", url,
                                      "--advertised-listener-url", url,
                                      "--storage-engine", "sqlite://tansu.db"],
                                     cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.brokers = f"127.0.0.1:{port}"
        admin = AdminClient({"bootstrap.servers": self.brokers})
        wait_for("Tansu", lambda: self._up(admin), 30)

    @staticmethod
    def _up(admin):
        try:
            admin.list_topics(timeout=1)
            return True
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    def close(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def on_broker(a, f, *args):
    """Runs f(a, …) against --brokers, or against a fresh Tansu with --tansu."""
    if not a.tansu:
        return f(a, *args)
    broker = FreshTansu(a.tansu)
    try:
        return f(argparse.Namespace(**{**vars(a), "brokers": broker.brokers}), *args)
    finally:
        broker.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--txpipe", required=True)
    ap.add_argument("--brokers", default="127.0.0.1:9092")
    ap.add_argument("--tansu", help="start a fresh Tansu (this binary) for each measurement "
                    "instead of using --brokers")
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--batch-ms", type=int, nargs="+", default=[1000, 200])
    ap.add_argument("--ingest-arg", action="append", default=[],
                    help="extra argument for txpipe ingest (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the lakes (their paths are printed)")
    a = ap.parse_args()
    floor50, floor99 = on_broker(a, floor_run)
    rows = [on_broker(a, one_run, b) for b in a.batch_ms]
    print("| --batch-ms | produced | achieved rate (msg/s) | alerts (timed) | duplicates "
          "| p50 (s) | p99 (s) | max (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['batch_ms']} | {r['produced']} | {r['rate']:.0f} | {r['alerts']} ({r['timed']}) "
              f"| {r['duplicates']} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} |")
    print("\n| --batch-ms | broker floor: produce → plain consumer (p50 / p99) "
          "| produce → consumed by txpipe | consumed → committed | committed → alert seen |")
    print("|---:|---:|---:|---:|---:|")
    for r in rows:
        st = r["stages"]
        print(f"| {r['batch_ms']} | {floor50:.3f} / {floor99:.3f} | {st['consume']:.3f} / {st['consume99']:.3f} "
              f"| {st['commit']:.3f} / {st['commit99']:.3f} | {st['alert']:.3f} / {st['alert99']:.3f} |")
    for r in rows:
        print("\n".join(r["summary"]), file=sys.stderr)


if __name__ == "__main__":
    main()
