//! The aggregates of the window calls: running totals per key, and one
//! call's value for one row, built into its output column.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::DataType;

use super::value::{Val, ValKind};
use super::PlannedCall;
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

/// Which stored value a min, max or last-value call gives.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pick {
    Min,
    Max,
    Last,
}

impl Pick {
    fn of(func: WindowFunc) -> Self {
        match func {
            WindowFunc::Min => Self::Min,
            WindowFunc::Max => Self::Max,
            _ => Self::Last,
        }
    }

    fn take(self, acc: &mut Acc) -> Option<Val> {
        match self {
            Self::Min => acc.min.take(),
            Self::Max => acc.max.take(),
            Self::Last => acc.last.take(),
        }
    }
}

/// Builds one call's output column. Rows are evaluated key by key, and their
/// values are written in that order, one after the other (writing each at
/// its row's place would scatter the writes over the whole column while the
/// batch holds the state's turn); [`finish`](Self::finish) puts them in row
/// order. Rows never set keep the empty frame's value (count 0, else NULL).
/// The kind of output is chosen once per call, not per value.
pub(super) enum Output {
    /// `count`, `count_equal`.
    Count(Vec<i64>),
    /// `sum` or `avg` (`avg`), of values scaled by `scale`.
    Sum {
        avg: bool,
        scale: f64,
        values: Vec<f64>,
        valid: Vec<bool>,
    },
    /// A number picked from the frame (min, max, last value).
    Float {
        pick: Pick,
        scale: f64,
        values: Vec<f64>,
        valid: Vec<bool>,
    },
    /// A timestamp picked from the frame.
    Time {
        pick: Pick,
        values: Vec<i64>,
        valid: Vec<bool>,
    },
    /// Text picked from the frame, as stored (formatted once by `finish`).
    Text { pick: Pick, values: Vec<Val> },
}

impl Output {
    /// The output of call `pc` for `n` rows (in evaluation order).
    pub(super) fn new(pc: &PlannedCall, n: usize) -> Self {
        let scale = pc.arg_kind.map_or(1.0, ValKind::scale);
        let pick = Pick::of(pc.call.func);
        match (pc.call.func, &pc.output) {
            (WindowFunc::Count | WindowFunc::CountEqual, _) => Self::Count(vec![0; n]),
            (WindowFunc::Sum | WindowFunc::Avg, _) => Self::Sum {
                avg: pc.call.func == WindowFunc::Avg,
                scale,
                values: vec![0.0; n],
                valid: vec![false; n],
            },
            (_, DataType::Timestamp(_, _)) => Self::Time {
                pick,
                values: vec![0; n],
                valid: vec![false; n],
            },
            (_, DataType::Utf8) => Self::Text {
                pick,
                values: vec![Val::Null; n],
            },
            _ => Self::Float {
                pick,
                scale,
                values: vec![0.0; n],
                valid: vec![false; n],
            },
        }
    }

    /// Sets the value of the `at`-th row evaluated from its aggregate (whose
    /// picked value is taken out: the aggregate is cleared before the next
    /// row).
    #[inline]
    pub(super) fn set(&mut self, at: usize, acc: &mut Acc) {
        match self {
            Self::Count(v) => v[at] = acc.count,
            Self::Sum {
                avg,
                scale,
                values,
                valid,
            } => {
                if acc.count == 0 {
                    return;
                }
                // Floats are summed in source order (they were met newest first).
                let sum = if acc.floats.is_empty() {
                    acc.fixed as f64 / *scale
                } else {
                    acc.floats.iter().rev().sum::<f64>()
                };
                values[at] = if *avg { sum / acc.count as f64 } else { sum };
                valid[at] = true;
            }
            Self::Float {
                pick,
                scale,
                values,
                valid,
            } => {
                if let Some(x) = pick.take(acc).and_then(|v| v.as_f64(*scale)) {
                    values[at] = x;
                    valid[at] = true;
                }
            }
            Self::Time {
                pick,
                values,
                valid,
            } => {
                if let Some(Val::Time(x)) = pick.take(acc) {
                    values[at] = x;
                    valid[at] = true;
                }
            }
            Self::Text { pick, values } => {
                if let Some(v) = pick.take(acc) {
                    values[at] = v;
                }
            }
        }
    }

    /// The column of a batch of `n` rows, in row order: the `i`-th value set
    /// belongs to row `rows[i]`; rows not in `rows` get the empty frame's
    /// value.
    pub(super) fn finish(self, rows: &[u32], n: usize) -> ArrayRef {
        match self {
            Self::Count(v) => Arc::new(Int64Array::from(scatter(&v, rows, n, 0))),
            Self::Sum { values, valid, .. } | Self::Float { values, valid, .. } => {
                Arc::new(Float64Array::new(
                    scatter(&values, rows, n, 0.0).into(),
                    nulls(scatter(&valid, rows, n, false)),
                ))
            }
            Self::Time { values, valid, .. } => Arc::new(
                TimestampMicrosecondArray::new(
                    scatter(&values, rows, n, 0).into(),
                    nulls(scatter(&valid, rows, n, false)),
                )
                .with_timezone("UTC"),
            ),
            Self::Text { values, .. } => {
                let mut at = vec![u32::MAX; n];
                for (i, &row) in rows.iter().enumerate() {
                    at[row as usize] = i as u32;
                }
                let mut b = StringBuilder::with_capacity(n, values.len() * 36);
                for &i in &at {
                    let v = values.get(i as usize).unwrap_or(&Val::Null);
                    if v.with_text(|t| b.append_value(t)).is_none() {
                        b.append_null();
                    }
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// `values` put at their rows (`values[i]` at `rows[i]`) in a column of `n`,
/// `empty` elsewhere.
fn scatter<T: Copy>(values: &[T], rows: &[u32], n: usize, empty: T) -> Vec<T> {
    let mut out = vec![empty; n];
    for (&v, &row) in values.iter().zip(rows) {
        out[row as usize] = v;
    }
    out
}

/// A validity buffer, `None` when every value is set.
fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    let nulls = NullBuffer::from(valid);
    (nulls.null_count() > 0).then_some(nulls)
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
