//! Fraud rules: named SQL boolean expressions, compiled once, evaluated per batch.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBufferBuilder, ListArray, RecordBatch, StringBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::schema::{FACT_SCHEMA, TRANSACTION_SCHEMA};

/// The default rules file (`sql/rules.toml`), built into the binary.
pub const DEFAULT_RULES_TOML: &str = include_str!("../../sql/rules.toml");

/// One rule as written in the rules file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Short identifier (`[a-z0-9_]+`), stored in `fraud_reasons`.
    pub name: String,
    /// SQL boolean expression over the fact columns.
    pub sql: String,
    /// What the rule catches, for humans.
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    rule: Vec<Rule>,
}

#[derive(Debug)]
struct CompiledRule {
    rule: Rule,
    expr: Arc<dyn PhysicalExpr>,
}

/// A compiled set of fraud rules.
///
/// ```
/// use txpipe_core::rules::{Rule, RuleSet};
/// let rules = RuleSet::try_new(vec![Rule {
///     name: "big".into(), sql: "amount_usd > 100".into(), description: None,
/// }]).unwrap();
/// assert_eq!(rules.names(), vec!["big"]);
/// // A typo is caught at start-up, naming the rule.
/// let err = RuleSet::try_new(vec![Rule {
///     name: "typo".into(), sql: "amount_usdd > 1".into(), description: None,
/// }]).unwrap_err();
/// assert!(err.to_string().starts_with("rule 'typo'"));
/// ```
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<CompiledRule>,
}

/// Per-row outcome of every rule on one batch.
#[derive(Debug, Clone)]
pub struct RuleHits {
    /// One mask per rule, in rule order; `true` where the rule fired (never null).
    pub masks: Vec<BooleanArray>,
}

impl RuleHits {
    /// Rows each rule flagged, in rule order.
    pub fn counts(&self) -> Vec<u64> {
        self.masks.iter().map(|m| m.true_count() as u64).collect()
    }
}

impl RuleSet {
    /// Compiles rules against the fact columns.
    ///
    /// # Errors
    /// [`Error::Rule`] naming the rule on a bad name, a duplicate name, a SQL
    /// syntax error, an unknown column or a non-boolean expression.
    pub fn try_new(rules: Vec<Rule>) -> Result<Self> {
        let ctx = SessionContext::new();
        let schema = DFSchema::try_from(TRANSACTION_SCHEMA.as_ref().clone())?;
        let mut compiled: Vec<CompiledRule> = Vec::with_capacity(rules.len());
        for rule in rules {
            let fail = |reason: String| Error::Rule {
                rule: rule.name.clone(),
                reason,
            };
            if rule.name.is_empty()
                || !rule
                    .name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
            {
                return Err(fail(
                    "name must be non-empty and use only a-z, 0-9 and _".into(),
                ));
            }
            if compiled.iter().any(|c| c.rule.name == rule.name) {
                return Err(fail("defined twice".into()));
            }
            let expr = ctx
                .parse_sql_expr(&rule.sql, &schema)
                .map_err(|e| fail(format!("{}: {e}", rule.sql)))?;
            let physical = ctx
                .create_physical_expr(expr, &schema)
                .map_err(|e| fail(format!("{}: {e}", rule.sql)))?;
            let data_type = physical
                .data_type(&TRANSACTION_SCHEMA)
                .map_err(|e| fail(e.to_string()))?;
            if data_type != DataType::Boolean {
                return Err(fail(format!(
                    "'{}' is {data_type}, not a boolean expression",
                    rule.sql
                )));
            }
            compiled.push(CompiledRule {
                rule,
                expr: physical,
            });
        }
        Ok(Self { rules: compiled })
    }

    /// Parses and compiles a rules file's TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::RulesFile`] for bad TOML, [`Error::Rule`] for a bad rule.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self> {
        let file: RulesFile = toml::from_str(text).map_err(|e| Error::RulesFile {
            path: origin.into(),
            reason: e.to_string(),
        })?;
        Self::try_new(file.rule)
    }

    /// Reads and compiles a rules file.
    ///
    /// # Errors
    /// The file cannot be read, or see [`from_toml`](Self::from_toml).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading rules file", path, e))?;
        Self::from_toml(&path.display().to_string(), &text)
    }

    /// The default rules (`sql/rules.toml` as shipped).
    ///
    /// # Errors
    /// Only if the shipped file were broken (covered by tests).
    pub fn defaults() -> Result<Self> {
        Self::from_toml("built-in sql/rules.toml", DEFAULT_RULES_TOML)
    }

    /// Rule names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.rule.name.as_str()).collect()
    }

    /// The rules as written.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// Evaluates every rule on a batch of [`TRANSACTION_SCHEMA`] rows.
    ///
    /// # Errors
    /// The batch does not have the transaction columns.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<RuleHits> {
        let mut masks = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let value = r.expr.evaluate(batch)?.into_array(batch.num_rows())?;
            let mask = value
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| Error::Rule {
                    rule: r.rule.name.clone(),
                    reason: format!("evaluated to {}, not boolean", value.data_type()),
                })?;
            masks.push(if mask.null_count() > 0 {
                prep_null_mask_filter(mask)
            } else {
                mask.clone()
            });
        }
        Ok(RuleHits { masks })
    }

    /// Evaluates the rules and returns the fact rows ([`FACT_SCHEMA`]):
    /// the transaction columns plus `fraud_reasons` and `is_fraud`.
    ///
    /// # Errors
    /// See [`evaluate`](Self::evaluate).
    pub fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, RuleHits)> {
        let hits = self.evaluate(batch)?;
        let n = batch.num_rows();
        let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
        let mut values = StringBuilder::new();
        let mut any = BooleanBufferBuilder::new(n);
        offsets.push(0);
        let mut count: i32 = 0;
        for row in 0..n {
            let mut fired = false;
            for (rule, mask) in self.rules.iter().zip(&hits.masks) {
                if mask.value(row) {
                    values.append_value(&rule.rule.name);
                    count += 1;
                    fired = true;
                }
            }
            offsets.push(count);
            any.append(fired);
        }
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let reasons = ListArray::try_new(
            item,
            OffsetBuffer::new(offsets.into()),
            Arc::new(values.finish()),
            None,
        )?;
        let is_fraud = BooleanArray::new(any.finish(), None);
        let mut columns: Vec<ArrayRef> = batch.columns()[..12].to_vec();
        columns.push(Arc::new(reasons));
        columns.push(Arc::new(is_fraud));
        columns.extend_from_slice(&batch.columns()[12..]);
        Ok((RecordBatch::try_new(FACT_SCHEMA.clone(), columns)?, hits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TransactionDecoder;
    use crate::fx::FxTable;
    use datafusion::arrow::array::AsArray;
    use proptest::prelude::*;

    fn rule(name: &str, sql: &str) -> Rule {
        Rule {
            name: name.into(),
            sql: sql.into(),
            description: None,
        }
    }

    #[test]
    fn defaults_compile() {
        let r = RuleSet::defaults().unwrap();
        assert_eq!(r.names(), vec!["high_amount", "foreign", "invalid_geo"]);
    }

    #[test]
    fn bad_rules_fail_naming_the_rule() {
        for (sql, expect) in [
            ("amount_usd >", "rule 'bad'"),
            ("nope > 1", "nope"),
            ("amount_usd + 1", "not a boolean"),
        ] {
            let e = RuleSet::try_new(vec![rule("bad", sql)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("rule 'bad'") && e.contains(expect), "{sql}: {e}");
        }
        assert!(RuleSet::try_new(vec![rule("a", "is_foreign"), rule("a", "is_foreign")]).is_err());
        assert!(RuleSet::try_new(vec![rule("Bad Name", "is_foreign")]).is_err());
        let e = RuleSet::from_toml("x.toml", "[[rule]]\nname='a'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.toml"), "{e}");
    }

    /// One transaction message with the given amount (USD), geo and foreign flag.
    fn message(
        i: usize,
        amount: f64,
        lat: Option<f64>,
        lon: Option<f64>,
        foreign: bool,
    ) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "transaction_id": uuid::Uuid::from_u128(i as u128).to_string(),
            "transaction_ts": "2026-11-20T13:45:12Z",
            "customer_id": "9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10",
            "merchant_id": "0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f",
            "amount": amount, "currency": "USD", "latitude": lat, "longitude": lon,
            "payment_method": "debit_card", "is_foreign": foreign,
        }))
        .unwrap()
    }

    type Row = (f64, Option<f64>, Option<f64>, bool);

    fn reference(r: &Row) -> Vec<&'static str> {
        let (amount, lat, lon, foreign) = *r;
        let mut v = vec![];
        if (amount * 100.0).round() > 500_000.0 {
            v.push("high_amount");
        }
        if foreign {
            v.push("foreign");
        }
        let bad_lat = lat.is_none_or(|x| !(-90.0..=90.0).contains(&x));
        let bad_lon = lon.is_none_or(|x| !(-180.0..=180.0).contains(&x));
        if bad_lat || bad_lon {
            v.push("invalid_geo");
        }
        v
    }

    proptest! {
        #[test]
        fn vectorized_equals_row_by_row(rows in prop::collection::vec((
            prop_oneof![0.0f64..10_000.0, Just(5000.0), Just(5000.01), Just(4999.99)],
            prop::option::of(prop_oneof![-100.0f64..100.0, Just(90.0), Just(-90.0), Just(90.0001)]),
            prop::option::of(prop_oneof![-200.0f64..200.0, Just(180.0), Just(-180.0001)]),
            any::<bool>(),
        ), 0..300)) {
            let rules = RuleSet::defaults().unwrap();
            let mut d = TransactionDecoder::new(Arc::new(FxTable::defaults()), "t");
            for (i, r) in rows.iter().enumerate() {
                d.push(&message(i, r.0, r.1, r.2, r.3), 0, i as i64);
            }
            let out = d.finish(0).unwrap();
            prop_assert_eq!(out.transactions.num_rows(), rows.len());
            let (fact, hits) = rules.apply(&out.transactions).unwrap();
            let reasons = fact.column_by_name("fraud_reasons").unwrap().as_list::<i32>();
            let is_fraud = fact.column_by_name("is_fraud").unwrap().as_boolean();
            let mut expected_counts = vec![0u64; 3];
            for (i, r) in rows.iter().enumerate() {
                let expected = reference(r);
                let got: Vec<String> = reasons.value(i).as_string::<i32>().iter().map(|s| s.unwrap().to_string()).collect();
                prop_assert_eq!(&got, &expected, "row {:?}", r);
                prop_assert_eq!(is_fraud.value(i), !expected.is_empty());
                for name in expected {
                    let k = ["high_amount", "foreign", "invalid_geo"].iter().position(|n| *n == name).unwrap();
                    expected_counts[k] += 1;
                }
            }
            prop_assert_eq!(hits.counts(), expected_counts);
        }
    }
}
