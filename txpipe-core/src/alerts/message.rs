//! One alert per flagged transaction: its JSON and its stable id.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::rules::RulesConfig;
use crate::schema::{fraud_reasons_type, MONEY_PRECISION, MONEY_SCALE};

/// A flagged transaction ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Stable id: the same transaction under the same rule set always gets
    /// the same id, whoever publishes it and however often.
    pub alert_id: String,
    /// Message key (the customer id: one customer's alerts stay in order).
    pub key: String,
    /// Source partition and offset of the transaction.
    pub partition: i32,
    /// Source offset (Kafka offset or file line).
    pub offset: i64,
    /// The alert as a JSON object.
    pub json: Value,
}

/// A short fingerprint of a rule set: the rules, features, windows,
/// weights, threshold and lateness (descriptions do not count).
pub fn rule_set_id(config: &RulesConfig) -> String {
    let mut c = config.clone();
    for r in &mut c.rule {
        r.description = None;
    }
    for f in &mut c.feature {
        f.description = None;
    }
    let text = serde_json::to_string(&c).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The alert id of `transaction_id` under rule set `rule_set`: a UUID
/// (version 8) made of the first bytes of SHA-256 over both.
pub fn alert_id(rule_set: &str, transaction_id: &str) -> String {
    let digest = Sha256::digest(format!("txpipe-alert\n{rule_set}\n{transaction_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The alerts of a fact batch ([`FACT_SCHEMA`](crate::schema::FACT_SCHEMA)
/// rows): one per row with `is_fraud`, and `risk_score >= min_score` when given.
///
/// # Errors
/// The batch lacks a fact column.
pub fn alerts_of(fact: &RecordBatch, rule_set: &str, min_score: Option<f64>) -> Result<Vec<Alert>> {
    let column = |name: &str| {
        fact.column_by_name(name)
            .ok_or_else(|| Error::Config(format!("alerts: the batch has no column {name}")))
    };
    let is_fraud = cast(column("is_fraud")?, &DataType::Boolean)?;
    let is_fraud = is_fraud.as_boolean();
    if is_fraud.true_count() == 0 {
        return Ok(Vec::new());
    }
    // Cast to the fact schema's types: rows read back from the lake may come
    // with other encodings of the same values (views, large strings).
    let typed = |name: &str, dt: &DataType| -> Result<ArrayRef> { Ok(cast(column(name)?, dt)?) };
    let utf8 = |name: &str| typed(name, &DataType::Utf8);
    let (tx, customer, merchant, currency, source, evidence) = (
        utf8("transaction_id")?,
        utf8("customer_id")?,
        utf8("merchant_id")?,
        utf8("currency")?,
        utf8("source")?,
        utf8("fraud_evidence")?,
    );
    let (tx, customer, merchant, currency, source, evidence) = (
        tx.as_string::<i32>(),
        customer.as_string::<i32>(),
        merchant.as_string::<i32>(),
        currency.as_string::<i32>(),
        source.as_string::<i32>(),
        evidence.as_string::<i32>(),
    );
    let ts = typed(
        "transaction_ts",
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    )?;
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    let money = DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE);
    let scale = i32::from(MONEY_SCALE);
    let (amount, amount_usd) = (typed("amount", &money)?, typed("amount_usd", &money)?);
    let (amount, amount_usd) = (
        amount.as_primitive::<Decimal128Type>(),
        amount_usd.as_primitive::<Decimal128Type>(),
    );
    let score = typed("risk_score", &DataType::Float64)?;
    let score = score.as_primitive::<Float64Type>();
    let reasons = typed("fraud_reasons", &fraud_reasons_type())?;
    let reasons = reasons.as_list::<i32>();
    let partition = typed("source_partition", &DataType::Int32)?;
    let partition = partition.as_primitive::<Int32Type>();
    let offset = typed("source_offset", &DataType::Int64)?;
    let offset = offset.as_primitive::<Int64Type>();

    let mut out = Vec::new();
    for row in 0..fact.num_rows() {
        if !is_fraud.is_valid(row) || !is_fraud.value(row) {
            continue;
        }
        let risk = score.is_valid(row).then(|| score.value(row));
        if let Some(min) = min_score {
            if risk.unwrap_or(f64::NEG_INFINITY) < min {
                continue;
            }
        }
        let transaction_id = tx.value(row).to_string();
        let id = alert_id(rule_set, &transaction_id);
        let fired: Vec<Value> = {
            let list = reasons.value(row);
            let names = list.as_string::<i32>();
            (0..names.len())
                .filter(|&i| names.is_valid(i))
                .map(|i| Value::from(names.value(i)))
                .collect()
        };
        let evidence = if evidence.is_valid(row) {
            serde_json::from_str(evidence.value(row))
                .unwrap_or_else(|_| Value::from(evidence.value(row)))
        } else {
            Value::Null
        };
        let mut m = Map::new();
        m.insert("alert_id".into(), id.clone().into());
        m.insert("rule_set".into(), rule_set.into());
        m.insert("transaction_id".into(), transaction_id.into());
        m.insert("transaction_ts".into(), format_ts(ts.value(row)).into());
        m.insert("customer_id".into(), customer.value(row).into());
        m.insert("merchant_id".into(), merchant.value(row).into());
        m.insert("amount".into(), decimal(amount.value(row), scale));
        m.insert("currency".into(), currency.value(row).into());
        m.insert("amount_usd".into(), decimal(amount_usd.value(row), scale));
        m.insert("risk_score".into(), json!(risk));
        m.insert("fraud_reasons".into(), Value::Array(fired));
        m.insert("fraud_evidence".into(), evidence);
        m.insert("source".into(), source.value(row).into());
        m.insert("partition".into(), partition.value(row).into());
        m.insert("offset".into(), offset.value(row).into());
        out.push(Alert {
            alert_id: id,
            key: customer.value(row).to_string(),
            partition: partition.value(row),
            offset: offset.value(row),
            json: Value::Object(m),
        });
    }
    Ok(out)
}

/// RFC 3339 in UTC with microseconds when there are any.
fn format_ts(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// A decimal as a JSON number with its exact digits (e.g. `12.30` → 12.3).
fn decimal(units: i128, scale: i32) -> Value {
    let text = if scale <= 0 {
        units.to_string()
    } else {
        let sign = if units < 0 { "-" } else { "" };
        let p = 10i128.pow(scale as u32);
        let (int, frac) = (units.abs() / p, units.abs() % p);
        format!("{sign}{int}.{frac:0width$}", width = scale as usize)
    };
    text.parse::<serde_json::Number>()
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_depend_on_the_rule_set() {
        let a = alert_id("r1", "tx-1");
        assert_eq!(a, alert_id("r1", "tx-1"));
        assert_ne!(a, alert_id("r2", "tx-1"));
        assert_ne!(a, alert_id("r1", "tx-2"));
        let u = uuid::Uuid::parse_str(&a).expect("a UUID");
        assert_eq!(u.get_version_num(), 8);
    }

    #[test]
    fn rule_set_ids_ignore_descriptions_only() {
        let mut c = RulesConfig::defaults().expect("defaults");
        let base = rule_set_id(&c);
        c.rule[0].description = Some("changed".into());
        assert_eq!(rule_set_id(&c), base);
        c.rule[0].weight += 0.5;
        assert_ne!(rule_set_id(&c), base);
    }

    #[test]
    fn decimals_keep_their_digits() {
        assert_eq!(decimal(12345, 2).to_string(), "123.45");
        assert_eq!(decimal(-5, 2).to_string(), "-0.05");
        assert_eq!(decimal(100, 2), json!(1.0));
    }
}
