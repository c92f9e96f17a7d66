//! The aggregates of the window calls: running totals per key, and one
//! call's value for one row, built into its output column.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;

use super::value::{Val, ValKind};
use super::PlannedCall;
use crate::error::Result;
use crate::rules::window::WindowFunc;

/// A running total of one call over all of a key's rows.
#[derive(Debug, Clone)]
pub(super) enum Total {
    Count(i64),
    Sum { sum: i128, n: i64 },
    PerValue(Vec<(Val, u32)>),
}

impl Total {
    pub(super) fn new(pc: &PlannedCall) -> Self {
        match pc.call.func {
            WindowFunc::CountEqual => Total::PerValue(Vec::new()),
            WindowFunc::Sum | WindowFunc::Avg => Total::Sum { sum: 0, n: 0 },
            _ => Total::Count(0),
        }
    }

    /// Adds (`sign` 1) or removes (`sign` −1) a row that passes the call's
    /// FILTER, whose argument is `v`.
    pub(super) fn apply(&mut self, v: Option<&Val>, sign: i64) {
        match self {
            Total::Count(n) => {
                if !matches!(v, Some(Val::Null)) {
                    *n += sign;
                }
            }
            Total::Sum { sum, n } => {
                if let Some(Val::Fixed(x)) = v {
                    *sum += i128::from(*x) * i128::from(sign);
                    *n += sign;
                }
            }
            Total::PerValue(counts) => {
                let Some(v) = v.filter(|v| **v != Val::Null) else {
                    return;
                };
                match counts.iter_mut().position(|(k, _)| k == v) {
                    Some(i) => {
                        let c = &mut counts[i].1;
                        *c = c.saturating_add_signed(sign as i32);
                        if *c == 0 {
                            counts.swap_remove(i);
                        }
                    }
                    None if sign > 0 => counts.push((v.clone(), 1)),
                    None => {}
                }
            }
        }
    }
}

/// The aggregate of one call for one row.
#[derive(Debug, Clone, Default)]
pub(super) struct Acc {
    count: i64,
    fixed: i128,
    floats: Vec<f64>,
    min: Option<Val>,
    max: Option<Val>,
    last: Option<Val>,
}

impl Acc {
    pub(super) fn clear(&mut self) {
        self.count = 0;
        self.fixed = 0;
        self.floats.clear();
        self.min = None;
        self.max = None;
        self.last = None;
    }

    /// Starts from a key's running total.
    pub(super) fn start_at_total(
        &mut self,
        pc: &PlannedCall,
        total: Option<&Total>,
        current: &[Val],
    ) {
        match total {
            Some(Total::Count(n)) => self.count = *n,
            Some(Total::Sum { sum, n }) => {
                self.fixed = *sum;
                self.count = *n;
            }
            Some(Total::PerValue(counts)) => {
                if let Some(v) = pc.arg.map(|i| &current[i]).filter(|v| **v != Val::Null) {
                    self.count = counts
                        .iter()
                        .find(|(k, _)| k == v)
                        .map_or(0, |(_, c)| i64::from(*c));
                }
            }
            None => {}
        }
    }

    /// Takes out a row that is outside the frame and passes the call's
    /// FILTER, whose argument is `v` (totals only).
    pub(super) fn remove(&mut self, pc: &PlannedCall, v: Option<&Val>, current: &[Val]) {
        match pc.call.func {
            WindowFunc::Count if !matches!(v, Some(Val::Null)) => self.count -= 1,
            WindowFunc::Count => {}
            WindowFunc::CountEqual => {
                if let (Some(v), Some(i)) = (v, pc.arg) {
                    if *v != Val::Null && *v == current[i] {
                        self.count -= 1;
                    }
                }
            }
            WindowFunc::Sum | WindowFunc::Avg => {
                if let Some(Val::Fixed(x)) = v {
                    self.fixed -= i128::from(*x);
                    self.count -= 1;
                }
            }
            _ => {}
        }
    }

    /// Adds a frame row met scanning back from the newest (direct calls);
    /// false when the call needs no older rows.
    pub(super) fn add(&mut self, pc: &PlannedCall, v: Option<&Val>, current: &[Val]) -> bool {
        match pc.call.func {
            WindowFunc::Count => {
                if !matches!(v, Some(Val::Null)) {
                    self.count += 1;
                }
            }
            WindowFunc::CountEqual => {
                if let (Some(v), Some(i)) = (v, pc.arg) {
                    if *v != Val::Null && *v == current[i] {
                        self.count += 1;
                    }
                }
            }
            WindowFunc::Sum | WindowFunc::Avg => match v {
                Some(Val::Fixed(x)) => {
                    self.fixed += i128::from(*x);
                    self.count += 1;
                }
                Some(Val::Num(x)) => {
                    self.floats.push(*x);
                    self.count += 1;
                }
                _ => {}
            },
            WindowFunc::Min | WindowFunc::Max => {
                let Some(v) = v.filter(|v| **v != Val::Null) else {
                    return true;
                };
                let min = pc.call.func == WindowFunc::Min;
                let slot = if min { &mut self.min } else { &mut self.max };
                let better = match (&*slot, v) {
                    (None, _) => true,
                    (Some(a), b) => {
                        let ord = match (a, b) {
                            (Val::Num(a), Val::Num(b)) => b.partial_cmp(a),
                            (Val::Fixed(a), Val::Fixed(b)) => Some(b.cmp(a)),
                            (Val::Time(a), Val::Time(b)) => Some(b.cmp(a)),
                            (a, b) => a
                                .with_text(str::to_owned)
                                .zip(b.with_text(str::to_owned))
                                .map(|(a, b)| b.cmp(&a)),
                        };
                        ord == Some(if min {
                            std::cmp::Ordering::Less
                        } else {
                            std::cmp::Ordering::Greater
                        })
                    }
                };
                if better {
                    *slot = Some(v.clone());
                }
            }
            WindowFunc::LastValue => {
                // Scanning back: the first frame row met is the most recent.
                if let Some(v) = v {
                    self.last = Some(v.clone());
                }
                return false;
            }
        }
        true
    }
}

/// Builds one call's output column, in the order the rows are evaluated in.
pub(super) enum Output {
    Int(Vec<i64>),
    Float(Vec<Option<f64>>),
    Time(Vec<Option<i64>>),
    /// Text values as stored (formatted once, in row order, by `finish`).
    Text(Vec<Val>),
}

impl Output {
    pub(super) fn new(data_type: &DataType, n: usize) -> Self {
        match data_type {
            DataType::Int64 => Self::Int(Vec::with_capacity(n)),
            DataType::Timestamp(_, _) => Self::Time(Vec::with_capacity(n)),
            DataType::Utf8 => Self::Text(Vec::with_capacity(n)),
            _ => Self::Float(Vec::with_capacity(n)),
        }
    }

    pub(super) fn push(&mut self, pc: &PlannedCall, acc: &Acc) {
        // (Only sums, averages and float outputs of decimals need the scale:
        // not computed for the counts, which are most calls.)
        let scale = || pc.arg_kind.map_or(1.0, ValKind::scale);
        let value: Option<&Val> = match pc.call.func {
            WindowFunc::Count | WindowFunc::CountEqual => {
                if let Self::Int(v) = self {
                    v.push(acc.count);
                }
                return;
            }
            WindowFunc::Sum | WindowFunc::Avg => {
                if let Self::Float(v) = self {
                    // Floats are summed in source order (they were met newest first).
                    let sum = if acc.floats.is_empty() {
                        acc.fixed as f64 / scale()
                    } else {
                        acc.floats.iter().rev().sum::<f64>()
                    };
                    v.push(match (acc.count, pc.call.func) {
                        (0, _) => None,
                        (_, WindowFunc::Sum) => Some(sum),
                        (c, _) => Some(sum / c as f64),
                    });
                }
                return;
            }
            WindowFunc::Min => acc.min.as_ref(),
            WindowFunc::Max => acc.max.as_ref(),
            WindowFunc::LastValue => acc.last.as_ref(),
        };
        match (self, value) {
            (Self::Float(v), Some(x)) => v.push(x.as_f64(scale())),
            (Self::Float(v), None) => v.push(None),
            (Self::Time(v), Some(Val::Time(x))) => v.push(Some(*x)),
            (Self::Time(v), _) => v.push(None),
            (Self::Text(b), v) => b.push(v.cloned().unwrap_or_default()),
            (Self::Int(v), _) => v.push(0),
        }
    }

    /// The column in row order: `back[row]` is the row's place among the
    /// values pushed.
    pub(super) fn finish(self, back: &UInt32Array) -> Result<ArrayRef> {
        let pushed: ArrayRef = match self {
            Self::Int(v) => Arc::new(Int64Array::from(v)),
            Self::Float(v) => Arc::new(Float64Array::from(v)),
            Self::Time(v) => Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")),
            Self::Text(v) => {
                // Text is formatted straight in row order: no second copy of
                // the strings to reorder them.
                let mut b = StringBuilder::with_capacity(back.len(), back.len() * 36);
                for &at in back.values() {
                    let text = v.get(at as usize);
                    if text
                        .and_then(|v| v.with_text(|t| b.append_value(t)))
                        .is_none()
                    {
                        b.append_null();
                    }
                }
                return Ok(Arc::new(b.finish()));
            }
        };
        Ok(take(&pushed, back, None)?)
    }
}

/// The output type of a call with an argument of `kind`.
pub(crate) fn output_type(
    func: WindowFunc,
    kind: Option<ValKind>,
) -> std::result::Result<DataType, String> {
    Ok(match (func, kind) {
        (WindowFunc::Count | WindowFunc::CountEqual, _) => DataType::Int64,
        (WindowFunc::Sum | WindowFunc::Avg, Some(ValKind::Num | ValKind::Fixed(_))) => {
            DataType::Float64
        }
        (WindowFunc::Sum | WindowFunc::Avg, _) => return Err("sum and avg take a number".into()),
        (_, Some(ValKind::Fixed(_))) => DataType::Float64,
        (_, Some(k)) => k.cast_to(),
        (_, None) => return Err("needs an argument".into()),
    })
}
