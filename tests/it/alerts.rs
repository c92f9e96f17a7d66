//! Real-time alerts: an independent Python consumer (confluent-kafka) and a
//! Python HTTP receiver check that every flagged row the lake commits reaches
//! them, at least once and idempotent by `alert_id`, across kill -9.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command};
use std::time::Duration;

use txpipe_core::arrow::array::{Array, AsArray};
use txpipe_core::arrow::compute::cast;
use txpipe_core::arrow::datatypes::{DataType, Float64Type};

use crate::helpers::*;
use crate::kafka::{brokers, ingest_args, produce_generated, topic};
use crate::kafka_faults::{free_port, run_then_kill, wait_for};

/// transaction_id → (amount_usd as text, risk_score, reasons) of the lake's `is_fraud` rows.
pub(crate) async fn flagged(lake: &str) -> BTreeMap<String, (String, f64, String)> {
    let mut out = BTreeMap::new();
    for b in query(
        lake,
        "SELECT transaction_id, CAST(amount_usd AS VARCHAR), risk_score, \
         array_to_string(fraud_reasons, ',') FROM fact_transaction WHERE is_fraud",
    )
    .await
    {
        let utf8 = |i: usize| cast(b.column(i), &DataType::Utf8).unwrap();
        let (id, usd, reasons) = (utf8(0), utf8(1), utf8(3));
        let (id, usd, reasons) = (
            id.as_string::<i32>(),
            usd.as_string::<i32>(),
            reasons.as_string::<i32>(),
        );
        let score = b.column(2).as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            let reasons = if reasons.is_null(r) {
                ""
            } else {
                reasons.value(r)
            };
            out.insert(
                id.value(r).to_string(),
                (
                    usd.value(r).to_string(),
                    score.value(r),
                    reasons.to_string(),
                ),
            );
        }
    }
    out
}

/// Reads the alerts topic from the start until `expect` distinct
/// transactions arrived and 3 s pass without a message (or 180 s: Tansu is
/// slow to serve a topic while the other broker tests load it), and prints
/// one JSON line per message.
const CONSUME: &str = r#"
import json, sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
brokers, topic, expect = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": brokers, "group.id": "alert-check-" + topic,
              "auto.offset.reset": "earliest", "enable.auto.commit": False,
              "isolation.level": "read_committed"})
# Every partition from its first record, assigned directly: what is in the
# topic, without depending on the test broker's group coordination.
start = time.time()
parts = []
while not parts and time.time() - start < 60:
    try:
        md = c.list_topics(topic, timeout=5).topics.get(topic)
        parts = sorted(md.partitions) if md is not None and md.error is None else []
    except Exception as e:  # a slow broker: ask again
        print(f"metadata of {topic}: {e}", file=sys.stderr)
    if not parts:
        time.sleep(0.5)
c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
seen, out, last, per = set(), [], time.time(), {}
while time.time() - start < 180:
    m = c.poll(0.5)
    if m is None:
        if len(seen) >= expect and time.time() - last > 3:
            break
        continue
    if m.error():
        continue
    last = time.time()
    a = json.loads(m.value())
    assert m.key().decode() == a["customer_id"], "keyed by customer"
    per[m.partition()] = per.get(m.partition(), 0) + 1
    seen.add(a["transaction_id"])
    out.append(a)
marks = {}
for p in parts:
    try:
        marks[p] = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
    except Exception as e:  # diagnostics only
        marks[p] = str(e)
print(f"alerts topic {topic}: partitions {parts}, records read per partition {per}, "
      f"watermarks {marks}, {len(seen)} distinct of {expect} expected", file=sys.stderr)
c.close()
for a in out:
    print(json.dumps(a))
"#;

pub(crate) fn consume_alerts(brokers: &str, topic: &str, expect: usize) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args(["-c", CONSUME, brokers, topic, &expect.to_string()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown with a failing test's output: what the topic held.
    eprintln!("{}", String::from_utf8_lossy(&out.stderr).trim_end());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("alert JSON"))
        .collect()
}

/// Checks the alerts against the lake: after deduplication by `alert_id`,
/// exactly the lake's `is_fraud` rows, each once, with the lake's values.
/// Returns the duplicates seen before deduplication.
pub(crate) fn check_alerts(
    alerts: &[serde_json::Value],
    lake: &BTreeMap<String, (String, f64, String)>,
) -> usize {
    let mut by_id: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    let mut duplicates = 0;
    for a in alerts {
        let id = a["alert_id"].as_str().expect("alert_id").to_string();
        if let Some(prev) = by_id.insert(id.clone(), a) {
            duplicates += 1;
            assert_eq!(prev, a, "two different alerts with the same alert_id {id}");
        }
    }
    let mut tx: BTreeSet<String> = BTreeSet::new();
    for a in by_id.values() {
        let t = a["transaction_id"]
            .as_str()
            .expect("transaction_id")
            .to_string();
        assert!(tx.insert(t.clone()), "{t} alerted under two alert_ids");
        let (usd, score, reasons) = lake
            .get(&t)
            .unwrap_or_else(|| panic!("alert for {t}, which the lake does not flag"));
        assert_eq!(
            a["amount_usd"].as_f64(),
            usd.parse::<f64>().ok(),
            "{t} amount_usd"
        );
        assert_eq!(a["risk_score"].as_f64(), Some(*score), "{t} risk_score");
        let got: Vec<&str> = a["fraud_reasons"]
            .as_array()
            .expect("fraud_reasons")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(got.join(","), *reasons, "{t} reasons");
        for field in [
            "transaction_ts",
            "customer_id",
            "merchant_id",
            "amount",
            "currency",
            "source",
            "partition",
            "offset",
        ] {
            assert!(!a[field].is_null(), "{t}: {field} missing");
        }
    }
    let want: BTreeSet<String> = lake.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&tx).take(5).collect();
    assert!(
        missing.is_empty(),
        "flagged rows without an alert: {missing:?} …"
    );
    assert_eq!(tx, want);
    duplicates
}

/// The issue's test: a topic with fraud in it, the ingest killed with -9
/// twice mid-run, then drained; the alerts topic read by confluent-kafka.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_alerts_equal_the_lakes_flags_across_two_kill_dash_nines() {
    let b = brokers();
    let t = TestDir::new();
    let n = 30_000u64;
    let source = topic("alerts-src");
    let alerts = topic("fraud-alerts");
    let out = produce_generated(&b, &source, n, 17);
    assert!(out.contains(&format!("failed 0 of {n}")), "{out}");
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &source, "alerting");
    args.extend([
        "--alerts-topic",
        &alerts,
        "--batch-rows",
        "1000",
        "--batch-ms",
        "200",
    ]);
    let mut rng = kill_schedule_rng();
    let mut kills = 0;
    for _ in 0..2 {
        if run_then_kill(&args, Duration::from_millis(2500 + rng.below(2500))) {
            kills += 1;
        }
    }
    let mut drain = args.clone();
    drain.extend(["--stop-when-idle", "5"]);
    let summary = run_ok(&drain);
    assert!(summary.contains("alerts delivered"), "{summary}");
    let lake_flags = flagged(&lake).await;
    assert!(
        lake_flags.len() > 20,
        "too few flagged rows: {}",
        lake_flags.len()
    );
    let got = consume_alerts(&b, &alerts, lake_flags.len());
    let duplicates = check_alerts(&got, &lake_flags);
    eprintln!(
        "{kills} kills: {} alerts read, {} distinct = the lake's is_fraud rows, {duplicates} duplicates before deduplication by alert_id",
        got.len(),
        lake_flags.len()
    );
    assert_eq!(kills, 2, "the ingest finished before it was killed twice");
}

/// A webhook receiver: answers 500 to the first `fail` requests (and 400 to
/// every request while `refuse` exists as a file), else 204; logs each
/// request's headers and body as a JSON line.
const RECEIVER: &str = r#"
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, log, fail, refuse = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
count = {"n": 0}
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        count["n"] += 1
        if os.path.exists(refuse):
            code = 400
        elif count["n"] <= fail:
            code = 500
        else:
            code = 204
        with open(log, "a") as f:
            f.write(json.dumps({"code": code, "key": self.headers.get("Idempotency-Key"),
                                "auth": self.headers.get("Authorization"),
                                "type": self.headers.get("Content-Type"),
                                "body": json.loads(body)}) + "\n")
        self.send_response(code)
        self.end_headers()
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

struct Receiver(Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receiver(port: u16, log: &str, fail: u32, refuse: &str) -> Receiver {
    let child = Command::new("python3")
        .args([
            "-c",
            RECEIVER,
            &port.to_string(),
            log,
            &fail.to_string(),
            refuse,
        ])
        .spawn()
        .expect("python3");
    assert!(
        wait_for(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "receiver did not start"
    );
    Receiver(child)
}

/// The alerts of the requests the receiver acknowledged.
fn acknowledged(reqs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    reqs.iter()
        .filter(|r| r["code"] == 204)
        .flat_map(|r| r["body"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn requests(log: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_gets_every_alert_with_retries_stable_keys_and_a_hidden_token() {
    let t = TestDir::new();
    generate(&t.path("gen"), 20_000, 0.0, 8);
    let input = t.str("gen/transactions.jsonl");
    let lake = t.str("lake");
    let (log, refuse) = (t.str("requests.jsonl"), t.str("refuse"));
    let port = free_port();
    let _r = receiver(port, &log, 3, &refuse);
    let url = format!("http://127.0.0.1:{port}/hooks/fraud");
    let args = [
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &input,
        "--batch-rows",
        "5000",
        "--commit-rows",
        "0",
        "--alerts-webhook",
        &url,
        "--alerts-webhook-header",
        "Authorization: Bearer s3cr3t-token",
    ];
    let out = txpipe().args(args).output().unwrap();
    assert_success(&out, &args);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !printed.contains("s3cr3t"),
        "the token was printed:\n{printed}"
    );
    assert!(printed.contains("3 webhook retries"), "{printed}");

    let reqs = requests(&log);
    // The three failed attempts and their successful retry carry one key.
    let first: Vec<_> = reqs.iter().take(4).collect();
    assert_eq!(
        first.iter().map(|r| r["code"].as_u64()).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(500), Some(204)]
    );
    assert!(first
        .iter()
        .all(|r| r["key"] == first[0]["key"] && r["body"] == first[0]["body"]));
    for r in &reqs {
        assert_eq!(r["auth"], "Bearer s3cr3t-token");
        assert_eq!(r["type"], "application/json");
        assert!(r["key"].as_str().is_some_and(|k| k.len() == 32));
    }
    let delivered = acknowledged(&reqs);
    let lake_flags = flagged(&lake).await;
    assert!(lake_flags.len() > 20, "too few flagged rows");
    assert_eq!(
        check_alerts(&delivered, &lake_flags),
        0,
        "no crash, no duplicate"
    );
    // Batches without a flagged row send nothing; distinct keys per batch.
    let keys: BTreeSet<_> = reqs
        .iter()
        .filter(|r| r["code"] == 204)
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys.len(), reqs.iter().filter(|r| r["code"] == 204).count());
}

/// A webhook that refuses (HTTP 400) stops the ingest with a clear error
/// after the data landed; the next run, with the receiver healthy, re-sends
/// the undelivered alerts before anything else.
#[tokio::test(flavor = "multi_thread")]
async fn refused_alerts_stop_the_ingest_and_the_next_run_resends_them() {
    let t = TestDir::new();
    generate(&t.path("gen"), 20_000, 0.0, 9);
    let input = t.str("gen/transactions.jsonl");
    let lake = t.str("lake");
    let (log, refuse) = (t.str("requests.jsonl"), t.str("refuse"));
    std::fs::write(&refuse, "").unwrap();
    let port = free_port();
    let _r = receiver(port, &log, 0, &refuse);
    let url = format!("http://127.0.0.1:{port}/hook?token=abc123");
    let args = [
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &input,
        "--batch-rows",
        "20000",
        "--alerts-webhook",
        &url,
    ];
    let out = txpipe().args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "a refused delivery must fail the ingest"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alerts to webhook") && err.contains("400"),
        "{err}"
    );
    assert!(
        !err.contains("abc123"),
        "the URL's query was printed: {err}"
    );
    let lake_flags = flagged(&lake).await;
    assert!(
        lake_flags.len() > 20,
        "the batch is committed before its alerts"
    );

    std::fs::remove_file(&refuse).unwrap();
    let out = run_ok(&args);
    assert!(
        out.contains("nothing new") && out.contains("re-sent"),
        "{out}"
    );
    let delivered = acknowledged(&requests(&log));
    assert_eq!(check_alerts(&delivered, &lake_flags), 0);
}
