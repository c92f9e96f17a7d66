//! One model: a SELECT in a `.sql` file, its dependencies and materialization.

use std::collections::BTreeSet;

use super::template::{parse, Piece};
use crate::error::{Error, Result};

/// How a model's result is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Materialized {
    /// Written as a Parquet mart at `LAKE/marts/<model>/`.
    Table,
    /// Not written; computed by the models (and tests) that read it.
    View,
    /// A Parquet mart like a table, maintained per `event_date`: a run
    /// recomputes only the dates the fact table's new commits touched and
    /// replaces those rows (see [`super::incremental`]).
    Incremental,
}

impl Materialized {
    /// `table`, `view` or `incremental`, as written in `config()`.
    pub fn as_str(self) -> &'static str {
        match self {
            Materialized::Table => "table",
            Materialized::View => "view",
            Materialized::Incremental => "incremental",
        }
    }
}

/// A parsed model file.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file stem: the model's table name.
    pub name: String,
    /// Table or view.
    pub materialized: Materialized,
    /// Models read through `{{ ref('…') }}`.
    pub refs: BTreeSet<String>,
    /// `unique_key` of an incremental model (documentation and its test).
    pub unique_key: Vec<String>,
    pieces: Vec<Piece>,
}

/// Checks a model or table name: letters, digits and `_`, not starting with a digit.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Project(format!(
            "{kind} name '{name}' must be letters, digits and '_' (not starting with a digit)"
        )))
    }
}

impl Model {
    /// Parses the file `name.sql` with contents `sql`.
    ///
    /// # Errors
    /// A bad name, template syntax, an unknown macro or config value.
    pub fn parse(name: &str, sql: &str) -> Result<Self> {
        check_name("model", name)?;
        let origin = format!("model {name}");
        let pieces = parse(&origin, sql)?;
        let mut refs = BTreeSet::new();
        let mut materialized = Materialized::Table;
        let mut unique_key = Vec::new();
        let mut partition_by = None;
        for p in &pieces {
            let Piece::Call { name: call, args } = p else {
                continue;
            };
            match (call.as_str(), args.as_slice()) {
                ("ref", [target]) => {
                    check_name("ref", target)?;
                    refs.insert(target.clone());
                }
                ("config", args) => {
                    for a in args {
                        match a.split_once('=') {
                            Some(("materialized", "table")) => materialized = Materialized::Table,
                            Some(("materialized", "view")) => materialized = Materialized::View,
                            Some(("materialized", "incremental")) => {
                                materialized = Materialized::Incremental
                            }
                            Some(("unique_key", keys)) => {
                                unique_key = keys.split(',').map(str::to_string).collect()
                            }
                            Some(("partition_by", p)) => partition_by = Some(p.to_string()),
                            _ => {
                                return Err(Error::Project(format!(
                                    "{origin}: unknown config '{a}' (materialized='table', 'view' or \
                                     'incremental'; unique_key=[...]; partition_by='event_date')"
                                )))
                            }
                        }
                    }
                }
                ("rule_hits", [_]) | ("rule_hits_sum", []) | ("rule_hit_columns", [_]) => {}
                (other, _) => {
                    return Err(Error::Project(format!(
                        "{origin}: unknown or malformed macro '{other}' \
                         (known: ref('model'), config(materialized='table'|'view'), rule_hits('column'), \
                         rule_hits_sum(), rule_hit_columns('alias'))"
                    )))
                }
            }
        }
        if materialized == Materialized::Incremental
            && partition_by.as_deref() != Some(crate::schema::EVENT_DATE)
        {
            return Err(Error::Project(format!(
                "{origin}: an incremental model needs partition_by='event_date' (the fact \
                 table's partition column: a run recomputes the dates its new commits touched)"
            )));
        }
        Ok(Model {
            name: name.to_string(),
            materialized,
            refs,
            unique_key,
            pieces,
        })
    }

    /// SHA-256 of the SQL to run with `rules`, first 16 hex digits: an
    /// incremental model whose SQL changed (its file, or the rules that
    /// `rule_hits` expands to) is rebuilt in full.
    pub fn fingerprint(&self, rules: &[String]) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.render(rules).as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The SQL to run: refs become table names, `rule_hits(col)` becomes one
    /// `<rule>_hits` count column per rule name.
    pub fn render(&self, rules: &[String]) -> String {
        let mut sql = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => sql.push_str(t),
                Piece::Call { name, args } => match (name.as_str(), args.as_slice()) {
                    ("ref", [target]) => sql.push_str(target),
                    ("rule_hits", [column]) => sql.push_str(&rule_hits(column, rules)),
                    ("rule_hits_sum", []) => {
                        sql.push_str(&rule_list(rules, |c| format!("SUM({c}) AS {c}")))
                    }
                    ("rule_hit_columns", [alias]) => {
                        sql.push_str(&rule_list(rules, |c| format!("{alias}.{c}")))
                    }
                    _ => {}
                },
            }
        }
        sql
    }
}

/// The quoted `"<rule>_hits"` column of each rule, formatted by `f`, comma-separated.
fn rule_list(rules: &[String], f: impl Fn(&str) -> String) -> String {
    if rules.is_empty() {
        return f("no_rules");
    }
    rules
        .iter()
        .map(|r| f(&format!("\"{}_hits\"", r.replace('"', ""))))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SUM(CASE WHEN array_has(col, 'rule') THEN 1 ELSE 0 END) AS "rule_hits", …`
fn rule_hits(column: &str, rules: &[String]) -> String {
    if rules.is_empty() {
        return "0 AS no_rules".to_string();
    }
    rules
        .iter()
        .map(|r| {
            format!(
                "SUM(CASE WHEN array_has({column}, '{}') THEN 1 ELSE 0 END) AS \"{}_hits\"",
                r.replace('\'', "''"),
                r.replace('"', "")
            )
        })
        .collect::<Vec<_>>()
        .join(",\n    ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_refs_config_and_renders() {
        let m = Model::parse(
            "daily",
            "{{ config(materialized='view') }}SELECT {{ rule_hits('r') }} FROM {{ ref('stg') }}",
        )
        .unwrap();
        assert_eq!(m.materialized, Materialized::View);
        assert_eq!(m.refs.iter().collect::<Vec<_>>(), vec!["stg"]);
        let sql = m.render(&["a".into(), "b".into()]);
        assert!(sql.starts_with("SELECT SUM(CASE WHEN array_has(r, 'a')"));
        assert!(sql.contains("AS \"b_hits\" FROM stg"));
    }

    #[test]
    fn rejects_unknown_macros_configs_and_names() {
        assert!(Model::parse("m", "SELECT {{ source('x') }}").is_err());
        assert!(Model::parse("m", "{{ config(materialized='incremental') }}").is_err());
        assert!(Model::parse("m", "{{ config(materialized='snapshot') }}").is_err());
        let inc = Model::parse(
            "m",
            "{{ config(materialized='incremental', unique_key=['event_date', 'k'], partition_by='event_date') }} SELECT 1",
        )
        .unwrap();
        assert_eq!(inc.materialized, Materialized::Incremental);
        assert_eq!(inc.unique_key, vec!["event_date", "k"]);
        assert!(Model::parse("1m", "SELECT 1").is_err());
        assert!(Model::parse("m", "SELECT * FROM {{ ref('a b') }}").is_err());
    }
}
