//! `fraud_evidence`: for each rule that fired on a row, the values that made
//! it fire, as JSON text (`{"rule":{"feature":value,…},…}`).

use std::collections::BTreeMap;
use std::fmt::Write;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::Result;

const FORMATS: FormatOptions<'static> = FormatOptions::new().with_null("null");

/// Formats the evidence columns of one evaluated batch.
pub(super) struct Evidence<'a> {
    batch: &'a RecordBatch,
    formatters: BTreeMap<usize, ArrayFormatter<'a>>,
}

impl<'a> Evidence<'a> {
    /// Prepares the columns `columns` of `batch` (the rules' evidence).
    pub(super) fn new(
        batch: &'a RecordBatch,
        columns: impl Iterator<Item = usize>,
    ) -> Result<Self> {
        let mut formatters = BTreeMap::new();
        for i in columns {
            if let std::collections::btree_map::Entry::Vacant(e) = formatters.entry(i) {
                e.insert(ArrayFormatter::try_new(batch.column(i).as_ref(), &FORMATS)?);
            }
        }
        Ok(Self { batch, formatters })
    }

    /// Appends `"rule":{"label":value,…}` for `row` to `json`, opening the
    /// object with `{` or continuing it with `,`.
    pub(super) fn push_rule(
        &self,
        json: &mut String,
        rule: &str,
        refs: &[(String, usize)],
        row: usize,
    ) {
        json.push_str(if json.is_empty() { "{" } else { "," });
        push_str(json, rule);
        json.push_str(":{");
        for (k, (label, i)) in refs.iter().enumerate() {
            if k > 0 {
                json.push(',');
            }
            push_str(json, label);
            json.push(':');
            self.push_value(json, *i, row);
        }
        json.push('}');
    }

    /// One value: numbers and booleans as JSON, the rest as strings.
    fn push_value(&self, out: &mut String, column: usize, row: usize) {
        let array = self.batch.column(column);
        let Some(f) = self.formatters.get(&column) else {
            out.push_str("null");
            return;
        };
        if array.is_null(row) {
            out.push_str("null");
            return;
        }
        match array.data_type() {
            DataType::Float64 | DataType::Float32 => {
                let x = match array.data_type() {
                    DataType::Float64 => array.as_primitive::<Float64Type>().value(row),
                    _ => f.value(row).to_string().parse().unwrap_or(f64::NAN),
                };
                if x.is_finite() {
                    let rounded = (x * 100.0).round() / 100.0;
                    match serde_json::Number::from_f64(rounded) {
                        Some(n) => {
                            let _ = write!(out, "{n}");
                        }
                        None => out.push_str("null"),
                    }
                } else if x > 0.0 {
                    out.push_str("\"Infinity\"");
                } else {
                    out.push_str("null");
                }
            }
            d if d.is_integer() || matches!(d, DataType::Decimal128(_, _) | DataType::Boolean) => {
                let _ = write!(out, "{}", f.value(row));
            }
            DataType::Utf8 => push_str(out, array.as_string::<i32>().value(row)),
            _ => push_str(out, &f.value(row).to_string()),
        }
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, c) in s.bytes().enumerate() {
        let escape = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{c:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// Strings are written exactly as serde_json writes them.
        #[test]
        fn strings_escape_like_serde_json(s in "(\\PC|[\\x00-\\x1f\"\\\\\\x7f])*") {
            let mut out = String::new();
            super::push_str(&mut out, &s);
            prop_assert_eq!(out, serde_json::Value::String(s.clone()).to_string());
        }
    }
}
