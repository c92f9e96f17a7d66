//! Kafka ingest observed from outside: the ingest's Prometheus endpoint and
//! `txpipe serve` beside it, and the demo on the real test broker.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::kafka::{assert_exactly_once, brokers, ingest_args, produce_generated, topic};

/// `GET path`, asserting 200; returns the body.
fn get_ok(addr: &str, path: &str) -> String {
    let (code, body) = http_get(addr, path);
    assert_eq!(code, 200, "{body}");
    body
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
        let m = parse_prometheus(&get_ok(&addr, "/metrics"));
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
    let json: serde_json::Value = serde_json::from_str(&get_ok(&addr, "/api/ingest")).unwrap();
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
    let l = txpipe_core::lake::Lake::open(&lake).unwrap();
    let mut files = 0;
    for table in ["fact_transaction", "quarantine"] {
        files += txpipe_core::sink::delta::committed_files(&l, table)
            .await
            .unwrap()
            .len();
    }
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
    let server = serve(&lake, &["--brokers", &b, "--topic", &topic]);
    let stats: serde_json::Value =
        serde_json::from_str(&get_ok(&server.addr, "/api/ingest")).unwrap();
    drop(server);
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
