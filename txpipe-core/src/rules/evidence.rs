//! `fraud_evidence`: for each rule that fired on a row, the values that made
//! it fire, as JSON text (`{"rule":{"feature":value,…},…}`).

use std::collections::BTreeMap;

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
                    out.push_str(
                        &serde_json::Number::from_f64(rounded)
                            .map_or("null".into(), |n| n.to_string()),
                    );
                } else if x > 0.0 {
                    out.push_str("\"Infinity\"");
                } else {
                    out.push_str("null");
                }
            }
            d if d.is_integer() || matches!(d, DataType::Decimal128(_, _) | DataType::Boolean) => {
                out.push_str(&f.value(row).to_string())
            }
            _ => push_str(out, &f.value(row).to_string()),
        }
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}
