//! Issue 9, "a poison message that crashes nothing": hostile records produced by
//! an independent client (Python confluent-kafka) to a real Kafka-protocol broker
//! (Tansu, address in TXPIPE_TEST_BROKERS) among ordinary transactions. The
//! ingest must exit 0, account for every record exactly once, quarantine each
//! poison record whole with a reason naming its problem, and stay within a
//! bounded amount of memory.

use std::collections::BTreeMap;
use std::process::Command;

use txpipe_core::arrow::array::{Array, AsArray};
use txpipe_core::arrow::datatypes::{Int32Type, Int64Type};

use crate::helpers::*;
use crate::kafka::{assert_exactly_once, brokers, ingest_args, topic};

/// Depth of the deeply nested poison records.
const DEEP: usize = 100_000;
/// The 10 MiB poison record of issue 9.
const TEN_MIB: usize = 10 * 1024 * 1024;
/// The big record the Kafka test can use against Tansu 0.6: that broker accepts
/// a 10 MiB record but never serves it. Its fetch handler caps every response
/// at 5 MiB (`DEFAULT_MAX_BYTES = 5 * 1024 * 1024` in tansu-storage
/// `service/fetch.rs`), and `record_fetch.sql` returns only records whose
/// running key + value size is below that cap, so a record of 5 MiB or more is
/// never returned, not even alone (Kafka would return it: KIP-74). Consumers sit
/// at its offset forever. Measured with confluent-kafka: 5 000 000 bytes are
/// served, 6 000 000 are not. 10 MiB goes through Kafka in
/// `ten_mib_message_through_kafka` (ignored on Tansu 0.6) and through the same
/// decoder and sink from a file in `ten_mib_line_from_a_file_is_quarantined_whole`.
const BIG_ON_TANSU: usize = 4 * 1024 * 1024;
/// Peak RSS the ingest must stay under.
const MAX_RSS_KIB: u64 = 1024 * 1024;

/// What must become of one poison record.
enum Expect {
    /// Landed in fact_transaction with this transaction id.
    Landed(String),
    /// Quarantined, with a reason containing one of these phrases.
    Quarantined(&'static [&'static str]),
}

struct Poison {
    label: &'static str,
    key: Option<Vec<u8>>,
    /// `None` = a null Kafka value.
    value: Option<Vec<u8>>,
    expect: Expect,
}

/// A valid transaction (with a fresh id) whose object body is followed by
/// `extra` (a `,"field":value` fragment, or empty).
fn tx_with(id: &str, extra: &[u8]) -> Vec<u8> {
    let mut v = format!(
        r#"{{"transaction_id":"{id}","transaction_ts":"2026-11-20T13:45:12.123Z","customer_id":"9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10","merchant_id":"0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f","amount":12.5,"currency":"USD","latitude":48.85,"longitude":2.35,"device_id":"dev-1","payment_method":"credit_card","is_foreign":false"#
    )
    .into_bytes();
    v.extend_from_slice(extra);
    v.push(b'}');
    v
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn deep_object() -> Vec<u8> {
    let mut v = b"{\"a\":".repeat(DEEP);
    v.push(b'1');
    v.extend(std::iter::repeat_n(b'}', DEEP));
    v
}

fn deep_array() -> Vec<u8> {
    let mut v = vec![b'['; DEEP];
    v.push(b'1');
    v.extend(std::iter::repeat_n(b']', DEEP));
    v
}

/// An otherwise valid transaction whose transaction_id is a string of `size`
/// minus the rest of the message: exactly `size` bytes of well-formed JSON.
fn big_record(size: usize) -> Vec<u8> {
    let rest = tx_with("", b"");
    let head = br#"{"transaction_id":""#.len();
    let mut v = rest[..head].to_vec();
    v.extend(std::iter::repeat_n(b'x', size - rest.len()));
    v.extend_from_slice(&rest[head..]);
    assert_eq!(v.len(), size);
    v
}

fn big_poison(size: usize) -> Poison {
    Poison {
        label: "big",
        key: None,
        value: Some(big_record(size)),
        expect: Expect::Quarantined(&["field 'transaction_id'"]),
    }
}

fn poison_records() -> Vec<Poison> {
    const NESTED: &[&str] = &["nested too deeply", "recursion limit"];
    const UTF8: &[&str] = &["not valid UTF-8"];
    let q = Expect::Quarantined;
    let in_tx = |nested: Vec<u8>| {
        let mut extra = b",\"extra\":".to_vec();
        extra.extend(nested);
        tx_with(&fresh_id(), &extra)
    };
    // A known field holding the nesting.
    let deep_amount = {
        let id = fresh_id();
        let t = String::from_utf8(tx_with(&id, b"")).unwrap();
        let deep = String::from_utf8(deep_array()).unwrap();
        t.replace("\"amount\":12.5", &format!("\"amount\":{deep}"))
            .into_bytes()
    };
    let bad_key = {
        let mut v = b"{\"\xff\xfe\":1,".to_vec();
        v.extend_from_slice(&tx_with(&fresh_id(), b"")[1..]);
        v
    };
    let bad_known_value = {
        let t = tx_with(&fresh_id(), b"");
        let s = String::from_utf8(t).unwrap();
        let mut v = Vec::new();
        let (a, b) = s.split_once("dev-1").unwrap();
        v.extend_from_slice(a.as_bytes());
        v.extend_from_slice(b"dev-\xff\xfe");
        v.extend_from_slice(b.as_bytes());
        v
    };
    let keyed_id = fresh_id();
    vec![
        big_poison(BIG_ON_TANSU),
        Poison {
            label: "deep_object",
            key: None,
            value: Some(deep_object()),
            expect: q(NESTED),
        },
        // A top-level array is rejected before the parser descends into it.
        Poison {
            label: "deep_array",
            key: None,
            value: Some(deep_array()),
            expect: q(&["not a JSON object"]),
        },
        Poison {
            label: "deep_object_unknown_field",
            key: None,
            value: Some(in_tx(deep_object())),
            expect: q(NESTED),
        },
        Poison {
            label: "deep_array_unknown_field",
            key: None,
            value: Some(in_tx(deep_array())),
            expect: q(NESTED),
        },
        Poison {
            label: "deep_array_in_amount",
            key: None,
            value: Some(deep_amount),
            expect: q(NESTED),
        },
        Poison {
            label: "invalid_utf8_key",
            key: None,
            value: Some(bad_key),
            expect: q(UTF8),
        },
        Poison {
            label: "invalid_utf8_known_value",
            key: None,
            value: Some(bad_known_value),
            expect: q(UTF8),
        },
        Poison {
            label: "invalid_utf8_unknown_value",
            key: None,
            value: Some(tx_with(&fresh_id(), b",\"note\":\"\xff\xfe\"")),
            expect: q(UTF8),
        },
        // The Kafka key is opaque bytes to txpipe: it is neither decoded nor
        // stored (lineage is topic/partition/offset), so a key that is not
        // UTF-8 must not keep a valid transaction out of the lake.
        Poison {
            label: "invalid_utf8_kafka_key",
            key: Some(b"\xff\xfe\x00\x80key".to_vec()),
            value: Some(tx_with(&keyed_id, b"")),
            expect: Expect::Landed(keyed_id),
        },
        // Null key, null value, headers only (the producer script adds them).
        Poison {
            label: "header_only",
            key: None,
            value: None,
            expect: q(&["empty message", "no value"]),
        },
    ]
}

/// Produces the first half of `lines`, then every poison record (files in
/// `dir`, in `labels` order), then the rest; prints the number of lines and the
/// partition and offset of each poison record as JSON.
const PY_PRODUCE_POISON: &str = r#"
import sys, os, json
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
brokers, topic, lines_path, pdir = sys.argv[1:5]
labels = sys.argv[5:]
admin = AdminClient({"bootstrap.servers": brokers})
admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
# No compression: the broker sees the 10 MiB record at its full size.
p = Producer({"bootstrap.servers": brokers, "message.max.bytes": 16 * 1024 * 1024,
              "acks": "all", "enable.idempotence": True})
failed, where = [], {}
def cb(err, msg):
    if err is not None:
        failed.append(str(err))
def poison_cb(label):
    def cb(err, msg):
        if err is not None:
            failed.append("%s: %s" % (label, err))
        else:
            where[label] = [msg.partition(), msg.offset()]
    return cb
lines = [l.rstrip(b"\n") for l in open(lines_path, "rb")]
half = len(lines) // 2
for l in lines[:half]:
    p.produce(topic, l, callback=cb)
p.poll(0)
def read(name):
    path = os.path.join(pdir, name)
    return open(path, "rb").read() if os.path.exists(path) else None
for label in labels:
    headers = [("trace-id", b"abc-123"), ("bin", b"\xff\x00\xfe")] if label == "header_only" else None
    p.produce(topic, read(label + ".value"), key=read(label + ".key"), headers=headers,
              callback=poison_cb(label))
    p.poll(0)
for l in lines[half:]:
    p.produce(topic, l, callback=cb)
left = p.flush(120)
print(json.dumps({"lines": len(lines), "where": where, "failed": failed, "unflushed": left}))
"#;

/// Runs argv under Python, returning (its output, peak RSS of argv in KiB, exit code).
fn run_measured(argv: &[String]) -> (std::process::Output, u64, i32) {
    const WRAP: &str = "import resource,subprocess,sys; r=subprocess.run(sys.argv[1:]); \
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)";
    let out = Command::new("python3")
        .args(["-c", WRAP])
        .args(argv)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let nums: Vec<i64> = last
        .split_whitespace()
        .map(|s| s.parse().unwrap_or_else(|_| panic!("{stdout}")))
        .collect();
    assert_eq!(nums.len(), 2, "wrapper output:\n{stdout}");
    (out, nums[0] as u64, nums[1] as i32)
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_are_quarantined_whole_with_reasons_and_crash_nothing() {
    ingest_poisoned(poison_records(), BIG_ON_TANSU).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "Tansu 0.6 never serves a record of 5 MiB or more (see BIG_ON_TANSU): \
            run with --ignored against a broker that does (Apache Kafka, Redpanda)"]
async fn ten_mib_message_through_kafka() {
    ingest_poisoned(vec![big_poison(TEN_MIB)], TEN_MIB).await;
}

/// Produces generated transactions with `poison` among them, ingests the topic
/// (measuring the peak RSS) and checks what became of every record; the one
/// labelled "big" must be kept whole at `big` bytes.
async fn ingest_poisoned(poison: Vec<Poison>, big: usize) {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("poison");
    let (lines, valid, bad) = generate(&t.path("gen"), 2000, 0.01, 33);
    let pdir = t.path("poison");
    std::fs::create_dir_all(&pdir).unwrap();
    for p in &poison {
        if let Some(k) = &p.key {
            std::fs::write(pdir.join(format!("{}.key", p.label)), k).unwrap();
        }
        if let Some(v) = &p.value {
            std::fs::write(pdir.join(format!("{}.value", p.label)), v).unwrap();
        }
    }
    let mut args = vec![
        "-c".to_string(),
        PY_PRODUCE_POISON.to_string(),
        b.clone(),
        topic.clone(),
        t.str("gen/transactions.jsonl"),
        pdir.display().to_string(),
    ];
    args.extend(poison.iter().map(|p| p.label.to_string()));
    let out = Command::new("python3").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "producer failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let produced: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        produced["failed"],
        serde_json::json!([]),
        "the broker refused records (a size limit?): {produced}"
    );
    assert_eq!(produced["unflushed"], 0, "{produced}");
    assert_eq!(produced["lines"], lines);
    let position = |label: &str| -> (i32, i64) {
        let w = &produced["where"][label];
        (w[0].as_i64().unwrap() as i32, w[1].as_i64().unwrap())
    };

    // Ingest, measuring the peak RSS.
    let lake = t.str("lake");
    let mut argv = vec![env!("CARGO_BIN_EXE_txpipe").to_string()];
    argv.extend(
        ingest_args(&lake, &b, &topic, "poisoned")
            .into_iter()
            .map(String::from),
    );
    argv.extend(["--stop-when-idle".to_string(), "5".to_string()]);
    let (out, rss_kib, code) = run_measured(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "poison ingest peak RSS: {rss_kib} KiB ({:.1} MiB), exit {code}",
        rss_kib as f64 / 1024.0
    );
    assert_eq!(
        code, 0,
        "ingest failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        rss_kib < MAX_RSS_KIB,
        "peak RSS {rss_kib} KiB is over {MAX_RSS_KIB} KiB"
    );

    let landed_poison = poison
        .iter()
        .filter(|p| matches!(p.expect, Expect::Landed(_)))
        .count() as u64;
    let want_landed = valid + landed_poison;
    let want_quarantined = bad + poison.len() as u64 - landed_poison;
    let rows_in = lines + poison.len() as u64;
    assert!(
        stdout.contains(&format!(
            "rows in {rows_in} = landed {want_landed} + quarantined {want_quarantined}"
        )),
        "{stdout}"
    );
    assert_exactly_once(&lake, want_landed, want_quarantined).await;

    // Every poison record, at its partition and offset.
    let mut quarantined = BTreeMap::new();
    for batch in query(
        &lake,
        "SELECT source_partition, source_offset, error, payload FROM quarantine",
    )
    .await
    {
        let (p, o, e, pl) = (
            batch.column(0).as_primitive::<Int32Type>(),
            batch.column(1).as_primitive::<Int64Type>(),
            batch.column(2).as_string::<i32>(),
            batch.column(3).as_binary::<i32>(),
        );
        for i in 0..batch.num_rows() {
            let payload = (!pl.is_null(i)).then(|| pl.value(i).to_vec());
            quarantined.insert((p.value(i), o.value(i)), (e.value(i).to_string(), payload));
        }
    }
    for p in &poison {
        let at = position(p.label);
        match &p.expect {
            Expect::Quarantined(phrases) => {
                let (reason, payload) = quarantined
                    .get(&at)
                    .unwrap_or_else(|| panic!("{} at {at:?} is not in the quarantine", p.label));
                eprintln!("quarantine reason for {}: {reason}", p.label);
                assert!(
                    phrases.iter().any(|ph| reason.contains(ph)),
                    "{}: reason {reason:?} names none of {phrases:?}",
                    p.label
                );
                assert!(
                    reason.len() <= 512,
                    "{}: reason is {} bytes",
                    p.label,
                    reason.len()
                );
                let want = p.value.clone().unwrap_or_default();
                let got = payload.clone().unwrap_or_default();
                assert!(
                    got == want,
                    "{}: payload of {} bytes kept as {} bytes",
                    p.label,
                    want.len(),
                    got.len()
                );
            }
            Expect::Landed(id) => {
                let rows = query_i64s(
                    &lake,
                    &format!(
                        "SELECT COUNT(*), MIN(source_partition), MIN(source_offset) \
                         FROM fact_transaction WHERE transaction_id = '{id}'"
                    ),
                )
                .await;
                assert_eq!(rows, vec![1, at.0 as i64, at.1], "{} landed once", p.label);
                eprintln!("{} landed at {at:?}", p.label);
            }
        }
    }
    let kept = &quarantined[&position("big")];
    assert_eq!(
        kept.1.as_ref().map(Vec::len),
        Some(big),
        "the big payload is kept whole"
    );
}

/// The 10 MiB record through the same decoder and sink, from a JSON-lines file
/// (Tansu cannot serve it over Kafka).
#[tokio::test(flavor = "multi_thread")]
async fn ten_mib_line_from_a_file_is_quarantined_whole() {
    let t = TestDir::new();
    let (lines, valid, bad) = generate(&t.path("gen"), 1000, 0.01, 34);
    let path = t.path("gen/transactions.jsonl");
    let mut input = std::fs::read(&path).unwrap();
    input.extend_from_slice(&big_record(TEN_MIB));
    input.push(b'\n');
    input.extend_from_slice(&tx_with(&fresh_id(), b""));
    input.push(b'\n');
    std::fs::write(&path, &input).unwrap();
    let lake = t.str("lake");
    let file = t.str("gen/transactions.jsonl");
    let argv: Vec<String> = [
        env!("CARGO_BIN_EXE_txpipe"),
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &file,
        "--quiet",
    ]
    .map(String::from)
    .into();
    let (out, rss_kib, code) = run_measured(&argv);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "10 MiB line file ingest peak RSS: {rss_kib} KiB ({:.1} MiB), exit {code}",
        rss_kib as f64 / 1024.0
    );
    assert_eq!(
        code, 0,
        "ingest failed:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(rss_kib < MAX_RSS_KIB, "peak RSS {rss_kib} KiB");
    let (landed, quarantined) = (valid + 1, bad + 1);
    assert!(
        stdout.contains(&format!(
            "rows in {} = landed {landed} + quarantined {quarantined}",
            lines + 2
        )),
        "{stdout}"
    );
    let mut big = Vec::new();
    for b in query(&lake, "SELECT error, payload FROM quarantine").await {
        let (e, pl) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_binary::<i32>(),
        );
        big.extend(
            (0..b.num_rows())
                .filter(|&i| pl.value(i).len() > 1_000_000)
                .map(|i| (e.value(i).to_string(), pl.value(i).to_vec())),
        );
    }
    assert_eq!(big.len(), 1, "one big quarantined record");
    let (reason, payload) = &big[0];
    eprintln!("quarantine reason for the 10 MiB line: {reason}");
    assert!(reason.contains("field 'transaction_id'"), "{reason}");
    assert!(reason.len() <= 512, "{reason}");
    assert!(
        *payload == big_record(TEN_MIB),
        "the 10 MiB payload is kept whole"
    );
}
