//! The lake on S3 for real: moto's S3 server on 127.0.0.1 (tests/run.sh starts
//! it, creates the bucket and exports the AWS_* variables object_store reads).
//! moto honours `If-None-Match: *` under concurrency, which Delta commits on
//! S3 rely on.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::crash_resume::offsets;
use crate::helpers::*;
use crate::kafka::{
    assert_exactly_once, brokers, produce_generated, spawn_member, takeover_args, topic,
};

/// A fresh lake under the test bucket.
fn s3_lake(name: &str) -> String {
    let bucket = std::env::var("TXPIPE_TEST_S3_BUCKET").expect(
        "TXPIPE_TEST_S3_BUCKET is not set: run the tests with tests/run.sh, which starts an S3 server",
    );
    format!("s3://{bucket}/{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Committed data files of a table.
async fn committed(lake: &str, table: &str) -> Vec<String> {
    let l = txpipe_core::lake::Lake::open(lake).unwrap();
    txpipe_core::sink::delta::committed_files(&l, table)
        .await
        .unwrap()
}

/// Rows of the fact table, polled until `at_least` or the deadline.
async fn wait_for_fact_rows(lake: &str, at_least: i64, deadline: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let n = if committed(lake, "fact_transaction").await.is_empty() {
            0
        } else {
            query_i64s(lake, "SELECT COUNT(*) FROM fact_transaction").await[0]
        };
        if n >= at_least || started.elapsed() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const DELTA_S3_SCRIPT: &str = r#"
import os, sys, json, deltalake
lake = sys.argv[1]
opts = {"AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"], "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": os.environ["AWS_REGION"], "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
        "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}
out = {t: deltalake.DeltaTable(f"{lake}/{t}", storage_options=opts).to_pyarrow_table().num_rows
       for t in ("fact_transaction", "quarantine")}
print(json.dumps(out), flush=True)
# deltalake's S3 client threads can abort the interpreter's shutdown
# ("terminate called without an active exception"); the answer is out.
os._exit(0)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn file_ingest_into_s3_survives_kill_dash_nine_then_compacts_exactly() {
    let t = TestDir::new();
    let (lines, valid, bad) = generate(&t.path("gen"), 120_000, 0.01, 31);
    let lake = s3_lake("file");
    let input = t.str("gen/transactions.jsonl");
    let args = [
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &input,
        "--batch-rows",
        "2000",
        "--quiet",
    ];
    // kill -9 once the ingest has committed something, a few times.
    let mut kills = 0;
    for round in 1..=3i64 {
        let mut child = txpipe()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let landed = wait_for_fact_rows(&lake, round * 15_000, Duration::from_secs(60)).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        assert!(landed > 0, "round {round}: nothing landed on S3");
    }
    assert!(kills >= 1, "the ingest was never killed mid-run");
    run_ok(&args);
    let again = run_ok(&args);
    assert!(again.contains("nothing new"), "{again}");

    let check = |lake: String| async move {
        let landed = offsets(&lake, "fact_transaction").await;
        let quarantined = offsets(&lake, "quarantine").await;
        let all: BTreeSet<i64> = landed.iter().chain(&quarantined).copied().collect();
        assert_eq!(landed.len() as u64, valid, "fact rows after {kills} kills");
        assert_eq!(quarantined.len() as u64, bad, "quarantine rows");
        assert_eq!(all, (0..lines as i64).collect(), "every line exactly once");
    };
    check(lake.clone()).await;

    // Compaction on S3: fewer files, the same rows.
    let before = committed(&lake, "fact_transaction").await.len();
    let out = run_ok(&["compact", "--lake", &lake, "--table", "fact_transaction"]);
    let after = committed(&lake, "fact_transaction").await.len();
    assert!(after < before, "{before} -> {after} files\n{out}");
    check(lake.clone()).await;

    // An independent Delta reader over S3 sees exactly the committed rows.
    let py = Command::new(crate::external_readers::delta_python())
        .arg("-c")
        .arg(DELTA_S3_SCRIPT)
        .arg(&lake)
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(counts["fact_transaction"], valid);
    assert_eq!(counts["quarantine"], bad);
    // No secret in what txpipe printed.
    assert!(!out.contains("testing"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_kafka_members_share_one_s3_lake_through_a_kill_dash_nine() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("s3pair");
    let n = 40_000u64;
    produce_generated(&b, &topic, n, 32);
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 32);
    let lake = s3_lake("kafka");
    let args = takeover_args(&lake, &b, &topic, "s3pair");
    let spawn = || spawn_member(&args);
    let survivor = spawn();
    let mut victim = spawn();
    // Both members commit to the same S3 tables; kill one mid-stream.
    let landed = wait_for_fact_rows(&lake, 8_000, Duration::from_secs(90)).await;
    assert!(landed >= 8_000, "only {landed} rows landed");
    if victim.try_wait().unwrap().is_none() {
        victim.kill().unwrap();
    }
    victim.wait().unwrap();
    let out = survivor.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_exactly_once(&lake, valid, bad).await;
}
