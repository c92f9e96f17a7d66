//! How good the flags are: precision, recall and alert volume against labels.
//!
//! The labels are the truth of a labelled data set — `fraud_labels.csv` from
//! `txpipe generate` (`transaction_id,scenario`), or a bank's confirmed fraud
//! cases — either as a CSV file or as the lake's `fraud_labels` table (loaded
//! by `txpipe seed`). Every landed row counts: a row is positive when its
//! `transaction_id` is labelled.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::prelude::{CsvReadOptions, SessionContext};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::read::{register_lake, register_table};
use crate::schema::{FACT_TABLE, FRAUD_LABELS, FRAUD_LABELS_SCHEMA};

/// Where the labels come from.
#[derive(Debug, Clone)]
pub enum Labels<'a> {
    /// A CSV file with a header `transaction_id,scenario`.
    File(&'a Path),
    /// The lake's `fraud_labels` table.
    Lake,
}

/// Quality of one rule, or of `is_fraud`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scores {
    /// Rule name (`is_fraud` for the decision).
    pub name: String,
    /// Rows flagged.
    pub flagged: u64,
    /// Flagged rows that are labelled fraud.
    pub true_positives: u64,
    /// `true_positives / flagged` (0 when nothing is flagged).
    pub precision: f64,
    /// `true_positives / labelled rows`.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Flagged rows per 1 000 rows.
    pub alerts_per_1000: f64,
}

/// Recall per fraud scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScenarioRecall {
    /// Scenario name from the labels.
    pub scenario: String,
    /// Labelled rows of this scenario in the lake.
    pub labelled: u64,
    /// Of those, rows with `is_fraud`.
    pub caught: u64,
    /// `caught / labelled`.
    pub recall: f64,
    /// Rows of this scenario each rule fired on.
    pub by_rule: BTreeMap<String, u64>,
}

/// The quality report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    /// Fact rows.
    pub rows: u64,
    /// Fact rows whose transaction is labelled fraud.
    pub labelled_rows: u64,
    /// Labels whose transaction is not in the fact table (quarantined or not ingested).
    pub labels_not_in_lake: u64,
    /// The decision, `is_fraud`.
    pub is_fraud: Scores,
    /// Each rule alone.
    pub rules: Vec<Scores>,
    /// Recall per scenario.
    pub scenarios: Vec<ScenarioRecall>,
}

fn scores(name: &str, flagged: u64, tp: u64, labelled: u64, rows: u64) -> Scores {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let precision = ratio(tp, flagged);
    let recall = ratio(tp, labelled);
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Scores {
        name: name.to_string(),
        flagged,
        true_positives: tp,
        precision,
        recall,
        f1,
        alerts_per_1000: ratio(flagged * 1000, rows),
    }
}

/// Computes the report for the lake's fact table. `rule_names` are listed
/// first, in order (rules that never fired included); rules found in
/// `fraud_reasons` but not named follow.
///
/// # Errors
/// No fact table, no labels, or a read failed.
pub async fn quality(
    lake: &Lake,
    labels: Labels<'_>,
    rule_names: &[&str],
) -> Result<QualityReport> {
    let ctx = SessionContext::new();
    let tables = register_lake(&ctx, lake).await?;
    if !tables.iter().any(|t| t == FACT_TABLE) {
        return Err(Error::Config(format!(
            "the lake {} has no {FACT_TABLE} table yet: ingest first",
            lake.url()
        )));
    }
    match labels {
        Labels::File(path) => {
            if !path.exists() {
                return Err(Error::Config(format!("no labels file {}", path.display())));
            }
            let path_s = path.display().to_string();
            ctx.register_csv(
                "labels",
                &path_s,
                CsvReadOptions::new()
                    .has_header(true)
                    .schema(&FRAUD_LABELS_SCHEMA),
            )
            .await
            .map_err(|e| Error::Csv {
                file: path_s.clone(),
                reason: e.to_string(),
            })?;
        }
        Labels::Lake => {
            if !register_table(&ctx, lake, "labels", FRAUD_LABELS).await? {
                return Err(Error::Config(format!(
                    "the lake has no {FRAUD_LABELS} table: `txpipe seed` loads DIR/fraud_labels.csv"
                )));
            }
        }
    }
    let batches = ctx
        .sql(&format!(
            "SELECT l.scenario, f.is_fraud, f.fraud_reasons FROM {FACT_TABLE} f \
             LEFT JOIN (SELECT transaction_id, min(scenario) AS scenario FROM labels \
                        GROUP BY transaction_id) l ON f.transaction_id = l.transaction_id"
        ))
        .await?
        .collect()
        .await?;
    let missing = ctx
        .sql(&format!(
            "SELECT count(DISTINCT transaction_id) FROM labels WHERE NOT EXISTS \
             (SELECT 1 FROM {FACT_TABLE} f WHERE f.transaction_id = labels.transaction_id)"
        ))
        .await?
        .collect()
        .await?;
    let labels_not_in_lake = missing
        .first()
        .filter(|b| b.num_rows() > 0)
        .map(|b| {
            b.column(0)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0)
        })
        .unwrap_or(0) as u64;

    let (mut rows, mut labelled, mut fraud, mut fraud_tp) = (0u64, 0u64, 0u64, 0u64);
    let mut per_rule: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut per_scenario: BTreeMap<String, ScenarioRecall> = BTreeMap::new();
    for b in &batches {
        let scenario = b.column(0).as_string::<i32>();
        let is_fraud = b.column(1).as_boolean();
        let reasons = b.column(2).as_list::<i32>();
        for i in 0..b.num_rows() {
            rows += 1;
            let positive = !scenario.is_null(i);
            let flagged = is_fraud.value(i);
            labelled += u64::from(positive);
            fraud += u64::from(flagged);
            fraud_tp += u64::from(flagged && positive);
            let fired = reasons.value(i);
            let fired = fired.as_string::<i32>();
            let s = positive.then(|| {
                per_scenario
                    .entry(scenario.value(i).to_string())
                    .or_insert_with(|| ScenarioRecall {
                        scenario: scenario.value(i).to_string(),
                        labelled: 0,
                        caught: 0,
                        recall: 0.0,
                        by_rule: BTreeMap::new(),
                    })
            });
            if let Some(s) = s {
                s.labelled += 1;
                s.caught += u64::from(flagged);
                for r in fired.iter().flatten() {
                    *s.by_rule.entry(r.to_string()).or_default() += 1;
                }
            }
            for r in fired.iter().flatten() {
                let e = per_rule.entry(r.to_string()).or_default();
                e.0 += 1;
                e.1 += u64::from(positive);
            }
        }
    }
    let mut names: Vec<String> = rule_names.iter().map(|s| s.to_string()).collect();
    for r in per_rule.keys() {
        if !names.contains(r) {
            names.push(r.clone());
        }
    }
    let rules = names
        .iter()
        .map(|n| {
            let (f, tp) = per_rule.get(n).copied().unwrap_or_default();
            scores(n, f, tp, labelled, rows)
        })
        .collect();
    let scenarios = per_scenario
        .into_values()
        .map(|mut s| {
            s.recall = if s.labelled == 0 {
                0.0
            } else {
                s.caught as f64 / s.labelled as f64
            };
            s
        })
        .collect();
    Ok(QualityReport {
        rows,
        labelled_rows: labelled,
        labels_not_in_lake,
        is_fraud: scores("is_fraud", fraud, fraud_tp, labelled, rows),
        rules,
        scenarios,
    })
}

impl QualityReport {
    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as aligned text tables.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} rows, {} labelled fraud ({:.2} %), {} labels not in the lake",
            self.rows,
            self.labelled_rows,
            if self.rows == 0 {
                0.0
            } else {
                self.labelled_rows as f64 * 100.0 / self.rows as f64
            },
            self.labels_not_in_lake
        );
        let _ = writeln!(
            s,
            "\n{:<22} {:>9} {:>9} {:>9} {:>7} {:>7} {:>12}",
            "rule", "flagged", "true pos", "precision", "recall", "F1", "per 1000 tx"
        );
        for r in std::iter::once(&self.is_fraud).chain(&self.rules) {
            let _ = writeln!(
                s,
                "{:<22} {:>9} {:>9} {:>9.3} {:>7.3} {:>7.3} {:>12.2}",
                r.name, r.flagged, r.true_positives, r.precision, r.recall, r.f1, r.alerts_per_1000
            );
        }
        let _ = writeln!(
            s,
            "\n{:<30} {:>9} {:>8} {:>7}  rules that fired (rows)",
            "scenario", "labelled", "caught", "recall"
        );
        for sc in &self.scenarios {
            let mut fired: Vec<(&String, &u64)> = sc.by_rule.iter().collect();
            fired.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let fired: Vec<String> = fired.iter().map(|(r, n)| format!("{r} {n}")).collect();
            let _ = writeln!(
                s,
                "{:<30} {:>9} {:>8} {:>7.3}  {}",
                sc.scenario,
                sc.labelled,
                sc.caught,
                sc.recall,
                fired.join(", ")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_the_textbook_ratios() {
        let s = scores("r", 10, 8, 16, 1000);
        assert_eq!(s.precision, 0.8);
        assert_eq!(s.recall, 0.5);
        assert!((s.f1 - 2.0 * 0.8 * 0.5 / 1.3).abs() < 1e-12);
        assert_eq!(s.alerts_per_1000, 10.0);
        let z = scores("z", 0, 0, 0, 0);
        assert_eq!(
            (z.precision, z.recall, z.f1, z.alerts_per_1000),
            (0.0, 0.0, 0.0, 0.0)
        );
    }
}
