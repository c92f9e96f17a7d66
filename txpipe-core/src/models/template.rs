//! The model files' small template language, a dbt-compatible subset:
//! `{{ ref('model') }}`, `{{ config(materialized='view') }}` and
//! `{{ rule_hits('fraud_reasons') }}`. Anything else inside `{{ }}` is an error.

use crate::error::{Error, Result};

/// One `{{ name(args) }}` call or a piece of plain SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// SQL text between calls.
    Text(String),
    /// A macro call: its name and string arguments (`key=` prefixes kept as
    /// `key=value`).
    Call {
        /// Macro name.
        name: String,
        /// Arguments, unquoted.
        args: Vec<String>,
    },
}

/// Splits a template into text and calls.
///
/// # Errors
/// An unclosed `{{`, or a call that is not `name('arg', key='arg', …)`.
pub fn parse(origin: &str, text: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push(Piece::Text(rest[..start].to_string()));
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::Project(format!("{origin}: '{{{{' without '}}}}'")))?;
        out.push(parse_call(origin, after[..end].trim())?);
        rest = &after[end + 2..];
    }
    out.push(Piece::Text(rest.to_string()));
    Ok(out)
}

fn parse_call(origin: &str, call: &str) -> Result<Piece> {
    let bad = || {
        Error::Project(format!(
            "{origin}: cannot read '{{{{ {call} }}}}' (expected name('arg', ...))"
        ))
    };
    let open = call.find('(').ok_or_else(bad)?;
    if !call.ends_with(')') {
        return Err(bad());
    }
    let name = call[..open].trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad());
    }
    let mut args = Vec::new();
    let inner = &call[open + 1..call.len() - 1];
    for raw in inner.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let (key, value) = match raw.split_once('=') {
            Some((k, v)) => (Some(k.trim()), v.trim()),
            None => (None, raw),
        };
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .ok_or_else(bad)?;
        args.push(match key {
            Some(k) => format!("{k}={unquoted}"),
            None => unquoted.to_string(),
        });
    }
    Ok(Piece::Call {
        name: name.to_string(),
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_text_and_calls() {
        let p = parse(
            "m.sql",
            "{{ config(materialized='view') }}SELECT * FROM {{ ref(\"a\") }} x",
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                Piece::Text(String::new()),
                Piece::Call {
                    name: "config".into(),
                    args: vec!["materialized=view".into()]
                },
                Piece::Text("SELECT * FROM ".into()),
                Piece::Call {
                    name: "ref".into(),
                    args: vec!["a".into()]
                },
                Piece::Text(" x".into()),
            ]
        );
    }

    #[test]
    fn rejects_unclosed_and_malformed_calls() {
        assert!(parse("m.sql", "SELECT {{ ref('a')").is_err());
        assert!(parse("m.sql", "SELECT {{ ref(a) }}").is_err());
        assert!(parse("m.sql", "SELECT {{ 1 + 1 }}").is_err());
    }
}
