//! Data tests: declared checks compiled to SQL queries that return failing rows.

use serde::Deserialize;

use super::freshness::{compile_source, Freshness, RawSource};
use super::model::check_name;
use super::template::{parse, Piece};
use crate::error::{Error, Result};

/// What happens when a test finds failing rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The run fails (non-zero exit; `txpipe run` does not publish).
    Error,
    /// Reported, the run goes on.
    Warn,
}

/// One compiled test.
#[derive(Debug, Clone)]
pub struct DataTest {
    /// Unique name, e.g. `unique_fact_transaction_transaction_id`.
    pub name: String,
    /// The table or model it reads (first one for singular tests).
    pub table: String,
    /// Models and tables it depends on.
    pub reads: Vec<String>,
    /// Error or warn.
    pub severity: Severity,
    /// A query returning the failing rows (for a freshness check: one row
    /// with `age_seconds` and `newest`).
    pub sql: String,
    /// Set for a source freshness check ([`super::freshness`]).
    pub freshness: Option<Freshness>,
}

/// A `[[test]]` entry of `tests.toml`, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    name: Option<String>,
    table: String,
    kind: String,
    column: Option<String>,
    columns: Option<Vec<String>>,
    to: Option<String>,
    field: Option<String>,
    values: Option<Vec<toml::Value>>,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(rename = "where")]
    filter: Option<String>,
    severity: Option<Severity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestsFile {
    #[serde(default)]
    test: Vec<RawTest>,
    #[serde(default)]
    source: Vec<RawSource>,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        other => {
            return Err(Error::Project(format!(
                "accepted value {other} is not a string, number or boolean"
            )))
        }
    })
}

/// Parses `tests.toml` into compiled tests.
///
/// # Errors
/// TOML syntax, an unknown kind, a missing field the kind needs (the error
/// names the test), or duplicate test names.
pub fn parse_tests_toml(origin: &str, text: &str) -> Result<Vec<DataTest>> {
    let file: TestsFile =
        toml::from_str(text).map_err(|e| Error::Project(format!("{origin}: {e}")))?;
    let mut out: Vec<DataTest> = Vec::new();
    for (i, raw) in file.test.into_iter().enumerate() {
        let t = compile(&raw).map_err(|e| {
            Error::Project(format!("{origin}: test #{} on {}: {e}", i + 1, raw.table))
        })?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(Error::Project(format!(
                "{origin}: two tests are named {} (give one a `name`)",
                t.name
            )));
        }
        out.push(t);
    }
    for (i, raw) in file.source.iter().enumerate() {
        let t = compile_source(raw)
            .map_err(|e| Error::Project(format!("{origin}: source #{}: {e}", i + 1)))?;
        if out.iter().any(|o| o.name == t.name) {
            return Err(Error::Project(format!(
                "{origin}: two freshness checks on {}",
                t.name
            )));
        }
        out.push(t);
    }
    Ok(out)
}

fn need<'a>(v: &'a Option<String>, what: &str, kind: &str) -> Result<&'a str> {
    v.as_deref()
        .ok_or_else(|| Error::Project(format!("kind {kind} needs `{what}`")))
}

fn compile(raw: &RawTest) -> Result<DataTest> {
    check_name("table", &raw.table)?;
    let table = ident(&raw.table);
    let filter = raw
        .filter
        .as_deref()
        .map_or(String::new(), |w| format!(" AND ({w})"));
    let kind = raw.kind.as_str();
    let mut reads = vec![raw.table.clone()];
    let (label, sql) = match kind {
        "unique" => {
            let cols: Vec<String> = match (&raw.column, &raw.columns) {
                (Some(c), None) => vec![c.clone()],
                (None, Some(cs)) if !cs.is_empty() => cs.clone(),
                _ => {
                    return Err(Error::Project(
                        "kind unique needs `column` or `columns`".into(),
                    ))
                }
            };
            let list = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
            let not_null = cols
                .iter()
                .map(|c| format!("{} IS NOT NULL", ident(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            (
                cols.join("_"),
                format!(
                    "SELECT {list}, COUNT(*) AS occurrences FROM {table} \
                     WHERE {not_null}{filter} GROUP BY {list} HAVING COUNT(*) > 1"
                ),
            )
        }
        "not_null" => {
            let c = need(&raw.column, "column", kind)?;
            (
                c.to_string(),
                format!("SELECT * FROM {table} WHERE {} IS NULL{filter}", ident(c)),
            )
        }
        "relationships" => {
            let c = need(&raw.column, "column", kind)?;
            let to = need(&raw.to, "to", kind)?;
            check_name("table", to)?;
            let field = raw.field.as_deref().unwrap_or(c);
            reads.push(to.to_string());
            (
                format!("{c}__{to}"),
                format!(
                    "SELECT child.{c} AS {c}, COUNT(*) AS occurrences FROM {table} AS child \
                     WHERE child.{c} IS NOT NULL{filter} AND child.{c} NOT IN \
                     (SELECT parent.{f} FROM {to} AS parent WHERE parent.{f} IS NOT NULL) \
                     GROUP BY child.{c}",
                    c = ident(c),
                    to = ident(to),
                    f = ident(field),
                ),
            )
        }
        "accepted_values" => {
            let c = need(&raw.column, "column", kind)?;
            let values = raw
                .values
                .as_ref()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::Project("kind accepted_values needs `values`".into()))?;
            let list = values.iter().map(literal).collect::<Result<Vec<_>>>()?;
            (
                c.to_string(),
                format!(
                    "SELECT {c}, COUNT(*) AS occurrences FROM {table} \
                     WHERE {c} IS NOT NULL AND {c} NOT IN ({}){filter} GROUP BY {c}",
                    list.join(", "),
                    c = ident(c)
                ),
            )
        }
        "range" => {
            let c = need(&raw.column, "column", kind)?;
            let mut outside = Vec::new();
            if let Some(min) = raw.min {
                outside.push(format!("{} < {min}", ident(c)));
            }
            if let Some(max) = raw.max {
                outside.push(format!("{} > {max}", ident(c)));
            }
            if outside.is_empty() {
                return Err(Error::Project("kind range needs `min` or `max`".into()));
            }
            (
                c.to_string(),
                format!(
                    "SELECT * FROM {table} WHERE ({}){filter}",
                    outside.join(" OR ")
                ),
            )
        }
        other => {
            return Err(Error::Project(format!(
                "unknown kind '{other}' (unique, not_null, relationships, accepted_values, range)"
            )))
        }
    };
    Ok(DataTest {
        name: raw
            .name
            .clone()
            .unwrap_or_else(|| format!("{kind}_{}_{label}", raw.table)),
        table: raw.table.clone(),
        reads,
        severity: raw.severity.unwrap_or(Severity::Error),
        sql,
        freshness: None,
    })
}

/// A singular test: a `.sql` file returning failing rows; `{{ ref('m') }}`
/// names models, `-- severity: warn` makes it a warning.
///
/// # Errors
/// Template syntax or a macro other than `ref`.
pub fn parse_singular(name: &str, text: &str) -> Result<DataTest> {
    check_name("test", name)?;
    let origin = format!("test {name}");
    let mut sql = String::new();
    let mut reads = Vec::new();
    for p in parse(&origin, text)? {
        match p {
            Piece::Text(t) => sql.push_str(&t),
            Piece::Call { name: call, args } if call == "ref" && args.len() == 1 => {
                check_name("ref", &args[0])?;
                sql.push_str(&args[0]);
                reads.push(args[0].clone());
            }
            Piece::Call { name: call, .. } => {
                return Err(Error::Project(format!(
                    "{origin}: only ref('model') may be used in a test, not {call}"
                )))
            }
        }
    }
    let severity = if text.lines().any(|l| {
        l.trim()
            .replace(' ', "")
            .eq_ignore_ascii_case("--severity:warn")
    }) {
        Severity::Warn
    } else {
        Severity::Error
    };
    Ok(DataTest {
        name: name.to_string(),
        table: reads.first().cloned().unwrap_or_default(),
        reads,
        severity,
        sql,
        freshness: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_each_kind() {
        let tests = parse_tests_toml(
            "t.toml",
            r#"
            [[test]]
            table = "f"
            kind = "unique"
            column = "id"
            severity = "warn"
            [[test]]
            table = "f"
            kind = "relationships"
            column = "m"
            to = "dim"
            field = "mid"
            [[test]]
            table = "f"
            kind = "accepted_values"
            column = "pm"
            values = ["a", "it's", true, 3]
            [[test]]
            table = "f"
            kind = "range"
            column = "lat"
            min = -90
            max = 90
            where = "ok"
            "#,
        )
        .unwrap();
        assert_eq!(tests[0].name, "unique_f_id");
        assert_eq!(tests[0].severity, Severity::Warn);
        assert!(tests[1]
            .sql
            .contains("NOT IN (SELECT parent.\"mid\" FROM \"dim\""));
        assert_eq!(tests[1].reads, vec!["f", "dim"]);
        assert!(tests[2].sql.contains("NOT IN ('a', 'it''s', TRUE, 3)"));
        assert!(tests[3]
            .sql
            .ends_with("WHERE (\"lat\" < -90 OR \"lat\" > 90) AND (ok)"));
    }

    #[test]
    fn reports_what_a_kind_is_missing() {
        let e = parse_tests_toml(
            "t.toml",
            "[[test]]\ntable = \"f\"\nkind = \"range\"\ncolumn = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("test #1 on f") && e.contains("min"), "{e}");
        let e = parse_tests_toml("t.toml", "[[test]]\ntable = \"f\"\nkind = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown kind 'nope'"), "{e}");
        let twice = "[[test]]\ntable = \"f\"\nkind = \"not_null\"\ncolumn = \"a\"\n";
        assert!(parse_tests_toml("t.toml", &format!("{twice}{twice}")).is_err());
    }

    #[test]
    fn singular_tests_read_refs_and_severity() {
        let t = parse_singular(
            "s",
            "-- severity: warn\nSELECT * FROM {{ ref('m') }} WHERE x",
        )
        .unwrap();
        assert_eq!(t.severity, Severity::Warn);
        assert_eq!(t.reads, vec!["m"]);
        assert!(t.sql.ends_with("FROM m WHERE x"));
    }
}
