//! Kafka end to end against a real Kafka-protocol broker (Tansu, started by
//! tests/run.sh; its address is in TXPIPE_TEST_BROKERS), with confluent-kafka
//! (Python) as an independent client.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use txpipe_core::arrow::array::AsArray;
use txpipe_core::arrow::datatypes::{Int32Type, Int64Type};

use crate::helpers::*;

/// The test broker; these tests need one (tests/run.sh starts it).
pub(crate) fn brokers() -> String {
    std::env::var("TXPIPE_TEST_BROKERS").expect(
        "TXPIPE_TEST_BROKERS is not set: run the tests with tests/run.sh, which installs and starts a Kafka-protocol broker",
    )
}

pub(crate) fn topic(name: &str) -> String {
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
pub(crate) async fn assert_exactly_once(lake: &str, valid: u64, bad: u64) {
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
pub(crate) fn produce_generated(brokers: &str, topic: &str, n: u64, seed: u64) -> String {
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

pub(crate) fn ingest_args<'a>(
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

/// A group member's arguments for the take-over tests: small batches, and a
/// long idle stop so a survivor outlasts the group's detection of a dead member.
pub(crate) fn takeover_args<'a>(
    lake: &'a str,
    brokers: &'a str,
    topic: &'a str,
    group: &'a str,
) -> Vec<&'a str> {
    let mut args = ingest_args(lake, brokers, topic, group);
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
    args
}

/// Starts one `txpipe ingest` group member with its output captured.
pub(crate) fn spawn_member(args: &[&str]) -> std::process::Child {
    txpipe()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    let spawn = || spawn_member(&args);
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
    let args = takeover_args(&lake, &b, &topic, "survivors");
    let spawn = || spawn_member(&args);
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
    assert!(
        !t.path("lake/fact_transaction/_delta_log").exists(),
        "nothing created or committed"
    );
}
