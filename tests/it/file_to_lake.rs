//! generate → seed → ingest → read back: counts, lineage, flags and sums against an oracle.

use std::collections::{BTreeMap, BTreeSet};

use txpipe_core::arrow::array::{Array, AsArray};
use txpipe_core::arrow::datatypes::{Date32Type, Int64Type};
use txpipe_core::fx::FxTable;

use crate::helpers::*;

/// What the oracle knows about one valid input line.
struct Expected {
    id: String,
    cents: i64,
    reasons: Vec<&'static str>,
    day: String,
}

/// Independent reading of the generator's output: which lines are valid, and
/// what the lake must say about them. Uses serde_json::Value (fine in tests).
fn oracle(lines: &[Option<serde_json::Value>]) -> BTreeMap<i64, Expected> {
    let fx = FxTable::defaults();
    let mut out = BTreeMap::new();
    for (i, v) in lines.iter().enumerate() {
        let Some(serde_json::Value::Object(m)) = v else {
            continue;
        };
        let id = m
            .get("transaction_id")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let ts = m
            .get("transaction_ts")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let currency = m.get("currency").and_then(|v| v.as_str()).unwrap_or("");
        let Some(amount) = m.get("amount").and_then(|v| v.as_f64()) else {
            continue;
        };
        if id.len() != 36 || ts.starts_with("2026-13") || fx.rate(currency).is_none() {
            continue;
        }
        let cents = (amount * 100.0).round() as i64;
        let usd = (cents as f64 * fx.rate(currency).unwrap()).round() as i64;
        let lat = m.get("latitude").and_then(|v| v.as_f64());
        let lon = m.get("longitude").and_then(|v| v.as_f64());
        let mut reasons = vec![];
        if usd > 500_000 {
            reasons.push("high_amount");
        }
        if m.get("is_foreign").and_then(|v| v.as_bool()) == Some(true) {
            reasons.push("foreign");
        }
        if !lat.is_some_and(|x| (-90.0..=90.0).contains(&x))
            || !lon.is_some_and(|x| (-180.0..=180.0).contains(&x))
        {
            reasons.push("invalid_geo");
        }
        out.insert(
            i as i64,
            Expected {
                id: id.to_string(),
                cents,
                reasons,
                day: ts[..10].to_string(),
            },
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_file_lands_exactly_with_flags_and_sums() {
    let t = TestDir::new();
    let (lines, valid, bad) = generate(&t.path("gen"), 40_000, 0.02, 7);
    assert_eq!(lines, 40_000);
    assert!(bad > 500, "bad lines: {bad}");
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("gen")]);
    let input = t.str("gen/transactions.jsonl");
    let out = run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &input,
        "--batch-rows",
        "6000",
        "--rules",
        &stateless_rules(),
        "--quiet",
    ]);
    assert!(
        out.contains(&format!(
            "rows in 40000 = landed {valid} + quarantined {bad}"
        )),
        "{out}"
    );

    let expected = oracle(&read_jsonl(&t.path("gen/transactions.jsonl")));
    assert_eq!(
        expected.len() as u64,
        valid,
        "oracle and generator disagree on valid lines"
    );

    let batches = query(
        &lake,
        "SELECT source_offset, transaction_id, CAST(amount * 100 AS BIGINT) AS cents, \
         array_to_string(fraud_reasons, ',') AS reasons, is_fraud, event_date, source_partition \
         FROM fact_transaction",
    )
    .await;
    let mut seen = BTreeSet::new();
    for b in &batches {
        let off = b.column(0).as_primitive::<Int64Type>();
        let ids = b.column(1).as_string::<i32>();
        let cents = b.column(2).as_primitive::<Int64Type>();
        let reasons = b.column(3).as_string::<i32>();
        let fraud = b.column(4).as_boolean();
        let day = b.column(5).as_primitive::<Date32Type>();
        for r in 0..b.num_rows() {
            let o = off.value(r);
            assert!(seen.insert(o), "line {o} landed twice");
            let e = expected
                .get(&o)
                .unwrap_or_else(|| panic!("line {o} landed but is invalid"));
            assert_eq!(ids.value(r), e.id, "line {o}");
            assert_eq!(cents.value(r), e.cents, "line {o}");
            let got_reasons = if reasons.is_null(r) {
                String::new()
            } else {
                reasons.value(r).to_string()
            };
            assert_eq!(got_reasons, e.reasons.join(","), "line {o}");
            assert_eq!(fraud.value(r), !e.reasons.is_empty(), "line {o}");
            let d = txpipe_core::decode::timestamp::format_date(i64::from(day.value(r)));
            assert_eq!(d, e.day, "line {o}: event_date");
        }
    }
    assert_eq!(seen.len() as u64, valid, "every valid line lands");

    // Quarantine: exactly the other lines, each with a reason and its position.
    let q = query(
        &lake,
        "SELECT source_offset, error FROM quarantine ORDER BY source_offset",
    )
    .await;
    let mut q_offsets = BTreeSet::new();
    for b in &q {
        let off = b.column(0).as_primitive::<Int64Type>();
        let err = b.column(1).as_string::<i32>();
        for r in 0..b.num_rows() {
            assert!(
                !expected.contains_key(&off.value(r)),
                "valid line {} quarantined: {}",
                off.value(r),
                err.value(r)
            );
            assert!(!err.value(r).is_empty());
            q_offsets.insert(off.value(r));
        }
    }
    assert_eq!(q_offsets.len() as u64, bad);
    assert_eq!(seen.len() + q_offsets.len(), 40_000);

    // Sums and per-rule counts in SQL agree with the oracle.
    let sums = query_i64s(
        &lake,
        "SELECT CAST(SUM(amount) * 100 AS BIGINT), \
         SUM(CASE WHEN array_has(fraud_reasons, 'high_amount') THEN 1 ELSE 0 END), \
         SUM(CASE WHEN array_has(fraud_reasons, 'foreign') THEN 1 ELSE 0 END), \
         SUM(CASE WHEN array_has(fraud_reasons, 'invalid_geo') THEN 1 ELSE 0 END) FROM fact_transaction",
    )
    .await;
    let total: i64 = expected.values().map(|e| e.cents).sum();
    let count = |name| {
        expected
            .values()
            .filter(|e| e.reasons.contains(&name))
            .count() as i64
    };
    assert_eq!(
        sums,
        vec![
            total,
            count("high_amount"),
            count("foreign"),
            count("invalid_geo")
        ]
    );
    assert!(count("high_amount") > 0 && count("invalid_geo") > 0);

    // Re-running a completed file lands nothing new.
    let again = run_ok(&["ingest", "--lake", &lake, "--from-file", &input, "--quiet"]);
    assert!(again.contains("nothing new"), "{again}");
    let n = query_i64s(&lake, "SELECT COUNT(*) FROM fact_transaction").await;
    assert_eq!(n, vec![valid as i64]);
    // Every data file on disk is committed: nothing was left behind.
    let orphans = orphan_files(&lake).await;
    assert!(orphans.is_empty(), "uncommitted files: {orphans:?}");
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
