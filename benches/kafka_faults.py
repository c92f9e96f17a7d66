#!/usr/bin/env python3
"""Kafka fault scenarios for BENCHMARKS.md (issue 9), each against a Tansu broker of
its own (started and stopped here), with an independent producer (Python
confluent-kafka) and an independent check of the lake (pyarrow over the files the
commit log lists).

1. kill -9 drain, N runs: 200 052 messages on a 4-partition topic; `txpipe ingest
   --batch-rows 10000 --stop-when-idle 5` killed with SIGKILL after 2.5, 1.5, 3 and
   2 s, then run once more to drain. A run is exact when the drain exits 0 and the
   lake holds every message exactly once (fact + quarantine = produced, distinct
   (partition, offset)); a drain that exits non-zero naming lagging partitions is
   counted as "refused" (never silently short).
2. broker restart: the broker is killed with SIGKILL mid-ingest, kept down for
   --down seconds and restarted on the same port and storage; reported: seconds from
   the broker accepting connections again to the ingest's next lake commit, and
   whether the lake is exact at the end.

    python3 benches/kafka_faults.py --txpipe target/release/txpipe \
        --tansu ~/.cache/txpipe-tools/bin/tansu --runs 6
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pyarrow.parquet as pq
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), 0.3).close()
        return True
    except OSError:
        return False


def wait_for(cond, deadline, what):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


class Broker:
    def __init__(self, tansu, folder):
        self.tansu, self.folder, self.port, self.proc = tansu, folder, free_port(), None
        os.makedirs(folder, exist_ok=True)
        self.start()

    def start(self):
        log = open(os.path.join(self.folder, "broker.log"), "ab")
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [self.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "sqlite://tansu.db"],
            cwd=self.folder, stdout=log, stderr=log)
        wait_for(lambda: accepts(self.port), 60, "the broker to listen")

    def kill(self):
        self.proc.kill()
        self.proc.wait()
        wait_for(lambda: not accepts(self.port), 10, "the broker port to close")

    @property
    def addr(self):
        return f"127.0.0.1:{self.port}"


def produce(brokers, topic, lines):
    """Publishes `lines` (bytes, one message each) with an idempotent producer."""
    admin = AdminClient({"bootstrap.servers": brokers})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result()
    p = Producer({"bootstrap.servers": brokers, "linger.ms": 50, "compression.type": "lz4",
                  "enable.idempotence": True, "acks": "all"})
    failed = []
    cb = lambda err, _msg: err and failed.append(err)
    for i, body in enumerate(lines):
        while True:
            try:
                p.produce(topic, body, key=str(i % 4096).encode(), on_delivery=cb)
                break
            except BufferError:
                p.poll(0.1)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(120) or failed:
        sys.exit(f"producer: {len(failed)} failed: {failed[:1]}")


def watermarks(brokers, topic):
    """{partition: (low, high)} as the broker reports them."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": brokers, "group.id": "kafka-faults-bench-wm"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                for p in range(4)}
    finally:
        c.close()


def delta_log(lake, table):
    """Replays a Delta table's JSON commits (an independent reader of the log):
    (live data files, {appId: txn version}, [commitInfo.txpipe records])."""
    log = pathlib.Path(lake, table, "_delta_log")
    files, txns, records = {}, {}, []
    if not log.exists():
        return files, txns, records
    for p in sorted(log.glob("*.json")):
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            a = json.loads(line)
            if "add" in a:
                files[a["add"]["path"]] = a["add"]
            elif "remove" in a:
                files.pop(a["remove"]["path"], None)
            elif "txn" in a:
                txns[a["txn"]["appId"]] = a["txn"]["version"]
            elif "commitInfo" in a and "txpipe" in a["commitInfo"]:
                records.append(a["commitInfo"]["txpipe"])
    return files, txns, records


def lake_rows(lake):
    """(source_partition, source_offset) of every committed fact and quarantine row."""
    out = []
    for table in ("fact_transaction", "quarantine"):
        files, _, _ = delta_log(lake, table)
        for path in files:
            t = pq.read_table(os.path.join(lake, table, path),
                              columns=["source_partition", "source_offset"])
            out.extend(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
    return out


def gaps(lake, brokers, topic):
    """Per partition: broker watermarks, committed lake position, offsets missing."""
    _, txns, _ = delta_log(lake, "fact_transaction")
    pos = {int(k.rsplit("-", 1)[1]): v for k, v in txns.items() if not k.endswith("-byte")}
    seen = {}
    for part, off in lake_rows(lake):
        seen.setdefault(part, set()).add(off)
    out = []
    for part, (low, high) in sorted(watermarks(brokers, topic).items()):
        missing = sorted(set(range(low, high)) - seen.get(part, set()))
        ranges, start = [], None
        for i, o in enumerate(missing):
            if start is None:
                start = o
            if i + 1 == len(missing) or missing[i + 1] != o + 1:
                ranges.append(f"{start}-{o}")
                start = None
        out.append(f"p{part} [{low},{high}) lake at {pos.get(part)} "
                   f"missing {len(missing)} {ranges[:5]}")
    return "; ".join(out)


def committed(lake):
    """(rows, distinct (partition, offset), rows_in logged, commits) of the committed lake."""
    _, _, records = delta_log(lake, "fact_transaction")
    rows = lake_rows(lake)
    logged = sum(r["counts"]["rows_in"] for r in records)
    return len(rows), len(set(rows)), logged, len(records)


def ingest_cmd(a, lake, brokers, topic, extra=()):
    return [a.txpipe, "ingest", "--lake", lake, "--brokers", brokers, "--topic", topic,
            "--group", "g1", "--batch-rows", "10000", "--quiet", *extra]


def kill_drain(a, broker, run, work):
    topic = f"kd-{run}-{int(time.time())}"
    produce(broker.addr, topic, a.lines)
    lake = os.path.join(work, f"lake-{run}")
    cmd = ingest_cmd(a, lake, broker.addr, topic, ["--stop-when-idle", "5"])
    kills = 0
    for after in (2.5, 1.5, 3.0, 2.0):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            p.wait(after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            kills += 1
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    took = time.monotonic() - t0
    rows, distinct, logged, commits = committed(lake)
    exact = out.returncode == 0 and rows == distinct == logged == a.messages
    refused = out.returncode != 0 and "did not catch up" in out.stderr
    lag = [l.strip() for l in out.stdout.splitlines() if "remaining lag" in l]
    print(f"run {run}: {kills} kills, drain exit {out.returncode} in {took:.1f}s, "
          f"lake {rows} rows ({distinct} distinct, {logged} logged, {commits} commits) "
          f"of {a.messages}: {'EXACT' if exact else 'REFUSED' if refused else 'WRONG'} "
          f"{lag[0] if lag else out.stderr.strip()[-300:]}", flush=True)
    if not exact and not refused:
        print(f"  {gaps(lake, broker.addr, topic)}", flush=True)
        kept = f"/tmp/txpipe-faults-wrong-{run}"
        shutil.copytree(lake, kept, dirs_exist_ok=True)
        print(f"  lake kept in {kept}", flush=True)
    return exact, refused


def broker_restart(a, run, work):
    broker = Broker(a.tansu, os.path.join(work, f"restart-broker-{run}"))
    topic = f"rs-{run}-{int(time.time())}"
    produce(broker.addr, topic, a.lines)
    lake = os.path.join(work, f"lake-restart-{run}")
    count = lambda: len(delta_log(lake, "fact_transaction")[2])
    cmd = ingest_cmd(a, lake, broker.addr, topic,
                     ["--stop-when-idle", "8", "--workers", "1"])
    cmd[cmd.index("--batch-rows") + 1] = "2000"
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: count() >= 3, 120, "the first commits")
    broker.kill()
    time.sleep(a.down)  # the outage itself, not synchronization
    at = count()
    broker.start()
    back = time.monotonic()
    wait_for(lambda: count() > at, 300, "a commit after the restart")
    resumed = time.monotonic() - back
    out, err = p.communicate(timeout=600)
    rows, distinct, logged, commits = committed(lake)
    exact = p.returncode == 0 and rows == distinct == logged == a.messages
    print(f"broker restart: down {a.down:.0f}s; broker back -> next lake commit {resumed:.1f}s; "
          f"ingest exit {p.returncode}; lake {rows} rows ({distinct} distinct) of {a.messages}: "
          f"{'EXACT' if exact else 'WRONG'}", flush=True)
    broker.kill()
    return resumed, exact


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--txpipe", required=True)
    ap.add_argument("--tansu", required=True)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--messages", type=int, default=200_052)
    ap.add_argument("--down", type=float, default=10.0, help="seconds the broker stays down")
    ap.add_argument("--restarts", type=int, default=3)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="txpipe-faults-")
    try:
        # The messages: `txpipe generate` lines (1 % malformed, quarantined by the ingest).
        subprocess.run([a.txpipe, "generate", "--count", str(a.messages), "--bad-rate", "0.01",
                        "--out", os.path.join(work, "gen"), "--quiet"], check=True)
        with open(os.path.join(work, "gen", "transactions.jsonl"), "rb") as f:
            a.lines = [l.rstrip(b"\n") for l in f]
        assert len(a.lines) == a.messages, len(a.lines)
        broker = Broker(a.tansu, os.path.join(work, "broker"))
        results = [kill_drain(a, broker, r, work) for r in range(a.runs)]
        broker.kill()
        exact = sum(1 for e, _ in results if e)
        refused = sum(1 for _, r in results if r)
        print(f"kill -9 drain: {a.runs} runs, {exact} exact, {refused} refused (non-zero exit), "
              f"{a.runs - exact - refused} wrong")
        restarts = [broker_restart(a, r, work) for r in range(a.restarts)]
        times = sorted(r for r, _ in restarts)
        print(f"broker restart: {len(restarts)} runs, {sum(e for _, e in restarts)} exact; "
              f"broker back -> resumed: " + ", ".join(f"{t:.1f}s" for t in times))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
