//! The rules file as written: threshold, lateness, named windows, features
//! and rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default rules file (`sql/rules.toml`), built into the binary.
pub const DEFAULT_RULES_TOML: &str = include_str!("../../../sql/rules.toml");

/// Default `lateness` when the rules file gives none.
pub const DEFAULT_LATENESS: &str = "1 day";

fn default_weight() -> f64 {
    1.0
}

/// One rule as written in the rules file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Short identifier (`[a-z0-9_]+`), stored in `fraud_reasons`.
    pub name: String,
    /// SQL boolean expression over the fact columns and features.
    pub sql: String,
    /// What the rule catches, for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Added to `risk_score` when the rule fires (default 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// More columns or features to show in `fraud_evidence` when it fires,
    /// beside those the SQL reads.
    #[serde(default)]
    pub evidence: Vec<String>,
}

impl Rule {
    /// A rule with weight 1 and no description.
    pub fn new(name: impl Into<String>, sql: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            sql: sql.into(),
            description: None,
            weight: 1.0,
            evidence: Vec::new(),
        }
    }
}

/// A named SQL expression rules refer to, typically a window call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    /// Identifier (`[a-z0-9_]+`) rules use.
    pub name: String,
    /// SQL over the fact columns, earlier features and window calls.
    pub sql: String,
    /// What it measures, for humans.
    #[serde(default)]
    pub description: Option<String>,
}

/// A rules file, parsed but not compiled.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// `is_fraud = risk_score >= threshold` (default 1).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// How late a row may be and still see complete windows (default `1 day`).
    #[serde(default)]
    pub lateness: Option<String>,
    /// Named window definitions.
    #[serde(default)]
    pub windows: BTreeMap<String, String>,
    /// Features, in order (a feature may use earlier ones).
    #[serde(default)]
    pub feature: Vec<Feature>,
    /// Rules, in order.
    #[serde(default)]
    pub rule: Vec<Rule>,
}

impl RulesConfig {
    /// Parses a rules file's TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`Error::RulesFile`] for bad TOML.
    pub fn from_toml(origin: &str, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::RulesFile {
            path: origin.into(),
            reason: e.to_string(),
        })
    }

    /// The shipped `sql/rules.toml`.
    ///
    /// # Errors
    /// Only if the shipped file were broken (covered by tests).
    pub fn defaults() -> Result<Self> {
        Self::from_toml("built-in sql/rules.toml", DEFAULT_RULES_TOML)
    }
}
