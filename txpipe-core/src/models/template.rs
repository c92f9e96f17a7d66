//! The model files' small template language, a dbt-compatible subset:
//! `{{ ref('model') }}`, `{{ config(materialized='view') }}` (lists as in
//! `unique_key=['event_date', 'merchant_id']`) and
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
    for raw in split_args(inner).ok_or_else(bad)? {
        let (key, value) = match raw.split_once('=') {
            Some((k, v)) if !k.contains(['\'', '"', '[']) => (Some(k.trim()), v.trim()),
            _ => (None, raw.as_str()),
        };
        let value = match value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            // A list of strings: kept comma-separated.
            Some(list) => split_args(list)
                .ok_or_else(bad)?
                .iter()
                .map(|item| unquote(item).ok_or_else(bad))
                .collect::<Result<Vec<_>>>()?
                .join(","),
            None => unquote(value).ok_or_else(bad)?,
        };
        args.push(match key {
            Some(k) => format!("{k}={value}"),
            None => value,
        });
    }
    Ok(Piece::Call {
        name: name.to_string(),
        args,
    })
}

/// The text between quotes of `'…'` or `"…"`.
fn unquote(v: &str) -> Option<String> {
    let v = v.trim();
    v.strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
        .map(str::to_string)
}

/// Splits call arguments at the commas outside quotes and brackets
/// (`None` on an unclosed quote or bracket).
fn split_args(inner: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let (mut cur, mut quote, mut depth) = (String::new(), None::<char>, 0i32);
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if quote.is_some() || depth != 0 {
        return None;
    }
    out.push(cur.trim().to_string());
    Some(out.into_iter().filter(|a| !a.is_empty()).collect())
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
    fn reads_dbt_lists_and_commas_inside_quotes() {
        let p = parse(
            "m.sql",
            "{{ config(materialized='incremental', unique_key=['event_date', \"merchant_id\"], partition_by='event_date') }}",
        )
        .unwrap();
        assert_eq!(
            p[1],
            Piece::Call {
                name: "config".into(),
                args: vec![
                    "materialized=incremental".into(),
                    "unique_key=event_date,merchant_id".into(),
                    "partition_by=event_date".into()
                ]
            }
        );
        assert!(parse("m.sql", "{{ config(unique_key=['a', 'b') }}").is_err());
        assert!(parse("m.sql", "{{ ref('a,b') }}").is_ok());
    }

    #[test]
    fn rejects_unclosed_and_malformed_calls() {
        assert!(parse("m.sql", "SELECT {{ ref('a')").is_err());
        assert!(parse("m.sql", "SELECT {{ ref(a) }}").is_err());
        assert!(parse("m.sql", "SELECT {{ 1 + 1 }}").is_err());
    }
}
