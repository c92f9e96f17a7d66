//! Fraud rules: named SQL expressions, compiled once, evaluated per batch.
//!
//! A rules file (`sql/rules.toml`) has
//!
//! - `threshold`: a row is fraud when the weights of the rules that fired add
//!   up to at least this (`risk_score >= threshold`);
//! - `lateness`: how far behind its partition's newest row a row may arrive
//!   and still see complete windows (the state keeps the longest window plus
//!   this);
//! - `[windows]`: named window definitions (`PARTITION BY … ORDER BY
//!   transaction_ts RANGE BETWEEN INTERVAL '…' PRECEDING AND …`);
//! - `[[feature]]`s: named SQL expressions, usually a window call such as
//!   `count(*) OVER last_10m`, that rules and later features refer to by name;
//! - `[[rule]]`s: boolean SQL expressions over the fact columns and features,
//!   each with a `weight`.
//!
//! Window calls read the key's *earlier* rows (see [`window`]); their state is
//! kept by [`state::WindowState`]. Everything else is a plain vectorized
//! DataFusion expression.

mod config;
mod evidence;
mod plan;
pub mod state;
pub mod udf;
pub mod window;

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBufferBuilder, Float64Array, ListArray, RecordBatch,
    StringBuilder,
};
use datafusion::arrow::buffer::{BooleanBuffer, OffsetBuffer};
use datafusion::arrow::compute::prep_null_mask_filter;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::schema::{FACT_SCHEMA, TRANSACTION_SCHEMA};
pub use config::{Feature, Rule, RulesConfig, DEFAULT_LATENESS, DEFAULT_RULES_TOML};
use evidence::Evidence;
use plan::plan_calls;
use state::{PlannedCall, Space, WindowPlan, WindowState};
use window::{NamedWindows, WindowCall};

#[derive(Debug)]
struct CompiledRule {
    rule: Rule,
    expr: Arc<dyn PhysicalExpr>,
    /// (label, column index in the evaluation schema) shown as evidence.
    evidence: Vec<(String, usize)>,
}

#[derive(Debug)]
struct CompiledFeature {
    expr: Arc<dyn PhysicalExpr>,
    /// The evaluation schema up to and including this feature.
    schema: SchemaRef,
}

/// A compiled set of fraud rules.
///
/// ```
/// use txpipe_core::rules::{Rule, RuleSet};
/// let rules = RuleSet::try_new(vec![Rule::new("big", "amount_usd > 100")]).unwrap();
/// assert_eq!(rules.names(), vec!["big"]);
/// // A typo is caught at start-up, naming the rule.
/// let err = RuleSet::try_new(vec![Rule::new("typo", "amount_usdd > 1")]).unwrap_err();
/// assert!(err.to_string().starts_with("rule 'typo'"));
/// ```
#[derive(Debug)]
pub struct RuleSet {
    config: RulesConfig,
    rules: Vec<CompiledRule>,
    features: Vec<CompiledFeature>,
    plan: Option<WindowPlan>,
    threshold: f64,
    /// Transaction columns, window columns, features.
    schema: SchemaRef,
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

/// A boolean column as a mask, NULL as false ("did not fire"); an error
/// naming `who` when the column is not boolean.
pub(crate) fn true_mask(value: &ArrayRef, who: &str, what: &str) -> Result<BooleanArray> {
    let mask = value
        .as_any()
        .downcast_ref::<BooleanArray>()
        .ok_or_else(|| Error::Rule {
            rule: who.to_string(),
            reason: format!("{what}evaluated to {}, not boolean", value.data_type()),
        })?;
    Ok(if mask.null_count() > 0 {
        prep_null_mask_filter(mask)
    } else {
        mask.clone()
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

impl RuleSet {
    /// Compiles stateless rules (weight as given, threshold 1).
    ///
    /// # Errors
    /// [`Error::Rule`] naming the rule on a bad name, a duplicate name, a SQL
    /// syntax error, an unknown column or a non-boolean expression.
    pub fn try_new(rules: Vec<Rule>) -> Result<Self> {
        Self::from_config(RulesConfig {
            rule: rules,
            ..Default::default()
        })
    }

    /// Compiles a whole rules file: windows, features and rules.
    ///
    /// # Errors
    /// [`Error::Rule`] naming the rule or feature that is wrong: a bad name,
    /// a duplicate, a SQL error, an unknown column, a window call txpipe
    /// cannot keep state for (no key, negative or unbounded interval), a
    /// non-boolean rule.
    pub fn from_config(config: RulesConfig) -> Result<Self> {
        let ctx = SessionContext::new();
        udf::register(&ctx);
        let tx = DFSchema::try_from(TRANSACTION_SCHEMA.as_ref().clone())?;
        let threshold = config.threshold.unwrap_or(1.0);
        if !threshold.is_finite() || threshold <= 0.0 {
            return Err(Error::Config(format!(
                "rules threshold must be a positive number, got {threshold}"
            )));
        }
        let lateness_text = config.lateness.as_deref().unwrap_or(DEFAULT_LATENESS);
        let lateness = window::parse_duration(lateness_text)
            .map_err(|r| Error::Config(format!("rules lateness: {r}")))?;
        let mut named = NamedWindows::new();
        for (name, spec) in &config.windows {
            let parsed = window::parse_window_spec(spec).map_err(|reason| Error::Rule {
                rule: format!("window {name}"),
                reason,
            })?;
            named.insert(name.clone(), parsed);
        }
        // Pass 1: pull the window calls out of every feature and rule.
        let mut calls: Vec<WindowCall> = Vec::new();
        let mut planned: Vec<PlannedCall> = Vec::new();
        let mut spaces: Vec<Space> = Vec::new();
        let mut names: Vec<&str> = Vec::new();
        let mut rewritten_features = Vec::new();
        let mut rewritten_rules = Vec::new();
        let items = config
            .feature
            .iter()
            .map(|f| (f.name.as_str(), f.sql.as_str(), true))
            .chain(
                config
                    .rule
                    .iter()
                    .map(|r| (r.name.as_str(), r.sql.as_str(), false)),
            );
        for (name, sql, is_feature) in items {
            let fail = |reason: String| Error::Rule {
                rule: name.to_string(),
                reason,
            };
            if !valid_name(name) {
                return Err(fail(
                    "name must be non-empty and use only a-z, 0-9 and _".into(),
                ));
            }
            if names.contains(&name) {
                return Err(fail("defined twice".into()));
            }
            if is_feature && TRANSACTION_SCHEMA.index_of(name).is_ok() {
                return Err(fail("a feature cannot have a column's name".into()));
            }
            names.push(name);
            let from = calls.len();
            let sql2 = window::extract(sql, &named, &mut calls).map_err(&fail)?;
            plan_calls(&ctx, &tx, &calls, from, &mut planned, &mut spaces, &fail)?;
            if is_feature {
                rewritten_features.push(sql2);
            } else {
                rewritten_rules.push(sql2);
            }
        }
        // Pass 2: compile features and rules over transaction + window columns.
        let mut fields: Vec<Field> = TRANSACTION_SCHEMA
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for (i, pc) in planned.iter().enumerate() {
            fields.push(Field::new(window::column_name(i), pc.output.clone(), true));
        }
        let mut labels: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        for (i, pc) in planned.iter().enumerate() {
            labels[TRANSACTION_SCHEMA.fields().len() + i] = pc.call.text.clone();
        }
        let mut features = Vec::with_capacity(config.feature.len());
        for (f, sql) in config.feature.iter().zip(&rewritten_features) {
            let fail = |reason: String| Error::Rule {
                rule: f.name.clone(),
                reason,
            };
            let schema = Arc::new(Schema::new(fields.clone()));
            let df = DFSchema::try_from(schema.as_ref().clone())?;
            let e = ctx
                .parse_sql_expr(sql, &df)
                .map_err(|e| fail(format!("{}: {e}", f.sql)))?;
            let p = ctx
                .create_physical_expr(e, &df)
                .map_err(|e| fail(format!("{}: {e}", f.sql)))?;
            let t = p.data_type(&schema).map_err(|e| fail(e.to_string()))?;
            fields.push(Field::new(&f.name, t, true));
            labels.push(f.name.clone());
            features.push(CompiledFeature {
                expr: p,
                schema: Arc::new(Schema::new(fields.clone())),
            });
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let df = DFSchema::try_from(schema.as_ref().clone())?;
        let mut rules = Vec::with_capacity(config.rule.len());
        for (rule, sql) in config.rule.iter().zip(&rewritten_rules) {
            let fail = |reason: String| Error::Rule {
                rule: rule.name.clone(),
                reason,
            };
            if !rule.weight.is_finite() {
                return Err(fail(format!(
                    "weight must be a number, got {}",
                    rule.weight
                )));
            }
            let expr = ctx
                .parse_sql_expr(sql, &df)
                .map_err(|e| fail(format!("{}: {e}", rule.sql)))?;
            let mut refs: Vec<usize> = expr
                .column_refs()
                .iter()
                .filter_map(|c| schema.index_of(&c.name).ok())
                .collect();
            for extra in &rule.evidence {
                refs.push(schema.index_of(extra).map_err(|_| {
                    fail(format!(
                        "evidence '{extra}' is neither a column nor a feature"
                    ))
                })?);
            }
            refs.sort_unstable();
            refs.dedup();
            let physical = ctx
                .create_physical_expr(expr, &df)
                .map_err(|e| fail(format!("{}: {e}", rule.sql)))?;
            let data_type = physical
                .data_type(&schema)
                .map_err(|e| fail(e.to_string()))?;
            if data_type != DataType::Boolean {
                return Err(fail(format!(
                    "'{}' is {data_type}, not a boolean expression",
                    rule.sql
                )));
            }
            rules.push(CompiledRule {
                rule: rule.clone(),
                expr: physical,
                evidence: refs.into_iter().map(|i| (labels[i].clone(), i)).collect(),
            });
        }
        let plan = (!planned.is_empty()).then(|| {
            let horizon = planned
                .iter()
                .map(|p| p.call.preceding)
                .max()
                .unwrap_or(0)
                .saturating_add(lateness);
            WindowPlan::new(planned, spaces, horizon)
        });
        Ok(Self {
            config,
            rules,
            features,
            plan,
            threshold,
            schema,
        })
    }

    /// Parses and compiles a rules file's TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::RulesFile`] for bad TOML, [`Error::Rule`] for a bad rule.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self> {
        Self::from_config(RulesConfig::from_toml(origin, text)?)
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
        Self::from_config(RulesConfig::defaults()?)
    }

    /// Rule names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.rule.name.as_str()).collect()
    }

    /// The rules as written.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|r| &r.rule)
    }

    /// The whole rules file as parsed (to extend it and compile again).
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }

    /// `is_fraud = risk_score >= threshold`.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The window calls, when some rule reads earlier rows.
    pub fn window_plan(&self) -> Option<&WindowPlan> {
        self.plan.as_ref()
    }

    /// Evaluates the window calls on a batch against `state` and adds the
    /// batch to it (the part of rule evaluation that must run in source order).
    ///
    /// # Errors
    /// An input expression failed to evaluate.
    pub fn window_columns(
        &self,
        batch: &RecordBatch,
        state: &mut WindowState,
    ) -> Result<Vec<ArrayRef>> {
        match &self.plan {
            Some(plan) => plan.evaluate(batch, state),
            None => Ok(Vec::new()),
        }
    }

    fn evaluate_with(
        &self,
        batch: &RecordBatch,
        windows: Vec<ArrayRef>,
    ) -> Result<(RecordBatch, RuleHits)> {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.extend(windows);
        for f in &self.features {
            let partial = RecordBatch::try_new(
                Arc::new(Schema::new(f.schema.fields()[..columns.len()].to_vec())),
                columns.clone(),
            )?;
            let value = f.expr.evaluate(&partial)?.into_array(n)?;
            columns.push(value);
        }
        let full = RecordBatch::try_new(self.schema.clone(), columns)?;
        let mut masks = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let value = r.expr.evaluate(&full)?.into_array(n)?;
            masks.push(true_mask(&value, &r.rule.name, "")?);
        }
        Ok((full, RuleHits { masks }))
    }

    /// Evaluates every rule on a batch of [`TRANSACTION_SCHEMA`] rows, taking
    /// the batch as the whole stream (window calls see only its earlier rows).
    ///
    /// # Errors
    /// The batch does not have the transaction columns.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<RuleHits> {
        let windows = self.window_columns(batch, &mut WindowState::new(true))?;
        Ok(self.evaluate_with(batch, windows)?.1)
    }

    /// Evaluates the rules and returns the fact rows ([`FACT_SCHEMA`]),
    /// taking the batch as the whole stream; see [`apply_windowed`](Self::apply_windowed)
    /// to continue a stream.
    ///
    /// # Errors
    /// See [`evaluate`](Self::evaluate).
    pub fn apply(&self, batch: &RecordBatch) -> Result<(RecordBatch, RuleHits)> {
        let windows = self.window_columns(batch, &mut WindowState::new(true))?;
        self.apply_windowed(batch, windows)
    }

    /// Evaluates the rules given the window columns from
    /// [`window_columns`](Self::window_columns), and returns the fact rows:
    /// the transaction columns plus `fraud_reasons`, `is_fraud`, `risk_score`
    /// and `fraud_evidence`.
    ///
    /// # Errors
    /// A rule failed to evaluate.
    pub fn apply_windowed(
        &self,
        batch: &RecordBatch,
        windows: Vec<ArrayRef>,
    ) -> Result<(RecordBatch, RuleHits)> {
        let (full, hits) = self.evaluate_with(batch, windows)?;
        let n = batch.num_rows();
        let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
        let mut values = StringBuilder::new();
        let mut any = BooleanBufferBuilder::new(n);
        let mut scores: Vec<f64> = Vec::with_capacity(n);
        let mut evidence = StringBuilder::new();
        let formats = Evidence::new(
            &full,
            self.rules
                .iter()
                .flat_map(|r| r.evidence.iter().map(|(_, i)| *i)),
        )?;
        offsets.push(0);
        let mut count: i32 = 0;
        // Rows no rule fired on (most) are settled by one bit test.
        let fired = hits
            .masks
            .iter()
            .map(|m| m.values().clone())
            .reduce(|a, b| &a | &b);
        let masks: Vec<&BooleanBuffer> = hits.masks.iter().map(BooleanArray::values).collect();
        let quiet = 0.0 >= self.threshold;
        for row in 0..n {
            if !fired.as_ref().is_some_and(|f| f.value(row)) {
                offsets.push(count);
                any.append(quiet);
                scores.push(0.0);
                evidence.append_null();
                continue;
            }
            let mut score = 0.0;
            let mut json = String::new();
            for (rule, mask) in self.rules.iter().zip(&masks) {
                if mask.value(row) {
                    values.append_value(&rule.rule.name);
                    count += 1;
                    score += rule.rule.weight;
                    formats.push_rule(&mut json, &rule.rule.name, &rule.evidence, row);
                }
            }
            offsets.push(count);
            any.append(score >= self.threshold);
            scores.push(score);
            if json.is_empty() {
                evidence.append_null();
            } else {
                json.push('}');
                evidence.append_value(&json);
            }
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
        columns.push(Arc::new(Float64Array::from(scores)));
        columns.push(Arc::new(evidence.finish()));
        columns.extend_from_slice(&batch.columns()[12..TRANSACTION_SCHEMA.fields().len()]);
        Ok((RecordBatch::try_new(FACT_SCHEMA.clone(), columns)?, hits))
    }
}

#[cfg(test)]
mod reference_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TransactionDecoder;
    use crate::fx::FxTable;
    use datafusion::arrow::array::AsArray;
    use proptest::prelude::*;

    fn rule(name: &str, sql: &str) -> Rule {
        Rule::new(name, sql)
    }

    /// The three stateless default rules, each flagging alone.
    fn stateless() -> RuleSet {
        let d = RulesConfig::defaults().unwrap();
        let rules = d.rule[..3]
            .iter()
            .map(|r| Rule::new(r.name.clone(), r.sql.clone()))
            .collect();
        RuleSet::try_new(rules).unwrap()
    }

    #[test]
    fn defaults_compile() {
        let r = RuleSet::defaults().unwrap();
        assert_eq!(
            r.names(),
            vec![
                "high_amount",
                "foreign",
                "invalid_geo",
                "velocity",
                "impossible_travel",
                "card_testing",
                "amount_spike",
                "new_device",
                "fresh_device_burst",
                "foreign_burst",
                "thin_history_spike"
            ]
        );
        assert!(r.window_plan().is_some());
        // 30 days + 1 day of lateness.
        assert_eq!(
            r.window_plan().unwrap().horizon_micros(),
            31 * 86_400_000_000
        );
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
            let rules = stateless();
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
