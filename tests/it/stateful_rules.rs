//! Stateful fraud rules end to end: the same rows give the same flags from one
//! batch, from many micro-batches, after kill -9 and resume, and from a Kafka
//! topic keyed by customer; the quality report; bad rules fail at start.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use txpipe_core::arrow::array::{Array, AsArray};
use txpipe_core::arrow::datatypes::Float64Type;

use crate::helpers::*;
use crate::kafka::{brokers, ingest_args, produce_generated, topic};

/// transaction_id → (reasons, risk_score, evidence) of every fact row.
async fn flags(lake: &str) -> BTreeMap<String, (String, f64, String)> {
    let mut out = BTreeMap::new();
    for b in query(
        lake,
        "SELECT transaction_id, array_to_string(fraud_reasons, ','), risk_score, \
         coalesce(fraud_evidence, '') FROM fact_transaction",
    )
    .await
    {
        let id = b.column(0).as_string::<i32>();
        let reasons = b.column(1).as_string::<i32>();
        let score = b.column(2).as_primitive::<Float64Type>();
        let evidence = b.column(3).as_string::<i32>();
        for r in 0..b.num_rows() {
            let reasons = if reasons.is_null(r) {
                ""
            } else {
                reasons.value(r)
            };
            let prev = out.insert(
                id.value(r).to_string(),
                (
                    reasons.to_string(),
                    score.value(r),
                    evidence.value(r).to_string(),
                ),
            );
            assert!(prev.is_none(), "{} landed twice", id.value(r));
        }
    }
    out
}

fn assert_same_flags(
    a: &BTreeMap<String, (String, f64, String)>,
    b: &BTreeMap<String, (String, f64, String)>,
    what: &str,
) {
    assert_eq!(a.len(), b.len(), "{what}: row counts differ");
    let mut diffs = 0;
    for (id, fa) in a {
        let fb = b.get(id).unwrap_or_else(|| panic!("{what}: {id} missing"));
        if fa != fb {
            diffs += 1;
            if diffs <= 5 {
                eprintln!("{what}: {id}\n  {fa:?}\n  {fb:?}");
            }
        }
    }
    assert_eq!(diffs, 0, "{what}: {diffs} rows with different flags");
}

fn count_rule(f: &BTreeMap<String, (String, f64, String)>, rule: &str) -> usize {
    f.values()
        .filter(|(r, _, _)| r.split(',').any(|x| x == rule))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_are_the_same_in_one_batch_many_batches_and_after_kill_dash_nine() {
    let t = TestDir::new();
    let (_, valid, _) = generate(&t.path("gen"), 150_000, 0.005, 21);
    let input = t.str("gen/transactions.jsonl");
    let ingest = |lake: &str, rows: &str| {
        run_ok(&[
            "ingest",
            "--lake",
            lake,
            "--from-file",
            &input,
            "--batch-rows",
            rows,
            "--quiet",
        ])
    };
    let one = t.str("one");
    ingest(&one, "1000000");
    let many = t.str("many");
    ingest(&many, "997");
    let f_one = flags(&one).await;
    assert_eq!(f_one.len() as u64, valid);
    for rule in [
        "velocity",
        "impossible_travel",
        "card_testing",
        "amount_spike",
        "new_device",
    ] {
        assert!(count_rule(&f_one, rule) > 0, "{rule} never fired");
    }
    let fraud = f_one.values().filter(|(_, s, _)| *s >= 1.0).count();
    assert!(
        fraud > 0 && (fraud as f64) < 0.02 * valid as f64,
        "{fraud} flagged"
    );
    assert_same_flags(&f_one, &flags(&many).await, "997-row batches");

    // kill -9 at random moments, then resume: the state is rebuilt from the lake.
    let crashed = t.str("crashed");
    let args = [
        "ingest",
        "--lake",
        &crashed,
        "--from-file",
        &input,
        "--batch-rows",
        "1500",
        "--quiet",
    ];
    let mut rng = kill_schedule_rng();
    let mut kills = 0;
    for _ in 0..4 {
        let mut child = txpipe()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(300 + rng.below(900));
        let started = Instant::now();
        while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        if child.wait().unwrap().success() {
            break;
        }
    }
    assert!(kills >= 1, "never killed mid-run");
    let out = run_ok(&args);
    assert!(
        out.contains("resumed") || out.contains("nothing new"),
        "{out}"
    );
    assert_same_flags(&f_one, &flags(&crashed).await, "after kill -9 and resume");

    // Quality against the generator's labels: the report agrees with SQL.
    let labels = t.str("gen/fraud_labels.csv");
    let json = run_ok(&["quality", "--lake", &one, "--labels", &labels, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["rows"], valid);
    assert_eq!(report["is_fraud"]["flagged"], fraud as u64);
    let table = run_ok(&["quality", "--lake", &one, "--labels", &labels]);
    assert!(
        table.contains("compromised_card") && table.contains("is_fraud"),
        "{table}"
    );
}

/// The same generated stream through a 4-partition topic keyed by customer,
/// with a member killed -9 mid-run: flags equal the file's, row for row.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_keyed_by_customer_gives_the_files_flags_across_kill_dash_nine() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("stateful");
    let n = 40_000u64;
    produce_generated(&b, &topic, n, 13);
    let (_, valid, _) = generate(&t.path("gen"), n, 0.01, 13);
    let file_lake = t.str("file");
    run_ok(&[
        "ingest",
        "--lake",
        &file_lake,
        "--from-file",
        &t.str("gen/transactions.jsonl"),
        "--quiet",
    ]);
    let lake = t.str("kafka");
    let mut args = ingest_args(&lake, &b, &topic, "stateful");
    args.extend([
        "--stop-when-idle",
        "6",
        "--batch-rows",
        "700",
        "--batch-ms",
        "200",
    ]);
    let mut child = txpipe()
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some batches have landed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let landed = std::path::Path::new(&lake).join("fact_transaction/_delta_log");
        let commits = std::fs::read_dir(&landed).map(|d| d.count()).unwrap_or(0);
        if commits >= 4 || Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    run_ok(&args);
    let f_kafka = flags(&lake).await;
    assert_eq!(f_kafka.len() as u64, valid);
    let f_file = flags(&file_lake).await;
    assert_same_flags(&f_file, &f_kafka, "kafka vs file");
}

/// A hand-made labelled set: every number of the report is known.
#[tokio::test(flavor = "multi_thread")]
async fn quality_report_on_a_hand_made_labelled_set() {
    let t = TestDir::new();
    std::fs::create_dir_all(t.path("in")).unwrap();
    let mut lines = String::new();
    for (i, amount) in [
        10.0, 200.0, 300.0, 20.0, 400.0, 30.0, 500.0, 40.0, 50.0, 60.0,
    ]
    .iter()
    .enumerate()
    {
        lines.push_str(&format!(
            r#"{{"transaction_id":"00000000-0000-4000-8000-{i:012}","transaction_ts":"2026-11-20T10:{i:02}:00Z","customer_id":"9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10","merchant_id":"0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f","amount":{amount},"currency":"USD","latitude":48.85,"longitude":2.35,"device_id":"dev-1","payment_method":"credit_card","is_foreign":false}}"#
        ));
        lines.push('\n');
    }
    std::fs::write(t.path("in/tx.jsonl"), lines).unwrap();
    std::fs::write(
        t.path("rules.toml"),
        "[[rule]]\nname = \"big\"\nsql = \"amount_usd > 100\"\n\
         [[rule]]\nname = \"tiny\"\nsql = \"amount_usd < 15\"\nweight = 0.5\n",
    )
    .unwrap();
    // Labelled: rows 1, 2 (flagged by big) and 3 (not flagged), and one id not in the lake.
    std::fs::write(
        t.path("labels.csv"),
        "transaction_id,scenario\n\
         00000000-0000-4000-8000-000000000001,takeover\n\
         00000000-0000-4000-8000-000000000002,takeover\n\
         00000000-0000-4000-8000-000000000003,testing\n\
         00000000-0000-4000-8000-000000000099,testing\n",
    )
    .unwrap();
    let lake = t.str("lake");
    let rules = t.str("rules.toml");
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &t.str("in/tx.jsonl"),
        "--rules",
        &rules,
        "--quiet",
    ]);
    let json = run_ok(&[
        "quality",
        "--lake",
        &lake,
        "--labels",
        &t.str("labels.csv"),
        "--rules",
        &rules,
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["rows"], 10);
    assert_eq!(r["labelled_rows"], 3);
    assert_eq!(r["labels_not_in_lake"], 1);
    // big fires on 200, 300, 400, 500 (4 rows, 2 labelled); tiny (weight 0.5) alone is not fraud.
    assert_eq!(r["is_fraud"]["flagged"], 4);
    assert_eq!(r["is_fraud"]["true_positives"], 2);
    assert_eq!(r["is_fraud"]["precision"], 0.5);
    assert!((r["is_fraud"]["recall"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((r["is_fraud"]["f1"].as_f64().unwrap() - 4.0 / 7.0).abs() < 1e-12);
    assert_eq!(r["is_fraud"]["alerts_per_1000"], 400.0);
    let rules_out = r["rules"].as_array().unwrap();
    assert_eq!(rules_out[1]["name"], "tiny");
    assert_eq!(rules_out[1]["flagged"], 1);
    assert_eq!(rules_out[1]["true_positives"], 0);
    let scenarios = r["scenarios"].as_array().unwrap();
    assert_eq!(scenarios[0]["scenario"], "takeover");
    assert_eq!(scenarios[0]["recall"], 1.0);
    assert_eq!(scenarios[1]["scenario"], "testing");
    assert_eq!(scenarios[1]["labelled"], 1);
    assert_eq!(scenarios[1]["caught"], 0);
}

/// A bad stateful rule fails at start, naming the rule; nothing is landed.
#[test]
fn bad_stateful_rules_fail_at_start_naming_the_rule() {
    let t = TestDir::new();
    let (_, _, _) = generate(&t.path("gen"), 100, 0.0, 3);
    for (sql, expect) in [
        (
            "count(*) OVER (ORDER BY transaction_ts RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW) > 3",
            "no key",
        ),
        (
            "count(*) OVER (PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '-10 minutes' PRECEDING AND CURRENT ROW) > 3",
            "negative",
        ),
        (
            "count(*) FILTER (WHERE amount_usdd < 5) OVER (PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) > 3",
            "amount_usdd",
        ),
        (
            "count(*) OVER (PARTITION BY card_number ORDER BY transaction_ts RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW) > 3",
            "card_number",
        ),
    ] {
        let rules = t.path("bad.toml");
        std::fs::write(&rules, format!("[[rule]]\nname = \"burst\"\nsql = \"{sql}\"\n")).unwrap();
        let lake = t.str("lake");
        let out = txpipe()
            .args([
                "ingest",
                "--lake",
                &lake,
                "--from-file",
                &t.str("gen/transactions.jsonl"),
                "--rules",
                rules.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{sql}: accepted");
        assert!(err.contains("rule 'burst'") && err.contains(expect), "{sql}: {err}");
        assert!(!std::path::Path::new(&lake).join("fact_transaction").exists());
    }
}

/// A fact table created by an older txpipe (without `risk_score` and
/// `fraud_evidence`) gains the columns on the next ingest, in one commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_lake_from_before_risk_scores_gains_the_columns() {
    use std::sync::Arc;
    use txpipe_core::arrow::datatypes::Schema;
    use txpipe_core::schema::FACT_SCHEMA;
    use txpipe_core::sink::delta::{open_or_create, TableSpec};

    let t = TestDir::new();
    generate(&t.path("gen"), 2_000, 0.0, 5);
    let lake_s = t.str("lake");
    let lake = txpipe_core::lake::Lake::open(&lake_s).unwrap();
    let old: Vec<_> = FACT_SCHEMA
        .fields()
        .iter()
        .filter(|f| f.name() != "risk_score" && f.name() != "fraud_evidence")
        .map(|f| f.as_ref().clone())
        .collect();
    open_or_create(
        &lake,
        "fact_transaction",
        &TableSpec::new(Arc::new(Schema::new(old))).partitioned_by("event_date"),
    )
    .await
    .unwrap();
    run_ok(&[
        "ingest",
        "--lake",
        &lake_s,
        "--from-file",
        &t.str("gen/transactions.jsonl"),
        "--quiet",
    ]);
    let n = query_i64s(
        &lake_s,
        "SELECT COUNT(*), COUNT(risk_score), SUM(CASE WHEN risk_score >= 1 THEN 1 ELSE 0 END) \
         - SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) FROM fact_transaction",
    )
    .await;
    assert_eq!(n, vec![2_000, 2_000, 0]);
}

/// DuckDB, running the default rules as its own window queries
/// (benches/stateful_rules.py), flags exactly the rows txpipe flags, with the
/// same reasons and risk score.
#[tokio::test(flavor = "multi_thread")]
async fn duckdb_window_queries_agree_row_for_row() {
    let t = TestDir::new();
    generate(&t.path("gen"), 60_000, 0.0, 17);
    let lake = t.str("lake");
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &t.str("gen/transactions.jsonl"),
        "--quiet",
    ]);
    let bench = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches");
    let script = format!(
        r#"
import sys, json, subprocess, duckdb
sys.path.insert(0, {bench:?})
from stateful_rules import DUCKDB_STATEFUL
src, fx, out = sys.argv[1], sys.argv[2], sys.argv[3]
subprocess.run([sys.executable, "-c", DUCKDB_STATEFUL, src, fx, out, "2"], check=True)
rows = duckdb.sql(f"SELECT transaction_id, array_to_string(fraud_reasons, ','), coalesce(risk_score, 0) FROM read_parquet('{{out}}/**/*.parquet')").fetchall()
print(json.dumps({{r[0]: [r[1], float(r[2])] for r in rows}}))
"#
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .arg(t.str("gen/transactions.jsonl"))
        .arg(t.str("gen/fx_rates.csv"))
        .arg(t.str("duck"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "DuckDB job failed (the test command installs duckdb):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duck: BTreeMap<String, (String, f64)> = serde_json::from_slice(&out.stdout).unwrap();
    let ours = flags(&lake).await;
    assert_eq!(duck.len(), ours.len());
    let mut stateful_hits = 0;
    for (id, (reasons, score, _)) in &ours {
        let (d_reasons, d_score) = &duck[id];
        assert_eq!(reasons, d_reasons, "{id}");
        assert!((score - d_score).abs() < 1e-9, "{id}: {score} vs {d_score}");
        stateful_hits += usize::from(reasons.contains("velocity") || reasons.contains("travel"));
    }
    assert!(stateful_hits > 10, "only {stateful_hits} stateful hits");
}
