//! How the state stores a row's values: numbers exactly, timestamps, and text
//! inline where it can (UUIDs as bits, short ids in place).

use std::sync::Arc;

use crate::decode::canonical_uuid_bits;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Decimal128Array, Float64Array, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Decimal128Type, Float64Type, TimeUnit, TimestampMicrosecondType,
};

/// How a stored value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValKind {
    /// Floating point, as `f64`.
    Num,
    /// Integers and decimals up to 18 digits, exactly, as `i64` × 10^-scale:
    /// sums and averages of money are exact and do not depend on order.
    Fixed(i8),
    /// A timestamp, microseconds since the epoch (UTC).
    Time,
    /// Text.
    Text,
}

impl ValKind {
    pub(crate) fn of(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => Self::Fixed(0),
            DataType::Decimal128(p, s) if *p <= 18 && *s >= 0 => Self::Fixed(*s),
            DataType::UInt64
            | DataType::Float16
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _) => Self::Num,
            DataType::Timestamp(_, _) => Self::Time,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            _ => return None,
        })
    }

    pub(super) fn cast_to(self) -> DataType {
        match self {
            Self::Num => DataType::Float64,
            Self::Fixed(s) => DataType::Decimal128(38, s),
            Self::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Text => DataType::Utf8,
        }
    }

    pub(super) fn scale(self) -> f64 {
        match self {
            Self::Fixed(s) => 10f64.powi(i32::from(s)),
            _ => 1.0,
        }
    }
}

/// One stored value.
#[derive(Debug, Clone, Default)]
pub(super) enum Val {
    #[default]
    Null,
    Num(f64),
    Fixed(i64),
    Time(i64),
    /// Text that is a canonical lower-case UUID, as its two halves.
    Uuid(u64, u64),
    /// Text of at most 22 bytes, inline (a device id).
    Short(u8, [u8; SHORT]),
    /// Other text.
    Text(Arc<str>),
}

/// Longest text kept inline.
const SHORT: usize = 22;

impl PartialEq for Val {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Val::Num(a), Val::Num(b)) => a == b,
            (Val::Fixed(a), Val::Fixed(b)) | (Val::Time(a), Val::Time(b)) => a == b,
            (Val::Uuid(a, b), Val::Uuid(c, d)) => a == c && b == d,
            (Val::Short(n, a), Val::Short(m, b)) => n == m && a == b,
            (Val::Text(a), Val::Text(b)) => a == b,
            (Val::Null, Val::Null) => true,
            _ => false,
        }
    }
}

pub(super) fn text_val(s: &str) -> Val {
    if let Some(u) = canonical_uuid_bits(s) {
        return Val::Uuid((u >> 64) as u64, u as u64);
    }
    if s.len() <= SHORT {
        let mut b = [0u8; SHORT];
        b[..s.len()].copy_from_slice(s.as_bytes());
        return Val::Short(s.len() as u8, b);
    }
    Val::Text(Arc::from(s))
}

impl Val {
    /// Calls `f` with the text of a text value (a UUID is formatted on the stack).
    pub(super) fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> Option<R> {
        match self {
            Val::Uuid(a, b) => {
                let mut buf = [0u8; 36];
                let u = uuid::Uuid::from_u128((u128::from(*a) << 64) | u128::from(*b));
                Some(f(u.hyphenated().encode_lower(&mut buf)))
            }
            Val::Short(n, b) => std::str::from_utf8(&b[..usize::from(*n)]).ok().map(f),
            Val::Text(t) => Some(f(t)),
            _ => None,
        }
    }

    pub(super) fn as_f64(&self, scale: f64) -> Option<f64> {
        match self {
            Val::Num(x) => Some(*x),
            Val::Fixed(x) => Some(*x as f64 / scale),
            _ => None,
        }
    }
}

/// A key of the state: a canonical UUID inline, or other text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Uuid(u128),
    Text(Box<str>),
}

impl Key {
    pub(super) fn of(s: &str) -> Self {
        canonical_uuid_bits(s).map_or_else(|| Key::Text(Box::from(s)), Key::Uuid)
    }
}

/// A batch column the state reads stored values from, downcast once per
/// batch (cast as its [`ValKind`] says).
pub(super) enum Column {
    Num(Float64Array),
    Fixed(Decimal128Array),
    Time(TimestampMicrosecondArray),
    Text(StringArray),
}

impl Column {
    pub(super) fn new(array: &ArrayRef) -> Self {
        match array.data_type() {
            DataType::Float64 => Self::Num(array.as_primitive::<Float64Type>().clone()),
            DataType::Decimal128(_, _) => {
                Self::Fixed(array.as_primitive::<Decimal128Type>().clone())
            }
            DataType::Timestamp(_, _) => {
                Self::Time(array.as_primitive::<TimestampMicrosecondType>().clone())
            }
            _ => Self::Text(array.as_string::<i32>().clone()),
        }
    }

    /// Writes the stored value of each of `rows` into `out[0]`,
    /// `out[stride]`, `out[2 * stride]`, … (left as they are for nulls).
    pub(super) fn fill(&self, rows: impl Iterator<Item = usize>, out: &mut [Val], stride: usize) {
        let slots = rows.zip(out.iter_mut().step_by(stride));
        match self {
            Self::Num(a) => slots
                .filter(|(row, _)| a.is_valid(*row))
                .for_each(|(row, v)| *v = Val::Num(a.value(row))),
            Self::Fixed(a) => slots
                .filter(|(row, _)| a.is_valid(*row))
                .for_each(|(row, v)| {
                    let x = a.value(row);
                    *v = i64::try_from(x).map_or(Val::Num(x as f64), Val::Fixed);
                }),
            Self::Time(a) => slots
                .filter(|(row, _)| a.is_valid(*row))
                .for_each(|(row, v)| *v = Val::Time(a.value(row))),
            Self::Text(a) => slots
                .filter(|(row, _)| a.is_valid(*row))
                .for_each(|(row, v)| *v = text_val(a.value(row))),
        }
    }

    /// The stored value of `row` (the reference `fill` is checked against).
    #[cfg(test)]
    pub(super) fn val(&self, row: usize) -> Val {
        match self {
            Self::Num(a) if a.is_valid(row) => Val::Num(a.value(row)),
            Self::Fixed(a) if a.is_valid(row) => {
                let v = a.value(row);
                i64::try_from(v).map_or(Val::Num(v as f64), Val::Fixed)
            }
            Self::Time(a) if a.is_valid(row) => Val::Time(a.value(row)),
            Self::Text(a) if a.is_valid(row) => text_val(a.value(row)),
            _ => Val::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Filling column by column gives each row's own value, nulls
        /// included, whatever the rows' order and the stride.
        #[test]
        fn fill_equals_one_value_at_a_time(
            cells in prop::collection::vec((any::<Option<i64>>(), any::<Option<u128>>(), any::<bool>()), 1..40),
            order in any::<prop::sample::Index>(),
            stride in 1usize..4,
        ) {
            let fixed: ArrayRef = Arc::new(
                Decimal128Array::from(cells.iter().map(|c| c.0.map(|x| i128::from(x) * if c.2 { 1 } else { 1 << 40 })).collect::<Vec<_>>())
                    .with_precision_and_scale(38, 2).unwrap(),
            );
            let text: ArrayRef = Arc::new(StringArray::from(
                cells.iter().map(|c| c.1.map(|u| if c.2 { uuid::Uuid::from_u128(u).to_string() } else { format!("d{u:x}") })).collect::<Vec<_>>(),
            ));
            let num: ArrayRef = Arc::new(Float64Array::from(cells.iter().map(|c| c.0.map(|x| x as f64 / 3.0)).collect::<Vec<_>>()));
            let time: ArrayRef = Arc::new(TimestampMicrosecondArray::from(cells.iter().map(|c| c.0).collect::<Vec<_>>()));
            let n = cells.len();
            let start = order.index(n);
            let rows: Vec<usize> = (0..n).map(|i| (start + i * 7) % n).collect();
            for array in [fixed, text, num, time] {
                let column = Column::new(&array);
                let mut out = vec![Val::Null; n * stride];
                column.fill(rows.iter().copied(), &mut out, stride);
                for (k, &row) in rows.iter().enumerate() {
                    prop_assert_eq!(&out[k * stride], &column.val(row));
                    for other in &out[k * stride + 1..(k + 1) * stride] {
                        prop_assert_eq!(other, &Val::Null);
                    }
                }
            }
        }

        /// A UUID's canonical text is kept as its bits and formatted back
        /// unchanged; any other text is not taken for a UUID.
        #[test]
        fn uuid_text_round_trips(bits: u128, flip in 0usize..36, other in any::<u8>()) {
            let text = uuid::Uuid::from_u128(bits).hyphenated().to_string();
            prop_assert_eq!(canonical_uuid_bits(&text), Some(bits));
            let v = text_val(&text);
            prop_assert_eq!(v.with_text(str::to_owned), Some(text.clone()));
            let mut bytes = text.clone().into_bytes();
            bytes[flip] = other;
            if let Ok(changed) = String::from_utf8(bytes) {
                let canonical = uuid::Uuid::try_parse(&changed)
                    .is_ok_and(|u| u.hyphenated().to_string() == changed);
                prop_assert_eq!(canonical_uuid_bits(&changed).is_some(), canonical);
                prop_assert_eq!(text_val(&changed).with_text(str::to_owned), Some(changed));
            }
        }
    }
}
