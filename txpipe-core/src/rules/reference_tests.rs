//! The default rules against an independent row-by-row reference written from
//! the definitions, over random streams cut into random batches.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use proptest::prelude::*;

use super::state::WindowState;
use super::RuleSet;
use crate::decode::TransactionDecoder;
use crate::fx::FxTable;

const MIN: i64 = 60_000_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// Longest window (30 days) + the default lateness (1 day).
const HORIZON: i64 = 31 * DAY;

#[derive(Debug, Clone)]
struct Row {
    partition: i32,
    customer: u8,
    ts_ms: i64,
    cents: i64,
    geo: Option<(f64, f64)>,
    device: Option<u8>,
    foreign: bool,
}

impl Row {
    fn ts(&self) -> i64 {
        self.ts_ms * 1000
    }
    fn usd(&self) -> f64 {
        self.cents as f64 / 100.0
    }
    fn valid_geo(&self) -> bool {
        self.geo
            .is_some_and(|(la, lo)| (-90.0..=90.0).contains(&la) && (-180.0..=180.0).contains(&lo))
    }
}

/// Independent haversine (radius 6371 km).
fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let r = 6371.0_f64;
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let h = ((b.0 - a.0).to_radians() / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((b.1 - a.1).to_radians() / 2.0).sin().powi(2);
    2.0 * r * h.sqrt().min(1.0).asin()
}

/// Reasons per row, straight from the issue's definitions (plus the
/// retention floor: earlier rows at or below the partition's newest − horizon
/// are gone).
fn reference(rows: &[Row]) -> Vec<Vec<&'static str>> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let t = r.ts();
        let newest = rows[..i]
            .iter()
            .filter(|e| e.partition == r.partition)
            .map(Row::ts)
            .max();
        let floor = newest.map_or(i64::MIN, |w| w - HORIZON);
        let earlier: Vec<&Row> = rows[..i]
            .iter()
            .filter(|e| e.partition == r.partition && e.customer == r.customer && e.ts() > floor)
            .collect();
        let within = |d: i64| -> Vec<&Row> {
            earlier
                .iter()
                .copied()
                .filter(|e| e.ts() > t - d && e.ts() <= t)
                .collect()
        };
        let mut reasons = Vec::new();
        if r.cents > 500_000 {
            reasons.push("high_amount");
        }
        if r.foreign {
            reasons.push("foreign");
        }
        if !r.valid_geo() {
            reasons.push("invalid_geo");
        }
        if 1 + within(10 * MIN).len() >= 5 {
            reasons.push("velocity");
        }
        if r.valid_geo() {
            let prev = earlier
                .iter()
                .rev()
                .find(|e| e.valid_geo() && e.ts() > t - DAY && e.ts() <= t + DAY);
            if let Some(p) = prev {
                let km = distance_km(p.geo.unwrap_or_default(), r.geo.unwrap_or_default());
                let dt = (t - p.ts()).abs();
                let fast = dt == 0 || km / (dt as f64 / HOUR as f64) > 900.0;
                if km > 100.0 && fast {
                    reasons.push("impossible_travel");
                }
            }
        }
        if r.cents >= 50_000 && within(30 * MIN).iter().filter(|e| e.cents < 500).count() >= 3 {
            reasons.push("card_testing");
        }
        let month = within(30 * DAY);
        if month.len() >= 5 {
            // Money is summed exactly (in cents), then divided.
            let cents: i64 = month.iter().map(|e| e.cents).sum();
            if r.usd() > 5.0 * ((cents as f64 / 100.0) / month.len() as f64) {
                reasons.push("amount_spike");
            }
        }
        if let Some(d) = r.device {
            if month.len() >= 3 && month.iter().all(|e| e.device != Some(d)) {
                reasons.push("new_device");
            }
        }
        if let Some(d) = r.device {
            let same_month = month.iter().filter(|e| e.device == Some(d)).count();
            let same_10m = within(10 * MIN)
                .iter()
                .filter(|e| e.device == Some(d))
                .count();
            if (1..=3).contains(&same_month) && same_10m >= 1 && month.len() >= same_month + 3 {
                reasons.push("fresh_device_burst");
            }
        }
        if r.foreign && within(10 * MIN).len() >= 2 {
            reasons.push("foreign_burst");
        }
        if (1..=4).contains(&month.len()) {
            let cents: i64 = month.iter().map(|e| e.cents).sum();
            if r.usd() > 8.0 * ((cents as f64 / 100.0) / month.len() as f64) {
                reasons.push("thin_history_spike");
            }
        }
        out.push(reasons);
    }
    out
}

fn weight(name: &str) -> f64 {
    match name {
        "foreign" | "invalid_geo" => 0.2,
        "new_device" | "thin_history_spike" => 0.5,
        _ => 1.0,
    }
}

fn decode(rows: &[Row], from: usize) -> RecordBatch {
    let mut d = TransactionDecoder::new(Arc::new(FxTable::defaults()), "ref");
    for (k, r) in rows.iter().enumerate() {
        let (lat, lon) = match r.geo {
            Some((a, b)) => (serde_json::json!(a), serde_json::json!(b)),
            None => (serde_json::Value::Null, serde_json::Value::Null),
        };
        let msg = serde_json::json!({
            "transaction_id": uuid::Uuid::from_u128((from + k) as u128 + 1).to_string(),
            "transaction_ts": r.ts_ms,
            "customer_id": uuid::Uuid::from_u128(1000 + u128::from(r.customer)).to_string(),
            "merchant_id": "0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f",
            "amount": format!("{}.{:02}", r.cents / 100, r.cents % 100).parse::<f64>().unwrap(),
            "currency": "USD",
            "latitude": lat, "longitude": lon,
            "device_id": r.device.map(|d| format!("dev-{d}")),
            "payment_method": "credit_card",
            "is_foreign": r.foreign,
        });
        d.push(
            &serde_json::to_vec(&msg).unwrap(),
            r.partition,
            (from + k) as i64,
        );
    }
    let out = d.finish(0).unwrap();
    assert_eq!(out.quarantine.num_rows(), 0, "{:?}", out.quarantine);
    out.transactions
}

/// Reasons, risk scores and is_fraud of `rows` cut at `cuts`.
fn run(rules: &RuleSet, rows: &[Row], cuts: &[usize]) -> Vec<(Vec<String>, f64, bool)> {
    let mut state = WindowState::new(true);
    let mut out = Vec::new();
    for (start, end) in batches(rows.len(), cuts) {
        let batch = decode(&rows[start..end], start);
        let windows = rules.window_columns(&batch, &mut state).unwrap();
        let (fact, _) = rules.apply_windowed(&batch, windows).unwrap();
        let reasons = fact
            .column_by_name("fraud_reasons")
            .unwrap()
            .as_list::<i32>();
        let score = fact
            .column_by_name("risk_score")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let fraud = fact.column_by_name("is_fraud").unwrap().as_boolean();
        for i in 0..fact.num_rows() {
            let r: Vec<String> = reasons
                .value(i)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or_default().to_string())
                .collect();
            out.push((r, score.value(i), fraud.value(i)));
        }
    }
    out
}

/// The (start, end) of the batches `len` rows make when cut at `cuts`.
fn batches(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < len).collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(len);
    let mut start = 0;
    bounds
        .into_iter()
        .map(|end| {
            let b = (start, end);
            start = end;
            b
        })
        .collect()
}

const CITIES: [(f64, f64); 5] = [
    (37.5665, 126.9780), // Seoul
    (48.8566, 2.3522),   // Paris
    (48.9, 2.5),         // near Paris (~12 km)
    (40.7128, -74.0060), // New York
    (49.6, 2.3),         // ~83 km from Paris
];

/// partition, customer, time step (ms), cents, coordinates, device, foreign.
type RawRow = (i32, u8, i64, i64, Option<(f64, f64)>, Option<u8>, bool);

fn row_strategy() -> impl Strategy<Value = RawRow> {
    (
        0i32..2,
        0u8..3,
        prop_oneof![
            6 => 0i64..(8 * MIN / 1000),
            2 => Just(0i64),
            1 => -(3 * HOUR / 1000)..0i64,
            1 => (DAY / 1000)..(20 * DAY / 1000),
            // Very late rows: behind the retention floor.
            1 => -(40 * DAY / 1000)..-(DAY / 1000),
        ],
        prop_oneof![
            3 => 100i64..500,
            5 => 1_000i64..30_000,
            2 => 50_000i64..200_000,
            1 => 400_000i64..700_000,
        ],
        prop_oneof![
            8 => (0usize..5).prop_map(|c| Some(CITIES[c])),
            1 => Just(None),
            1 => Just(Some((95.0, 10.0))),
        ],
        prop_oneof![3 => (0u8..4).prop_map(Some), 1 => Just(None)],
        any::<bool>(),
    )
}

fn rows_from(raw: Vec<RawRow>) -> Vec<Row> {
    let mut ts_ms = 1_795_000_000_000i64;
    raw.into_iter()
        .map(|(partition, customer, step, cents, geo, device, foreign)| {
            ts_ms += step;
            Row {
                partition,
                customer,
                ts_ms,
                cents,
                geo,
                device,
                foreign,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random streams cut into random batches give exactly the reference's flags.
    #[test]
    fn stateful_rules_equal_the_reference(
        raw in prop::collection::vec(row_strategy(), 1..160),
        cuts in prop::collection::vec(0usize..160, 0..12),
    ) {
        let rules = RuleSet::defaults().unwrap();
        let rows = rows_from(raw);
        let expected = reference(&rows);
        let one = run(&rules, &rows, &[]);
        let many = run(&rules, &rows, &cuts);
        prop_assert_eq!(&one, &many);
        for (i, (got, want)) in one.iter().zip(&expected).enumerate() {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            prop_assert_eq!(&got.0, &want, "row {} {:?}", i, rows[i]);
            let score: f64 = want.iter().map(|n| weight(n)).sum();
            prop_assert!((got.1 - score).abs() < 1e-9);
            prop_assert_eq!(got.2, score >= 1.0);
        }
    }
}

/// Every stateful rule fires on a hand-made stream, with its evidence.
#[test]
fn each_stateful_rule_fires_with_evidence() {
    let rules = RuleSet::defaults().unwrap();
    let base = 1_795_000_000_000i64;
    let paris = Some(CITIES[1]);
    let mut rows = Vec::new();
    let mut push = |ts_ms: i64, cents: i64, geo: Option<(f64, f64)>, device: u8| {
        rows.push(Row {
            partition: 0,
            customer: 1,
            ts_ms,
            cents,
            geo,
            device: Some(device),
            foreign: false,
        })
    };
    // Five ordinary purchases over a week in Paris on device 1.
    for d in 0..5 {
        push(base + d * DAY / 1000, 2_000, paris, 1);
    }
    // Three card tests within 20 minutes, then 800 USD: card_testing (and velocity at the 5th).
    let t = base + 6 * DAY / 1000;
    push(t, 100, paris, 1);
    push(t + 60_000, 150, paris, 1);
    push(t + 120_000, 90, paris, 1);
    push(t + 180_000, 80_000, paris, 1);
    // Seoul 20 minutes later on a new device: impossible travel + new device.
    push(t + 20 * 60_000, 3_000, Some(CITIES[0]), 7);
    let batch = decode(&rows, 0);
    let (fact, _) = rules.apply(&batch).unwrap();
    let reasons = fact
        .column_by_name("fraud_reasons")
        .unwrap()
        .as_list::<i32>();
    let evidence = fact
        .column_by_name("fraud_evidence")
        .unwrap()
        .as_string::<i32>();
    let names = |i: usize| -> Vec<String> {
        reasons
            .value(i)
            .as_string::<i32>()
            .iter()
            .map(|s| s.unwrap().to_string())
            .collect()
    };
    assert_eq!(names(8), ["card_testing", "amount_spike"]);
    let e: serde_json::Value = serde_json::from_str(evidence.value(8)).unwrap();
    assert_eq!(e["card_testing"]["small_tx_30m"], 3);
    assert_eq!(names(9), ["impossible_travel", "new_device"]);
    let e: serde_json::Value = serde_json::from_str(evidence.value(9)).unwrap();
    let km = e["impossible_travel"]["travel_km"].as_f64().unwrap();
    assert!((km - 8965.7).abs() < 1.0, "{e}");
    assert_eq!(
        e["impossible_travel"]["prev_transaction_id"],
        uuid::Uuid::from_u128(9).to_string()
    );
    assert_eq!(e["new_device"]["same_device_30d"], 0);
    assert!(evidence.is_null(0));
    assert_eq!(reference(&rows)[9], ["impossible_travel", "new_device"]);
}

/// A long random stream, compared with the reference, in which every stateful
/// rule fires (so the property above is not vacuous).
#[test]
fn long_stream_fires_every_rule_and_equals_the_reference() {
    let mut rng = crate::generate::Rng::new(7);
    let mut raw = Vec::new();
    for _ in 0..3_000 {
        let step = match rng.below(10) {
            0..=5 => rng.below(4 * MIN as u64 / 1000) as i64,
            6 | 7 => 0,
            8 => -(rng.below(3 * HOUR as u64 / 1000) as i64),
            9 if rng.below(20) == 0 => -(rng.below(40 * DAY as u64 / 1000) as i64),
            _ => rng.below(2 * DAY as u64 / 1000) as i64,
        };
        let cents = match rng.below(10) {
            0..=2 => 100 + rng.below(400) as i64,
            3..=7 => 1_000 + rng.below(29_000) as i64,
            8 => 50_000 + rng.below(150_000) as i64,
            _ => 400_000 + rng.below(300_000) as i64,
        };
        let geo = match rng.below(10) {
            0 => None,
            1 => Some((95.0, 10.0)),
            _ => Some(CITIES[rng.below(5) as usize]),
        };
        let device = (rng.below(4) > 0).then(|| rng.below(4) as u8);
        raw.push((
            rng.below(2) as i32,
            rng.below(3) as u8,
            step,
            cents,
            geo,
            device,
            rng.below(2) == 0,
        ));
    }
    let rows = rows_from(raw);
    let rules = RuleSet::defaults().unwrap();
    let expected = reference(&rows);
    let got = run(&rules, &rows, &[100, 101, 777, 1500, 2999]);
    let mut fired = std::collections::BTreeMap::<String, usize>::new();
    for (i, (g, want)) in got.iter().zip(&expected).enumerate() {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(g.0, want, "row {i} {:?}", rows[i]);
        for r in &g.0 {
            *fired.entry(r.clone()).or_default() += 1;
        }
    }
    for rule in [
        "velocity",
        "impossible_travel",
        "card_testing",
        "amount_spike",
        "new_device",
    ] {
        assert!(
            fired.get(rule).copied().unwrap_or(0) >= 3,
            "{rule} fired too rarely: {fired:?}"
        );
    }
}

/// Window calls of every kind over two key spaces, one of them keyed by a
/// column that can be NULL (`device_id`).
const MIXED_RULES: &str = r#"
threshold = 1.0
lateness = "1 day"

[windows]
dev_1h = "PARTITION BY device_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW"
dev_30d = "PARTITION BY device_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '30 days' PRECEDING AND CURRENT ROW"
around_2h = "PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '2 hours' PRECEDING AND INTERVAL '1 hour' FOLLOWING"

[[feature]]
name = "dev_count_1h"
sql = "count(*) OVER dev_1h"

[[feature]]
name = "dev_usd_30d"
sql = "sum(amount_usd) OVER dev_30d"

[[feature]]
name = "dev_small_30d"
sql = "count(*) FILTER (WHERE amount_usd < 100) OVER dev_30d"

[[feature]]
name = "dev_lat_1h"
sql = "avg(latitude) OVER dev_1h"

[[feature]]
name = "min_usd"
sql = "min(amount_usd) OVER around_2h"

[[feature]]
name = "max_ts"
sql = "max(transaction_ts) OVER around_2h"

[[feature]]
name = "last_device"
sql = "last_value(device_id) OVER around_2h"

[[feature]]
name = "last_id"
sql = "last_value(transaction_id) FILTER (WHERE is_foreign) OVER around_2h"

[[feature]]
name = "same_device"
sql = "count_equal(device_id) OVER around_2h"

[[rule]]
name = "busy_device"
sql = "dev_count_1h >= 2"
weight = 1.0
"#;

/// The window columns of `rows` cut at `cuts`, concatenated.
fn window_columns(rules: &RuleSet, rows: &[Row], cuts: &[usize]) -> Vec<ArrayRef> {
    let mut state = WindowState::new(true);
    let mut parts: Vec<Vec<ArrayRef>> = Vec::new();
    for (start, end) in batches(rows.len(), cuts) {
        let batch = decode(&rows[start..end], start);
        parts.push(rules.window_columns(&batch, &mut state).unwrap());
    }
    (0..parts[0].len())
        .map(|c| {
            let columns: Vec<&dyn Array> = parts.iter().map(|p| p[c].as_ref()).collect();
            datafusion::arrow::compute::concat(&columns).unwrap()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A batch is evaluated key by key; the result is the same as taking its
    /// rows one at a time in source order, for every kind of call, for rows
    /// without a key, and for any cut into batches.
    #[test]
    fn key_by_key_equals_row_by_row(
        raw in prop::collection::vec(row_strategy(), 1..120),
        cuts in prop::collection::vec(0usize..120, 0..8),
    ) {
        let rules = RuleSet::from_toml("mixed", MIXED_RULES).unwrap();
        let rows = rows_from(raw);
        let every_row: Vec<usize> = (1..rows.len()).collect();
        let one_by_one = window_columns(&rules, &rows, &every_row);
        prop_assert_eq!(one_by_one.len(), 9);
        let whole = window_columns(&rules, &rows, &[]);
        let cut = window_columns(&rules, &rows, &cuts);
        for c in 0..one_by_one.len() {
            prop_assert_eq!(whole[c].as_ref(), one_by_one[c].as_ref(), "call {}", c);
            prop_assert_eq!(cut[c].as_ref(), one_by_one[c].as_ref(), "call {}", c);
        }
    }
}

/// The state's size counts text kept on the heap (here device ids too long
/// to keep inline) and nothing more when all text is inline.
#[test]
fn state_size_counts_text_on_the_heap() {
    let rules = RuleSet::from_toml("mixed", MIXED_RULES).unwrap();
    let raw: Vec<RawRow> = (0..60)
        .map(|i| {
            (
                0,
                (i % 3) as u8,
                30,
                1_000,
                Some(CITIES[0]),
                Some((i % 4) as u8),
                false,
            )
        })
        .collect();
    let short = decode(&rows_from(raw), 0);
    let device = short.schema().index_of("device_id").unwrap();
    let long_ids: datafusion::arrow::array::StringArray = short
        .column(device)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StringArray>()
        .unwrap()
        .iter()
        .map(|d| d.map(|d| format!("{d}-{}", "x".repeat(40))))
        .collect();
    let mut columns = short.columns().to_vec();
    columns[device] = Arc::new(long_ids);
    let long = RecordBatch::try_new(short.schema(), columns).unwrap();
    let size = |batch: &RecordBatch| {
        let mut state = WindowState::new(true);
        rules.window_columns(batch, &mut state).unwrap();
        state.size()
    };
    let (short, long) = (size(&short), size(&long));
    assert_eq!(short.rows, long.rows);
    assert_eq!(short.keys, long.keys);
    // Each row keeps its device id once per key space that stores it.
    assert!(
        long.bytes >= short.bytes + 60 * 44,
        "short {short:?}, long {long:?}"
    );
}
