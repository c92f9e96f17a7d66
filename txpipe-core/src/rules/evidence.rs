//! `fraud_evidence`: for each rule that fired on a row, the values that made
//! it fire, as JSON text (`{"rule":{"feature":value,…},…}`).

use std::collections::BTreeMap;
use std::fmt::Write;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
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
            DataType::Boolean => {
                let b = array.as_boolean().value(row);
                out.push_str(if b { "true" } else { "false" });
            }
            DataType::Int64 => {
                let mut buf = itoa::Buffer::new();
                out.push_str(buf.format(array.as_primitive::<Int64Type>().value(row)));
            }
            d if d.is_integer() || matches!(d, DataType::Decimal128(_, _)) => {
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
    // (Names and ids need no escape: one pass to tell, then one copy.)
    if !s.bytes().any(|c| c < 0x20 || c == b'"' || c == b'\\') {
        out.push_str(s);
        out.push('"');
        return;
    }
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
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, BooleanArray, Decimal128Array, Float64Array, Int64Array, StringArray,
        TimestampMicrosecondArray,
    };
    use proptest::prelude::*;

    use super::*;

    /// Each kind of value in its JSON form, NULLs as `null`.
    #[test]
    fn values_in_json_form() {
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "b",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(7), Some(-12), None])),
            ),
            (
                "d",
                Arc::new(
                    Decimal128Array::from(vec![Some(6452), Some(-5), None])
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
            ),
            (
                "f",
                Arc::new(Float64Array::from(vec![
                    Some(4310.456),
                    Some(f64::INFINITY),
                    None,
                ])),
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a\"b"), Some(""), None])),
            ),
            (
                "t",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_000_000), Some(0), None])
                        .with_timezone("UTC"),
                ),
            ),
        ];
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let refs: Vec<(String, usize)> = ["b", "n", "d", "f", "s", "t"]
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), i))
            .collect();
        let ev = Evidence::new(&batch, 0..6).unwrap();
        let row = |r| {
            let mut json = String::new();
            ev.push_rule(&mut json, "rule", &refs, r);
            json
        };
        assert_eq!(
            row(0),
            r#"{"rule":{"b":true,"n":7,"d":64.52,"f":4310.46,"s":"a\"b","t":"1970-01-01T00:00:01Z"}"#
        );
        assert_eq!(
            row(1),
            r#"{"rule":{"b":false,"n":-12,"d":-0.05,"f":"Infinity","s":"","t":"1970-01-01T00:00:00Z"}"#
        );
        assert_eq!(
            row(2),
            r#"{"rule":{"b":null,"n":null,"d":null,"f":null,"s":null,"t":null}"#
        );
    }

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
