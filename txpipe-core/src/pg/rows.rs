//! Arrow batches to Postgres text-format `DataRow`s.
//!
//! arrow-pg's encoder, datafusion-postgres' default, downcasts every value,
//! parses the DateStyle and the column's time zone again for every timestamp
//! and formats it through chrono's strftime: three quarters of the server's
//! CPU when a client fetches a large result. [`text_rows`] downcasts each
//! column once per batch and writes the lake's types (text, integers,
//! booleans, decimals, floats, dates, UTC timestamps) straight into one
//! buffer that the rows are split from, byte for byte what arrow-pg writes.
//! Every other value (lists, other time zones, years outside 0–9999, binary
//! results) goes through arrow-pg itself.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, GenericStringArray, PrimitiveArray,
    RecordBatch, StringViewArray,
};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Field, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Int8Type, TimeUnit, TimestampMicrosecondType,
};
use datafusion::execution::SendableRecordBatchStream;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use datafusion_postgres::pgwire::error::{PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::types::format::date_style::DateStyle;
use datafusion_postgres::pgwire::types::format::float_digits::ExtraFloatDigits;
use futures::{Stream, StreamExt};

use super::api;
use crate::decode::timestamp::civil_from_days;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The rows of `batches` in Postgres' text format for `fields` (one per
/// column, as datafusion-postgres describes them); an error in the stream
/// ends the rows with that error.
pub(crate) fn text_rows(
    fields: Arc<Vec<FieldInfo>>,
    batches: SendableRecordBatchStream,
) -> impl Stream<Item = PgWireResult<DataRow>> + Send + 'static {
    batches
        .map(move |batch| {
            let rows = match batch {
                Ok(batch) => match encode_batch(&fields, &batch) {
                    Ok(rows) => rows.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                },
                Err(e) => vec![Err(api(e))],
            };
            futures::stream::iter(rows)
        })
        .flatten()
}

/// One batch as `DataRow`s.
///
/// # Errors
/// A value arrow-pg cannot encode (its error, as the default path gives).
pub(crate) fn encode_batch(
    fields: &Arc<Vec<FieldInfo>>,
    batch: &RecordBatch,
) -> PgWireResult<Vec<DataRow>> {
    let schema = batch.schema();
    let columns: Vec<Column<'_>> = batch
        .columns()
        .iter()
        .zip(schema.fields().iter())
        .zip(fields.iter())
        .map(|((array, field), info)| Column::new(array, field, info))
        .collect();
    let count = i16::try_from(columns.len()).map_err(|_| {
        PgWireError::ApiError(
            format!("{} columns are more than a row can hold", columns.len()).into(),
        )
    })?;
    let mut buf = BytesMut::with_capacity(batch.num_rows() * (columns.len() * 12 + 16));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for column in &columns {
            column.write(row, &mut buf)?;
        }
        rows.push(DataRow::new(buf.split(), count));
    }
    Ok(rows)
}

/// A column downcast once, with how its values are written.
struct Column<'a> {
    array: &'a ArrayRef,
    kind: Kind<'a>,
}

/// How a column's values are written.
enum Kind<'a> {
    Null,
    Bool(&'a BooleanArray),
    I8(&'a PrimitiveArray<Int8Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I64(&'a PrimitiveArray<Int64Type>),
    F32(&'a PrimitiveArray<Float32Type>, ExtraFloatDigits),
    F64(&'a PrimitiveArray<Float64Type>, ExtraFloatDigits),
    /// Within rust_decimal's range (scale ≤ 28, |value| < 2^96), which
    /// arrow-pg goes through; other values take its path and its error.
    Decimal(&'a Decimal128Array, u32, Fallback<'a>),
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
    Utf8View(&'a StringViewArray),
    /// ISO dates.
    Date(&'a PrimitiveArray<Date32Type>, Fallback<'a>),
    /// ISO timestamps in UTC (`+00`), with or without a zone.
    TimestampMicros(
        &'a PrimitiveArray<TimestampMicrosecondType>,
        bool,
        Fallback<'a>,
    ),
    Other(Fallback<'a>),
}

/// What arrow-pg needs to write one value of a column.
struct Fallback<'a> {
    array: &'a ArrayRef,
    field: &'a Field,
    info: Arc<Vec<FieldInfo>>,
}

impl<'a> Column<'a> {
    fn new(array: &'a ArrayRef, field: &'a Field, info: &FieldInfo) -> Self {
        Column {
            array,
            kind: Kind::new(array, field, info),
        }
    }

    fn write(&self, row: usize, buf: &mut BytesMut) -> PgWireResult<()> {
        match &self.kind {
            Kind::Other(fallback) => return fallback.write(row, buf),
            Kind::Null => {
                buf.put_i32(-1);
                return Ok(());
            }
            _ if self.array.is_null(row) => {
                buf.put_i32(-1);
                return Ok(());
            }
            _ => {}
        }
        let at = buf.len();
        buf.put_i32(0);
        match &self.kind {
            Kind::Bool(a) => buf.put_u8(if a.value(row) { b't' } else { b'f' }),
            Kind::I8(a) => put_int(buf, a.value(row)),
            Kind::I16(a) => put_int(buf, a.value(row)),
            Kind::I32(a) => put_int(buf, a.value(row)),
            Kind::I64(a) => put_int(buf, a.value(row)),
            Kind::F32(a, digits) => {
                let v = a.value(row);
                put_float(buf, v, v.is_finite() && v != 0.0, digits, || {
                    digits.format_f32(v)
                });
            }
            Kind::F64(a, digits) => {
                let v = a.value(row);
                put_float(buf, v, v.is_finite() && v != 0.0, digits, || {
                    digits.format_f64(v)
                });
            }
            Kind::Decimal(a, scale, fallback) => {
                let v = a.value(row);
                if v.unsigned_abs() >= 1 << 96 {
                    buf.truncate(at);
                    return fallback.write(row, buf);
                }
                put_decimal(buf, v, *scale);
            }
            Kind::Utf8(a) => buf.put_slice(a.value(row).as_bytes()),
            Kind::LargeUtf8(a) => buf.put_slice(a.value(row).as_bytes()),
            Kind::Utf8View(a) => buf.put_slice(a.value(row).as_bytes()),
            Kind::Date(a, fallback) => {
                if !put_date(buf, i64::from(a.value(row))) {
                    buf.truncate(at);
                    return fallback.write(row, buf);
                }
            }
            Kind::TimestampMicros(a, zoned, fallback) => {
                if !put_timestamp(buf, a.value(row), *zoned) {
                    buf.truncate(at);
                    return fallback.write(row, buf);
                }
            }
            Kind::Null | Kind::Other(_) => {}
        }
        let len = buf.len() - at - 4;
        let len = i32::try_from(len)
            .map_err(|_| PgWireError::ApiError(format!("a value of {len} bytes").into()))?;
        buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

impl<'a> Kind<'a> {
    fn new(array: &'a ArrayRef, field: &'a Field, info: &FieldInfo) -> Self {
        let fallback = Fallback {
            array,
            field,
            info: Arc::new(vec![info.clone()]),
        };
        // Binary results and arrow-pg's special columns (oid aliases, the
        // internal "char", vectors: `pg.*` metadata) keep arrow-pg's encoding.
        let special = field.metadata().keys().any(|k| k.starts_with("pg."));
        if info.format() != FieldFormat::Text || special {
            return Kind::Other(fallback);
        }
        let options = info.format_options();
        let iso = DateStyle::new(&options.date_style).date_format_str() == "%Y-%m-%d";
        let digits = || ExtraFloatDigits(options.extra_float_digits);
        match field.data_type() {
            DataType::Null => Kind::Null,
            DataType::Boolean => Kind::Bool(array.as_boolean()),
            DataType::Int8 => Kind::I8(array.as_primitive()),
            DataType::Int16 => Kind::I16(array.as_primitive()),
            DataType::Int32 => Kind::I32(array.as_primitive()),
            DataType::Int64 => Kind::I64(array.as_primitive()),
            DataType::Float32 => Kind::F32(array.as_primitive(), digits()),
            DataType::Float64 => Kind::F64(array.as_primitive(), digits()),
            DataType::Decimal128(_, scale) if (0..=28).contains(scale) => Kind::Decimal(
                array.as_primitive(),
                u32::from(scale.unsigned_abs()),
                fallback,
            ),
            DataType::Utf8 => Kind::Utf8(array.as_string()),
            DataType::LargeUtf8 => Kind::LargeUtf8(array.as_string()),
            DataType::Utf8View => Kind::Utf8View(array.as_string_view()),
            DataType::Date32 if iso => Kind::Date(array.as_primitive(), fallback),
            DataType::Timestamp(TimeUnit::Microsecond, zone) if iso => match zone.as_deref() {
                None => Kind::TimestampMicros(array.as_primitive(), false, fallback),
                Some("UTC" | "+00:00") => {
                    Kind::TimestampMicros(array.as_primitive(), true, fallback)
                }
                Some(_) => Kind::Other(fallback),
            },
            _ => Kind::Other(fallback),
        }
    }
}

impl Fallback<'_> {
    /// One value through arrow-pg, length prefix included.
    fn write(&self, row: usize, buf: &mut BytesMut) -> PgWireResult<()> {
        let mut encoder = DataRowEncoder::new(Arc::clone(&self.info));
        encode_value(&mut encoder, self.array, row, self.field, &self.info[0])?;
        buf.put_slice(&encoder.take_row().data);
        Ok(())
    }
}

/// A float as pgwire writes it: ryu's shortest round-trip text when
/// `extra_float_digits` ≥ 1 (the default) and the value is finite and not
/// zero (`plain`), called here directly; otherwise pgwire's own text (`pg`).
fn put_float<F: ryu::Float, S: AsRef<str>>(
    buf: &mut BytesMut,
    v: F,
    plain: bool,
    digits: &ExtraFloatDigits,
    pg: impl FnOnce() -> S,
) {
    if digits.0 >= 1 && plain {
        buf.put_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else {
        buf.put_slice(pg().as_ref().as_bytes());
    }
}

fn put_int(buf: &mut BytesMut, v: impl itoa::Integer) {
    buf.put_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `unscaled × 10^-scale` with exactly `scale` decimals, as rust_decimal
/// (and so arrow-pg) writes it: `12.50`, `-0.05`, `7`.
fn put_decimal(buf: &mut BytesMut, unscaled: i128, scale: u32) {
    if unscaled < 0 {
        buf.put_u8(b'-');
    }
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(unscaled.unsigned_abs()).as_bytes();
    let scale = scale as usize;
    if scale == 0 {
        buf.put_slice(digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        buf.put_slice(int);
        buf.put_u8(b'.');
        buf.put_slice(frac);
    } else {
        buf.put_slice(b"0.");
        buf.put_bytes(b'0', scale - digits.len());
        buf.put_slice(digits);
    }
}

/// `YYYY-MM-DD` for days since 1970-01-01; false (nothing written) for a
/// year outside 0–9999, which chrono writes with a sign.
fn put_date(buf: &mut BytesMut, days: i64) -> bool {
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return false;
    }
    put_digits(buf, y as u32, 4);
    buf.put_u8(b'-');
    put_digits(buf, m, 2);
    buf.put_u8(b'-');
    put_digits(buf, d, 2);
    true
}

/// `YYYY-MM-DD HH:MM:SS.ffffff`, then `+00` when the column has a zone (the
/// format pgwire gives `timestamptz` in DateStyle ISO); false for a year
/// outside 0–9999.
fn put_timestamp(buf: &mut BytesMut, micros: i64, zoned: bool) -> bool {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let in_day = micros.rem_euclid(MICROS_PER_DAY);
    if !put_date(buf, days) {
        return false;
    }
    let secs = in_day / 1_000_000;
    buf.put_u8(b' ');
    put_digits(buf, (secs / 3600) as u32, 2);
    buf.put_u8(b':');
    put_digits(buf, (secs / 60 % 60) as u32, 2);
    buf.put_u8(b':');
    put_digits(buf, (secs % 60) as u32, 2);
    buf.put_u8(b'.');
    put_digits(buf, (in_day % 1_000_000) as u32, 6);
    if zoned {
        buf.put_slice(b"+00");
    }
    true
}

/// `v` zero-padded to `width` digits (`v` < 10^width).
fn put_digits(buf: &mut BytesMut, mut v: u32, width: usize) {
    let mut out = [b'0'; 10];
    for slot in out[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.put_slice(&out[..width]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Date32Array, Float32Array, Float64Array, Int32Array, Int64Array, ListBuilder,
        StringArray, StringBuilder, TimestampMicrosecondArray,
    };
    use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
    use datafusion_postgres::pgwire::api::portal::Format;
    use datafusion_postgres::pgwire::types::format::FormatOptions;
    use proptest::prelude::*;

    /// Our rows and arrow-pg's rows for `batch`, as bytes per row.
    fn both(batch: &RecordBatch) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        both_with(batch, None)
    }

    /// [`both`] for a client with these format settings.
    fn both_with(
        batch: &RecordBatch,
        options: Option<FormatOptions>,
    ) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let fields = Arc::new(
            arrow_schema_to_pg_fields(
                batch.schema().as_ref(),
                &Format::UnifiedText,
                options.map(Arc::new),
            )
            .expect("pg fields"),
        );
        let ours = encode_batch(&fields, batch)
            .expect("encodes")
            .into_iter()
            .map(|r| {
                assert_eq!(r.field_count as usize, batch.num_columns());
                r.data.to_vec()
            })
            .collect();
        let theirs = encode_recordbatch(Arc::clone(&fields), batch.clone())
            .map(|r| r.expect("arrow-pg encodes").data.to_vec())
            .collect();
        (ours, theirs)
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("batch")
    }

    #[test]
    fn the_lakes_types_are_written_as_arrow_pg_writes_them() {
        let mut reasons = ListBuilder::new(StringBuilder::new());
        for row in [vec![Some("foreign")], vec![], vec![Some("a b"), None]] {
            for r in row {
                reasons.values().append_option(r);
            }
            reasons.append(true);
        }
        let micros = [
            Some(1_764_806_400_123_456_i64),
            None,
            Some(-1), // 1969-12-31 23:59:59.999999
        ];
        let b = batch(vec![
            (
                "id",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("ü ,{}")])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(i64::MIN), Some(0), None])) as ArrayRef,
            ),
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(-7), None, Some(i32::MAX)])) as ArrayRef,
            ),
            (
                "ok",
                Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])) as ArrayRef,
            ),
            (
                "usd",
                Arc::new(
                    Decimal128Array::from(vec![Some(1250_i128), Some(-5), None])
                        .with_precision_and_scale(18, 2)
                        .expect("decimal"),
                ) as ArrayRef,
            ),
            (
                "whole",
                Arc::new(
                    Decimal128Array::from(vec![Some(-42_i128), Some(0), Some(7)])
                        .with_precision_and_scale(10, 0)
                        .expect("decimal"),
                ) as ArrayRef,
            ),
            (
                "score",
                Arc::new(Float64Array::from(vec![
                    Some(0.1 + 0.2),
                    Some(f64::NAN),
                    Some(-1e300),
                ])) as ArrayRef,
            ),
            (
                "day",
                Arc::new(Date32Array::from(vec![
                    Some(20_426),
                    Some(-1),
                    Some(2_932_897),
                ])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC"))
                    as ArrayRef,
            ),
            (
                "local",
                Arc::new(TimestampMicrosecondArray::from(micros.to_vec())) as ArrayRef,
            ),
            (
                "paris",
                Arc::new(
                    TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("Europe/Paris"),
                ) as ArrayRef,
            ),
            ("reasons", Arc::new(reasons.finish()) as ArrayRef),
        ]);
        let (ours, theirs) = both(&b);
        assert_eq!(ours, theirs);
        // Clients' other DateStyles and float digits go arrow-pg's way too.
        for (style, digits) in [("German", 0), ("SQL, DMY", 1), ("Postgres, MDY", -3)] {
            let mut options = FormatOptions::default();
            options.date_style = style.to_string();
            options.extra_float_digits = digits;
            let (o, t) = both_with(&b, Some(options));
            assert_eq!(o, t, "{style}");
            assert_ne!(o, ours, "{style} changes the text");
        }
        // And what that is, for one value of each kind: length-prefixed text.
        let first = String::from_utf8_lossy(&ours[0]).to_string();
        for text in [
            "12.50",
            "2025-12-04 00:00:00.123456+00",
            "-9223372036854775808",
        ] {
            assert!(first.contains(text), "{first:?} lacks {text}");
        }
        assert!(String::from_utf8_lossy(&ours[1]).contains("-0.05"));
    }

    #[test]
    fn decimals_beyond_rust_decimal_fail_as_in_arrow_pg() {
        for (value, scale) in [(10_i128.pow(30), 0), (5, 30)] {
            let b = batch(vec![(
                "d",
                Arc::new(
                    Decimal128Array::from(vec![Some(value)])
                        .with_precision_and_scale(38, scale)
                        .expect("decimal"),
                ) as ArrayRef,
            )]);
            let fields = Arc::new(
                arrow_schema_to_pg_fields(b.schema().as_ref(), &Format::UnifiedText, None)
                    .expect("pg fields"),
            );
            let ours = encode_batch(&fields, &b)
                .map(|_| ())
                .map_err(|e| e.to_string());
            let theirs: Result<Vec<DataRow>, _> = encode_recordbatch(fields, b).collect();
            let theirs = theirs.map(|_| ()).map_err(|e| e.to_string());
            assert!(ours.is_err(), "{value} scale {scale}: {ours:?}");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn an_empty_batch_gives_no_rows() {
        let b = batch(vec![(
            "n",
            Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef,
        )]);
        let (ours, theirs) = both(&b);
        assert!(ours.is_empty() && theirs.is_empty());
    }

    proptest! {
        /// Decimals, dates and timestamps across their whole range (years
        /// before 0 and after 9999 included) match arrow-pg byte for byte.
        #[test]
        fn values_match_arrow_pg(
            rows in proptest::collection::vec(
                (
                    proptest::option::of(-10_i128.pow(18)..10_i128.pow(18)),
                    -800_000_i32..3_000_000,
                    -80_000_000_000_000_000_i64..300_000_000_000_000_000,
                    any::<f64>(),
                    any::<f32>(),
                ),
                1..40,
            ),
            scale in 0_i8..8,
        ) {
            let decimals: Vec<Option<i128>> = rows.iter().map(|r| r.0).collect();
            let days: Vec<i32> = rows.iter().map(|r| r.1).collect();
            let micros: Vec<i64> = rows.iter().map(|r| r.2).collect();
            let floats: Vec<f64> = rows.iter().map(|r| r.3).collect();
            let singles: Vec<f32> = rows.iter().map(|r| r.4).collect();
            let b = batch(vec![
                (
                    "d",
                    Arc::new(
                        Decimal128Array::from(decimals)
                            .with_precision_and_scale(38, scale)
                            .expect("decimal"),
                    ) as ArrayRef,
                ),
                ("day", Arc::new(Date32Array::from(days)) as ArrayRef),
                (
                    "ts",
                    Arc::new(TimestampMicrosecondArray::from(micros.clone()).with_timezone("UTC"))
                        as ArrayRef,
                ),
                ("naive", Arc::new(TimestampMicrosecondArray::from(micros)) as ArrayRef),
                ("f", Arc::new(Float64Array::from(floats)) as ArrayRef),
                ("f32", Arc::new(Float32Array::from(singles)) as ArrayRef),
            ]);
            let (ours, theirs) = both(&b);
            prop_assert_eq!(ours, theirs);
        }
    }
}
