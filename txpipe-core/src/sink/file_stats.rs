//! Delta file statistics (`Add.stats`) of a data file: computed from its rows,
//! or ([`delta_stats_from_parquet`]) taken from the column statistics the
//! Parquet writer kept while encoding them, which gives the same JSON without
//! a second pass over the values.
//!
//! Delta readers (delta-rs, Spark, DuckDB, Trino) skip files whose min/max
//! cannot match a filter; for that every `Add` carries
//! `{"numRecords":N,"minValues":{..},"maxValues":{..},"nullCount":{..}}`
//! over the file's data columns (partition columns live in the path).
//! Values follow the Delta protocol's JSON forms: numbers for integers,
//! floats and decimals, `YYYY-MM-DD` for dates, RFC 3339 UTC for timestamps.
//! Columns whose type has no min/max in the protocol (booleans, binary,
//! lists) only get a null count; nested columns are left out.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute;
use datafusion::arrow::datatypes::Field;
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

use crate::decode::timestamp::format_date;

/// Longest string prefix kept as a min or max (like Spark's 32): a longer
/// min is cut (still ≤ every value); a longer max is left out.
const MAX_STRING_STAT: usize = 32;

/// The Delta stats JSON of `batches` (one file's rows).
pub fn delta_stats(batches: &[RecordBatch]) -> String {
    stats_json(batches, |_, cols| array_min_max(cols))
}

/// The same as [`delta_stats`], with the min and max of integer, decimal,
/// timestamp and string columns read from the statistics the Parquet writer
/// kept while encoding `batches` into the file `meta` describes, instead of
/// scanning the values a second time. `meta` must come from a writer with
/// untruncated statistics ([`writer_properties`](super::parquet::writer_properties)).
pub fn delta_stats_from_parquet(batches: &[RecordBatch], meta: &ParquetMetaData) -> String {
    // Leaf column of each top-level field that is its own leaf.
    let mut leaves: HashMap<&str, usize> = HashMap::new();
    let schema = meta.file_metadata().schema_descr();
    for (i, c) in schema.columns().iter().enumerate() {
        if let [name] = c.path().parts() {
            leaves.insert(name.as_str(), i);
        }
    }
    stats_json(batches, |field, cols| {
        let from_writer = matches!(
            field.data_type(),
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Decimal128(_, _)
                | DataType::Timestamp(TimeUnit::Microsecond, _)
                | DataType::Utf8
        );
        match leaves.get(field.name().as_str()) {
            Some(&leaf) if from_writer => {
                writer_min_max(meta, leaf, field.data_type()).or_else(|| array_min_max(cols))
            }
            _ => array_min_max(cols),
        }
    })
}

/// The stats JSON, with `min_max(field, columns)` giving each column's min
/// and max in stat form.
fn stats_json(
    batches: &[RecordBatch],
    mut min_max: impl FnMut(&Field, &[&ArrayRef]) -> Option<(Value, Value)>,
) -> String {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    if let Some(first) = batches.first() {
        for (i, field) in first.schema().fields().iter().enumerate() {
            if matches!(field.data_type(), DataType::Struct(_)) {
                continue;
            }
            let cols: Vec<&ArrayRef> = batches.iter().map(|b| b.column(i)).collect();
            let null_count: usize = cols.iter().map(|c| c.null_count()).sum();
            nulls.insert(field.name().clone(), Value::from(null_count));
            if let Some((lo, hi)) = min_max(field, &cols) {
                if let Some(lo) = cut_min(lo) {
                    min.insert(field.name().clone(), lo);
                }
                if let Some(hi) = cut_max(hi) {
                    max.insert(field.name().clone(), hi);
                }
            }
        }
    }
    let mut stats = Map::new();
    stats.insert("numRecords".into(), Value::from(rows));
    stats.insert("minValues".into(), Value::Object(min));
    stats.insert("maxValues".into(), Value::Object(max));
    stats.insert("nullCount".into(), Value::Object(nulls));
    Value::Object(stats).to_string()
}

/// Min and max over the columns' values.
fn array_min_max(cols: &[&ArrayRef]) -> Option<(Value, Value)> {
    cols.iter().filter_map(|c| column_min_max(c)).reduce(widen)
}

/// The smaller of the mins and the larger of the maxes of two ranges.
fn widen((lo, hi): (Value, Value), (a, b): (Value, Value)) -> (Value, Value) {
    (
        if less(&a, &lo) { a } else { lo },
        if less(&hi, &b) { b } else { hi },
    )
}

/// Min and max of leaf column `leaf` over the file's row groups, from the
/// writer's statistics, in the stat form of `data_type`; `None` when a row
/// group has no statistics (then the values are read instead).
fn writer_min_max(
    meta: &ParquetMetaData,
    leaf: usize,
    data_type: &DataType,
) -> Option<(Value, Value)> {
    let mut out: Option<(Value, Value)> = None;
    for rg in meta.row_groups() {
        let stats = rg.column(leaf).statistics()?;
        let (lo, hi) = match stats {
            // (A row group without values has no min: it adds nothing.)
            Statistics::Int32(s) => match (s.min_opt(), s.max_opt()) {
                (Some(&lo), Some(&hi)) => (
                    int_stat(i64::from(lo), data_type)?,
                    int_stat(i64::from(hi), data_type)?,
                ),
                _ => continue,
            },
            Statistics::Int64(s) => match (s.min_opt(), s.max_opt()) {
                (Some(&lo), Some(&hi)) => (int_stat(lo, data_type)?, int_stat(hi, data_type)?),
                _ => continue,
            },
            Statistics::ByteArray(s) if s.min_is_exact() && s.max_is_exact() => {
                match (s.min_opt(), s.max_opt()) {
                    (Some(lo), Some(hi)) => (
                        Value::String(std::str::from_utf8(lo.data()).ok()?.to_string()),
                        Value::String(std::str::from_utf8(hi.data()).ok()?.to_string()),
                    ),
                    _ => continue,
                }
            }
            _ => return None,
        };
        out = Some(match out {
            None => (lo, hi),
            Some(range) => widen(range, (lo, hi)),
        });
    }
    out
}

/// A Parquet integer in the stat form of the column's type.
fn int_stat(v: i64, data_type: &DataType) -> Option<Value> {
    match data_type {
        DataType::Decimal128(_, scale) => decimal(i128::from(v), *scale),
        DataType::Timestamp(TimeUnit::Microsecond, _) => timestamp_micros(v),
        _ => Some(int(v)),
    }
}

/// Orders two stat values of the same column (numbers, or strings that
/// sort as their values do: ISO dates and timestamps in one format).
fn less(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x < y,
            _ => x.as_f64().unwrap_or(f64::NAN) < y.as_f64().unwrap_or(f64::NAN),
        },
        (Value::String(x), Value::String(y)) => x < y,
        _ => false,
    }
}

fn cut_min(v: Value) -> Option<Value> {
    match v {
        Value::String(s) if s.chars().count() > MAX_STRING_STAT => {
            Some(Value::String(s.chars().take(MAX_STRING_STAT).collect()))
        }
        other => Some(other),
    }
}

fn cut_max(v: Value) -> Option<Value> {
    match v {
        Value::String(s) if s.chars().count() > MAX_STRING_STAT => None,
        other => Some(other),
    }
}

fn int(v: i64) -> Value {
    Value::Number(Number::from(v))
}

fn float(v: f64) -> Option<Value> {
    Number::from_f64(v).map(Value::Number)
}

/// Decimal `unscaled / 10^scale` as a JSON number with exactly `scale` digits.
fn decimal(unscaled: i128, scale: i8) -> Option<Value> {
    let text = if scale <= 0 {
        (unscaled * 10i128.checked_pow(u32::from(scale.unsigned_abs()))?).to_string()
    } else {
        let digits = unscaled.unsigned_abs().to_string();
        let scale = scale as usize;
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (whole, frac) = padded.split_at(padded.len() - scale);
        let sign = if unscaled < 0 { "-" } else { "" };
        format!("{sign}{whole}.{frac}")
    };
    serde_json::from_str::<Number>(&text)
        .ok()
        .map(Value::Number)
}

fn timestamp_micros(us: i64) -> Option<Value> {
    let t = chrono::DateTime::from_timestamp_micros(us)?;
    Some(Value::String(
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
    ))
}

/// The first eight bytes of `s`, big-endian, zero-padded: ordered as `s` is
/// whenever they differ.
fn prefix(s: &str) -> u64 {
    let b = s.as_bytes();
    if let Some(head) = b.first_chunk::<8>() {
        return u64::from_be_bytes(*head);
    }
    let mut p = [0u8; 8];
    for (i, &c) in b.iter().enumerate() {
        p[i] = c;
    }
    u64::from_be_bytes(p)
}

/// Smallest and largest non-null string in one pass. Values are compared by
/// their first eight bytes as one integer and only in full when those are
/// equal: ids are unique within a few bytes, so most comparisons need no
/// `memcmp` (arrow's `min_string`/`max_string` take a pass each, with one per
/// value).
fn string_min_max(a: &StringArray) -> Option<(&str, &str)> {
    let mut values = a.iter().flatten();
    let first = values.next()?;
    let (mut lo, mut hi) = (first, first);
    let (mut lo_key, mut hi_key) = (prefix(first), prefix(first));
    for v in values {
        let key = prefix(v);
        if key < lo_key || (key == lo_key && v < lo) {
            lo = v;
            lo_key = key;
        }
        if key > hi_key || (key == hi_key && v > hi) {
            hi = v;
            hi_key = key;
        }
    }
    Some((lo, hi))
}

/// Min and max of one column's non-null values, in stat form.
fn column_min_max(c: &ArrayRef) -> Option<(Value, Value)> {
    if c.null_count() == c.len() {
        return None;
    }
    match c.data_type() {
        DataType::Int8 => {
            let a = c.as_primitive::<Int8Type>();
            Some((int(compute::min(a)?.into()), int(compute::max(a)?.into())))
        }
        DataType::Int16 => {
            let a = c.as_primitive::<Int16Type>();
            Some((int(compute::min(a)?.into()), int(compute::max(a)?.into())))
        }
        DataType::Int32 => {
            let a = c.as_primitive::<Int32Type>();
            Some((int(compute::min(a)?.into()), int(compute::max(a)?.into())))
        }
        DataType::Int64 => {
            let a = c.as_primitive::<Int64Type>();
            Some((int(compute::min(a)?), int(compute::max(a)?)))
        }
        DataType::Float32 => {
            let a = c.as_primitive::<Float32Type>();
            Some((
                float(compute::min(a)?.into())?,
                float(compute::max(a)?.into())?,
            ))
        }
        DataType::Float64 => {
            let a = c.as_primitive::<Float64Type>();
            Some((float(compute::min(a)?)?, float(compute::max(a)?)?))
        }
        DataType::Decimal128(_, scale) => {
            let a = c.as_primitive::<Decimal128Type>();
            Some((
                decimal(compute::min(a)?, *scale)?,
                decimal(compute::max(a)?, *scale)?,
            ))
        }
        DataType::Date32 => {
            let a = c.as_primitive::<Date32Type>();
            Some((
                Value::String(format_date(compute::min(a)?.into())),
                Value::String(format_date(compute::max(a)?.into())),
            ))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            let a = c.as_primitive::<TimestampMicrosecondType>();
            Some((
                timestamp_micros(compute::min(a)?)?,
                timestamp_micros(compute::max(a)?)?,
            ))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let a = c.as_primitive::<TimestampMillisecondType>();
            Some((
                timestamp_micros(compute::min(a)?.checked_mul(1000)?)?,
                timestamp_micros(compute::max(a)?.checked_mul(1000)?)?,
            ))
        }
        DataType::Utf8 => {
            let (lo, hi) = string_min_max(c.as_string::<i32>())?;
            Some((Value::String(lo.to_string()), Value::String(hi.to_string())))
        }
        DataType::LargeUtf8 => {
            let a = c.as_string::<i64>();
            Some((
                Value::String(compute::min_string(a)?.to_string()),
                Value::String(compute::max_string(a)?.to_string()),
            ))
        }
        DataType::Utf8View => {
            let a = c.as_string_view();
            Some((
                Value::String(compute::min_string_view(a)?.to_string()),
                Value::String(compute::max_string_view(a)?.to_string()),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    proptest::proptest! {
        /// The one-pass string min/max equals arrow's kernels (shared
        /// prefixes, short strings, non-ASCII, NULLs included).
        #[test]
        fn string_min_max_equals_arrows(values in proptest::collection::vec(
            proptest::option::of("(id-|ida|é|a\\x00)?[a-c0-9é\\x00]{0,10}"), 0..40)) {
            let a = super::StringArray::from(values);
            let want = datafusion::arrow::compute::min_string(&a)
                .zip(datafusion::arrow::compute::max_string(&a));
            proptest::prop_assert_eq!(super::string_min_max(&a), want);
        }
    }

    use std::sync::Arc;

    use datafusion::arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use proptest::prelude::*;

    use super::*;

    fn batch(amounts: Vec<Option<i128>>, ids: Vec<&str>) -> RecordBatch {
        let n = amounts.len();
        let schema = Arc::new(Schema::new(vec![
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new("id", DataType::Utf8, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("day", DataType::Date32, false),
            Field::new("flag", DataType::Boolean, false),
            Field::new("n", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(
                    Decimal128Array::from(amounts)
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(StringArray::from(ids)),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        (0..n as i64).map(|i| i * 1_000_001).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Date32Array::from(vec![20_000; n])),
                Arc::new(BooleanArray::from(vec![true; n])),
                Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn stats_follow_the_delta_protocol_forms() {
        let b = batch(vec![Some(-105), None, Some(123_456)], vec!["b", "a", "c"]);
        let v: Value = serde_json::from_str(&delta_stats(&[b])).unwrap();
        assert_eq!(v["numRecords"], 3);
        assert_eq!(v["minValues"]["amount"].to_string(), "-1.05");
        assert_eq!(v["maxValues"]["amount"].to_string(), "1234.56");
        assert_eq!(v["nullCount"]["amount"], 1);
        assert_eq!(v["minValues"]["id"], "a");
        assert_eq!(v["maxValues"]["id"], "c");
        assert_eq!(v["minValues"]["ts"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["maxValues"]["ts"], "1970-01-01T00:00:02.000002Z");
        assert_eq!(v["minValues"]["day"], "2024-10-04");
        assert!(
            v["minValues"].get("flag").is_none(),
            "booleans have no min/max"
        );
        assert_eq!(v["nullCount"]["flag"], 0);
        assert_eq!(v["maxValues"]["n"], 2);
    }

    #[test]
    fn all_null_column_has_only_a_null_count() {
        let b = batch(vec![None, None], vec!["x", "y"]);
        let v: Value = serde_json::from_str(&delta_stats(&[b])).unwrap();
        assert!(v["minValues"].get("amount").is_none());
        assert_eq!(v["nullCount"]["amount"], 2);
    }

    proptest! {
        /// Stats from the writer's statistics equal stats from the values,
        /// for any values (NULLs, shared prefixes, long and non-ASCII text)
        /// cut into any batches.
        #[test]
        fn writer_statistics_give_the_same_stats(
            rows in proptest::collection::vec(
                (proptest::option::of(-10_000_000i128..10_000_000),
                 "(id-|é|\\x00)?[a-c0-9é]{0,40}"), 1..60),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..3),
            row_group in 1usize..80,
        ) {
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(rows.len())).collect();
            at.push(0);
            at.push(rows.len());
            at.sort_unstable();
            at.dedup();
            let batches: Vec<RecordBatch> = at
                .windows(2)
                .map(|w| {
                    let part = &rows[w[0]..w[1]];
                    batch(part.iter().map(|r| r.0).collect(), part.iter().map(|r| r.1.as_str()).collect())
                })
                .collect();
            let props = crate::sink::parquet::writer_properties()
                .into_builder()
                .set_max_row_group_row_count(Some(row_group))
                .build();
            let (_, meta) =
                crate::sink::parquet::encode_with_metadata(&batches[0].schema(), &batches, &props).unwrap();
            prop_assert_eq!(delta_stats_from_parquet(&batches, &meta), delta_stats(&batches));
            // (Read from the writer indeed, not from the values again.)
            prop_assert!(writer_min_max(&meta, 1, &DataType::Utf8).is_some());
            prop_assert_eq!(
                writer_min_max(&meta, 0, &DataType::Decimal128(18, 2)).is_some(),
                rows.iter().any(|r| r.0.is_some())
            );
        }

        /// Min and max bound every value, over any split into batches.
        #[test]
        fn decimal_and_string_bounds_hold(
            cents in proptest::collection::vec(-10_000_000i128..10_000_000, 1..40),
            split in 0usize..40,
        ) {
            let ids: Vec<String> = cents.iter().map(|c| format!("id{c}")).collect();
            let split = split.min(cents.len());
            let (a, b) = cents.split_at(split);
            let (ia, ib) = ids.split_at(split);
            let mut batches = Vec::new();
            if !a.is_empty() {
                batches.push(batch(a.iter().map(|c| Some(*c)).collect(), ia.iter().map(String::as_str).collect()));
            }
            if !b.is_empty() {
                batches.push(batch(b.iter().map(|c| Some(*c)).collect(), ib.iter().map(String::as_str).collect()));
            }
            let v: Value = serde_json::from_str(&delta_stats(&batches)).unwrap();
            let lo: f64 = v["minValues"]["amount"].as_f64().unwrap();
            let hi: f64 = v["maxValues"]["amount"].as_f64().unwrap();
            let min = *cents.iter().min().unwrap() as f64 / 100.0;
            let max = *cents.iter().max().unwrap() as f64 / 100.0;
            prop_assert!((lo - min).abs() < 1e-9 && (hi - max).abs() < 1e-9);
            let smin = ids.iter().min().unwrap();
            prop_assert_eq!(v["minValues"]["id"].as_str().unwrap(), smin.as_str());
            prop_assert_eq!(v["numRecords"].as_u64().unwrap(), cents.len() as u64);
        }
    }
}
