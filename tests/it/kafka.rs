//! Kafka end to end against a real Kafka-protocol broker (Tansu, started by
//! tests/run.sh; its address is in TXPIPE_TEST_BROKERS), with confluent-kafka
//! (Python) as an independent client.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use txpipe_core::arrow::array::AsArray;
use txpipe_core::arrow::datatypes::{Int32Type, Int64Type};
use txpipe_core::generate::Rng;

use crate::helpers::*;

/// The test broker; these tests need one (tests/run.sh starts it).
fn brokers() -> String {
    std::env::var("TXPIPE_TEST_BROKERS").expect(
        "TXPIPE_TEST_BROKERS is not set: run the tests with tests/run.sh, which installs and starts a Kafka-protocol broker",
    )
}

fn topic(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (partition, offset) of every row of a lake table.
async fn positions(lake: &str, table: &str) -> Vec<(i32, i64)> {
    let mut v = Vec::new();
    for b in query(
        lake,
        &format!("SELECT source_partition, source_offset FROM {table}"),
    )
    .await
    {
        let p = b.column(0).as_primitive::<Int32Type>();
        let o = b.column(1).as_primitive::<Int64Type>();
        v.extend((0..b.num_rows()).map(|i| (p.value(i), o.value(i))));
    }
    v
}

/// Asserts every (partition, offset) appears once across fact and quarantine.
async fn assert_exactly_once(lake: &str, valid: u64, bad: u64) {
    let fact = positions(lake, "fact_transaction").await;
    let quarantine = positions(lake, "quarantine").await;
    let f: BTreeSet<_> = fact.iter().copied().collect();
    let q: BTreeSet<_> = quarantine.iter().copied().collect();
    assert_eq!(fact.len(), f.len(), "duplicated fact rows");
    assert_eq!(quarantine.len(), q.len(), "duplicated quarantine rows");
    assert!(f.is_disjoint(&q));
    assert_eq!(
        (fact.len() as u64, quarantine.len() as u64),
        (valid, bad),
        "landed, quarantined"
    );
    let ids = query_i64s(
        lake,
        "SELECT COUNT(DISTINCT transaction_id) FROM fact_transaction",
    )
    .await;
    assert_eq!(ids, vec![valid as i64], "distinct transaction ids");
}

/// `txpipe produce` of N generated transactions (1% bad) to a new 4-partition topic.
fn produce_generated(brokers: &str, topic: &str, n: u64, seed: u64) -> String {
    run_ok(&[
        "produce",
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--count",
        &n.to_string(),
        "--bad-rate",
        "0.01",
        "--seed",
        &seed.to_string(),
        "--partitions",
        "4",
        "--quiet",
    ])
}

fn ingest_args<'a>(
    lake: &'a str,
    brokers: &'a str,
    topic: &'a str,
    group: &'a str,
) -> Vec<&'a str> {
    vec![
        "ingest",
        "--lake",
        lake,
        "--brokers",
        brokers,
        "--topic",
        topic,
        "--group",
        group,
        "--quiet",
    ]
}

const PY_CONSUME: &str = r#"
import sys, json
from confluent_kafka import Consumer
brokers, topic, want, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = Consumer({"bootstrap.servers": brokers, "group.id": "py-" + topic, "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
got, keyed = [], 0
import time
deadline = time.time() + 120
while len(got) < want and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    v = m.value()
    got.append(v)
    d = json.loads(v)
    if m.key() is not None and m.key().decode() == d["customer_id"]:
        keyed += 1
# Anything beyond `want` would be a duplicate.
extra = 0
end = time.time() + 3
while time.time() < end:
    m = c.poll(0.5)
    if m is not None and not m.error():
        extra += 1
c.close()
with open(out, "wb") as f:
    f.write(b"\n".join(got))
print(len(got), keyed, extra)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn produce_is_read_back_exactly_by_an_independent_consumer() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("produce");
    let out = run_ok(&[
        "produce",
        "--brokers",
        &b,
        "--topic",
        &topic,
        "--count",
        "3000",
        "--seed",
        "9",
        "--partitions",
        "3",
        "--quiet",
    ]);
    assert!(out.contains("delivered 3000 failed 0 of 3000"), "{out}");
    let got = python(PY_CONSUME, &[&b, &topic, "3000", &t.str("got.jsonl")]);
    let nums: Vec<u64> = got.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(
        nums,
        vec![3000, 3000, 0],
        "read, keyed by customer_id, extra"
    );
    generate(&t.path("gen"), 3000, 0.0, 9);
    let mut expected: Vec<String> = std::fs::read_to_string(t.path("gen/transactions.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut actual: Vec<String> = std::fs::read_to_string(t.path("got.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    expected.sort();
    actual.sort();
    assert!(
        expected == actual,
        "the consumer read exactly the generated messages"
    );
}

const PY_PRODUCE: &str = r#"
import sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
brokers, topic, path = sys.argv[1], sys.argv[2], sys.argv[3]
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
p = Producer({"bootstrap.servers": brokers, "compression.type": "zstd", "message.max.bytes": 4000000})
failed = []
def cb(err, msg):
    if err is not None:
        failed.append(err)
n = 0
for line in open(path, "rb"):
    p.produce(topic, line.rstrip(b"\n"), callback=cb)
    n += 1
    if n % 1000 == 0:
        p.poll(0)
bad = [b"", b"\x00\xff\xfe binary \x01", b"{not json", b"[1,2,3]", b'{"transaction_id": 5}', b"x" * (1024 * 1024)]
for v in bad:
    p.produce(topic, v, callback=cb)
p.produce(topic, None, key=None, callback=cb)  # tombstone: no value, no key
p.flush(60)
assert not failed, failed
print(n, len(bad) + 1)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_producer_to_ingest_lands_all_and_quarantines_bad_messages() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("pyprod");
    let (lines, valid, bad_lines) = generate(&t.path("gen"), 4000, 0.01, 21);
    let out = python(PY_PRODUCE, &[&b, &topic, &t.str("gen/transactions.jsonl")]);
    let nums: Vec<u64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(nums[0], lines);
    let extra_bad = nums[1];
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &topic, "g1");
    args.extend(["--stop-when-idle", "4", "--batch-ms", "300"]);
    let summary = run_ok(&args);
    assert!(
        summary.contains(&format!(
            "landed {valid} + quarantined {}",
            bad_lines + extra_bad
        )),
        "{summary}"
    );
    assert_exactly_once(&lake, valid, bad_lines + extra_bad).await;
    // Quarantined Kafka records carry topic, partition and offset, and a reason.
    let q = query(&lake, "SELECT source, error, payload FROM quarantine").await;
    let mut biggest = (0usize, String::new(), String::new());
    for b in &q {
        let (src, err, payload) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
            b.column(2).as_binary::<i32>(),
        );
        for i in 0..b.num_rows() {
            if payload.value(i).len() >= biggest.0 {
                biggest = (
                    payload.value(i).len(),
                    src.value(i).to_string(),
                    err.value(i).to_string(),
                );
            }
        }
    }
    assert_eq!(biggest.0, 1024 * 1024, "the 1 MB message is kept whole");
    assert_eq!(biggest.1, topic);
    assert!(biggest.2.contains("not valid JSON"), "{}", biggest.2);
    // The group's Kafka offsets were committed after the lake commit.
    let lag = python(
        r#"
import sys
from confluent_kafka import Consumer, TopicPartition
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[3]})
tps = [TopicPartition(sys.argv[2], p) for p in range(3)]
committed = sum(tp.offset for tp in c.committed(tps, timeout=10) if tp.offset >= 0)
ends = sum(c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
print(committed, ends)
"#,
        &[&b, &topic, "g1"],
    );
    let nums: Vec<i64> = lag.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(
        nums[0], nums[1],
        "committed group offsets = end offsets (no lag)"
    );
    // Running again lands nothing new.
    let again = run_ok(&args);
    assert!(again.contains("nothing new"), "{again}");
}

// Members killed with -9 never leave the group. The broker must expire them and
// hand their partitions over; Tansu 0.6 sometimes drops the dead member but keeps
// the old assignment, so txpipe's orphan watchdog (kafka/watchdog.rs) notices
// partitions with pending messages and no lake progress and rejoins the group.
#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_during_kafka_ingest_keeps_exactly_once() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("crash");
    let n = 200_000u64;
    let out = produce_generated(&b, &topic, n, 5);
    assert!(out.contains(&format!("failed 0 of {n}")), "{out}");
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 5);
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &topic, "crashers");
    args.extend([
        "--stop-when-idle",
        "5",
        "--batch-rows",
        "5000",
        "--batch-ms",
        "500",
    ]);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill schedule seed: {seed}");
    let mut rng = Rng::new(seed);
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = txpipe()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(1500 + rng.below(3000));
        let started = Instant::now();
        while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 2, "only {kills} kills landed mid-run");
    // Killed members stay in the group until their session times out (or the
    // watchdog gives up on them after 20 s); the last run waits long enough to get
    // every partition.
    let last = args
        .iter()
        .map(|a| if *a == "5" { "40" } else { a })
        .collect::<Vec<_>>();
    let out = txpipe().args(&last).output().unwrap();
    assert_success(&out, &last);
    assert_exactly_once(&lake, valid, bad).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_members_with_a_leave_and_rejoin_land_everything_once() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("rebalance");
    let n = 60_000u64;
    produce_generated(&b, &topic, n, 8);
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 8);
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &topic, "pair");
    args.extend([
        "--stop-when-idle",
        "8",
        "--batch-rows",
        "2000",
        "--batch-ms",
        "300",
        "--workers",
        "1",
    ]);
    let spawn = || {
        txpipe()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let mut second = spawn();
    std::thread::sleep(Duration::from_millis(2500));
    // The second member leaves (SIGTERM: commit in-flight, leave the group) and rejoins.
    Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    let left = second.wait().unwrap();
    assert!(left.success(), "SIGTERM exits 0 after committing");
    std::thread::sleep(Duration::from_millis(1000));
    let rejoined = spawn();
    for child in [a, rejoined] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_exactly_once(&lake, valid, bad).await;
}

/// A member of a two-member group dies with kill -9 while it owns partitions
/// with unconsumed messages; the survivor alone must finish the topic.
#[tokio::test(flavor = "multi_thread")]
async fn survivor_takes_over_the_partitions_of_a_member_killed_with_dash_nine() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("survivor");
    let n = 80_000u64;
    produce_generated(&b, &topic, n, 9);
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 9);
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &topic, "survivors");
    args.extend([
        "--stop-when-idle",
        "40",
        "--batch-rows",
        "1000",
        "--batch-ms",
        "300",
        "--workers",
        "1",
    ]);
    let spawn = || {
        txpipe()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let survivor = spawn();
    std::thread::sleep(Duration::from_millis(1000));
    let mut victim = spawn();
    std::thread::sleep(Duration::from_millis(4000));
    assert!(victim.try_wait().unwrap().is_none(), "victim still running");
    victim.kill().unwrap();
    victim.wait().unwrap();
    let out = survivor.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&lake, valid, bad).await;
}

#[test]
fn unreachable_broker_and_missing_topic_fail_clearly() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let started = Instant::now();
    let out = txpipe()
        .args(ingest_args(&lake, "127.0.0.1:1", "t", "g"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Kafka brokers at 127.0.0.1:1"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded retries"
    );
    let b = brokers();
    let missing = topic("missing");
    let out = txpipe()
        .args(ingest_args(&lake, &b, &missing, "g"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!t.path("lake/_txpipe/log").exists(), "nothing committed");
}

/// `GET path` over plain HTTP/1.1; returns the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    resp.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Parses Prometheus text into `name{labels}` → value (comments skipped).
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let v = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad sample: {line}")),
        };
        out.insert(series.to_string(), v);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_endpoint_counts_equal_the_lake() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("metrics");
    let n = 6_000u64;
    produce_generated(&b, &topic, n, 12);
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 12);
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &topic, "metered");
    args.extend(["--stop-when-idle", "12", "--metrics-addr", "127.0.0.1:0"]);
    let mut child = txpipe()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("txpipe: metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in {line:?}"))
        .to_string();
    // Scrape until everything is committed and the lag gauge has caught up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = parse_prometheus(&http_get(&addr, "/metrics"));
        let src = format!("{{source=\"{topic}\"}}");
        let consumed = m.get(&format!("txpipe_rows_consumed_total{src}")).copied();
        let lag: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("txpipe_consumer_lag{"))
            .map(|(_, v)| v)
            .sum();
        let lag_series = m
            .keys()
            .filter(|k| k.starts_with("txpipe_consumer_lag{"))
            .count();
        if consumed == Some(n as f64) && lag == 0.0 && lag_series == 4 {
            break m;
        }
        assert!(Instant::now() < deadline, "metrics never caught up: {m:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let json: serde_json::Value = serde_json::from_str(&http_get(&addr, "/api/ingest")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_exactly_once(&lake, valid, bad).await;
    let get = |k: &str| {
        metrics
            .get(&format!("{k}{{source=\"{topic}\"}}"))
            .copied()
            .unwrap()
    };
    assert_eq!(get("txpipe_rows_landed_total"), valid as f64);
    assert_eq!(get("txpipe_rows_quarantined_total"), bad as f64);
    assert_eq!(json["counts"]["landed"], valid);
    let fraud = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE is_fraud",
    )
    .await;
    assert_eq!(get("txpipe_fraud_rows_total"), fraud[0] as f64);
    let foreign = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE array_has(fraud_reasons, 'foreign')",
    )
    .await;
    assert_eq!(
        metrics[&format!("txpipe_fraud_flagged_total{{source=\"{topic}\",rule=\"foreign\"}}")],
        foreign[0] as f64
    );
    let files = std::fs::read_dir(t.path("lake/fact_transaction"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .count()
        + std::fs::read_dir(t.path("lake/quarantine"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .count();
    assert_eq!(get("txpipe_files_written_total"), files as f64);
    let batches = get("txpipe_batches_committed_total");
    assert!(batches >= 1.0);
    assert_eq!(metrics["txpipe_batch_latency_seconds_count"], batches);
    assert_eq!(metrics["txpipe_end_to_end_latency_seconds_count"], n as f64);
    assert_eq!(
        metrics["txpipe_end_to_end_latency_seconds_bucket{le=\"+Inf\"}"],
        n as f64
    );
    // `txpipe serve` beside it reports the same lake and the consumer lag.
    let mut serve = txpipe()
        .args([
            "serve",
            "--lake",
            &lake,
            "--addr",
            "127.0.0.1:0",
            "--brokers",
            &b,
            "--topic",
            &topic,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(serve.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    let serve_addr = first
        .strip_prefix("dashboard on http://")
        .and_then(|s| s.split('/').next())
        .unwrap()
        .to_string();
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(&serve_addr, "/api/ingest")).unwrap();
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert_eq!(stats["counts"]["rows_in"], n);
    let lag = stats["lag"]
        .as_object()
        .expect("lag with --brokers/--topic");
    assert_eq!(lag.len(), 4);
    assert!(lag.values().all(|v| v == 0), "{lag:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_with_a_real_broker() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let b = brokers();
    let out = run_ok(&["demo", "--count", "5000", "--lake", &lake, "--brokers", &b]);
    assert!(
        out.contains(&format!("5000 transactions through {b}")),
        "{out}"
    );
    assert!(out.contains("run success"), "{out}");
    let n = query_i64s(
        &lake,
        "SELECT (SELECT COUNT(*) FROM fact_transaction) + (SELECT COUNT(*) FROM quarantine) AS n",
    )
    .await;
    assert_eq!(n, vec![5000]);
}
