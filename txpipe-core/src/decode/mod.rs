//! Raw message bytes → typed Arrow columns, and a quarantine for the rest.
//!
//! [`TransactionDecoder`] is a push decoder in the style of arrow-json's: push
//! raw payloads, then [`finish`](TransactionDecoder::finish) to get one
//! [`RecordBatch`] of typed transactions (schema
//! [`TRANSACTION_SCHEMA`]) and one of
//! quarantined records (schema [`QUARANTINE_SCHEMA`]).
//!
//! Each payload is parsed straight into Arrow column builders: no
//! `serde_json::Value`, no intermediate tape. The common flat message is read
//! by a one-pass scanner (`scan`); anything else by a streaming, zero-copy
//! serde visitor (`message`), which gives the same fields. Unlike
//! arrow-json's decoder, one bad message never fails the batch: it goes to the
//! quarantine with a reason naming the field, and every pushed message ends up
//! in exactly one of the two outputs.

mod ids;
mod message;
mod scan;
pub mod timestamp;

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Float64Builder,
    Int32Builder, Int64Builder, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder,
};

pub use ids::canonical_uuid;
pub(crate) use ids::canonical_uuid_bits;
use message::{RawTransaction, Scalar};

use crate::error::Result;
use crate::fx::{to_usd_cents, FxTable};
use crate::schema::{
    MAX_MONEY_CENTS, MONEY_PRECISION, MONEY_SCALE, QUARANTINE_SCHEMA, TRANSACTION_SCHEMA,
};

/// The output of one decode: typed rows plus quarantined records.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// Typed transactions ([`TRANSACTION_SCHEMA`]).
    pub transactions: RecordBatch,
    /// Records that could not be typed ([`QUARANTINE_SCHEMA`]).
    pub quarantine: RecordBatch,
}

impl DecodedBatch {
    /// Messages that went in (= typed + quarantined).
    pub fn rows_in(&self) -> usize {
        self.transactions.num_rows() + self.quarantine.num_rows()
    }
}

/// A message's fields after typing and validation, before they go into builders.
struct TypedRow<'a> {
    transaction_id: Cow<'a, str>,
    ts_micros: i64,
    customer_id: Cow<'a, str>,
    merchant_id: Cow<'a, str>,
    amount_cents: i64,
    currency: Cow<'a, str>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    device_id: Option<Cow<'a, str>>,
    payment_method: Option<Cow<'a, str>>,
    is_foreign: bool,
    amount_usd_cents: i64,
}

/// Longest excerpt of a bad value quoted in a quarantine reason.
const MAX_QUOTED: usize = 64;

fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        format!("'{s}'")
    } else {
        let mut end = MAX_QUOTED;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("'{}…'", &s[..end])
    }
}

fn required<'a, 'b>(v: &'b Option<Scalar<'a>>, field: &str) -> Result<&'b Scalar<'a>, String> {
    match v {
        None => Err(format!("missing required field '{field}'")),
        Some(Scalar::Null) => Err(format!("required field '{field}' is null")),
        Some(s) => Ok(s),
    }
}

fn uuid_field<'a>(v: Option<Scalar<'a>>, field: &str) -> Result<Cow<'a, str>, String> {
    required(&v, field)?;
    match v {
        Some(Scalar::Str(s)) => {
            // `None` inside: already canonical, keep the borrowed input.
            let normalised = canonical_uuid(&s).map(|c| match c {
                Cow::Borrowed(_) => None,
                Cow::Owned(o) => Some(o),
            });
            match normalised {
                Some(None) => Ok(s),
                Some(Some(owned)) => Ok(Cow::Owned(owned)),
                None => Err(format!("field '{field}': {} is not a UUID", quote(&s))),
            }
        }
        Some(other) => Err(format!(
            "field '{field}': expected a UUID string, got {}",
            other.kind()
        )),
        None => Err(format!("missing required field '{field}'")),
    }
}

fn string_field<'a>(v: Option<Scalar<'a>>, field: &str) -> Result<Option<Cow<'a, str>>, String> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "field '{field}': expected a string, got {}",
            other.kind()
        )),
    }
}

fn float_field(v: &Option<Scalar<'_>>, field: &str) -> Result<Option<f64>, String> {
    match v {
        None | Some(Scalar::Null) => Ok(None),
        Some(Scalar::Float(f)) => Ok(Some(*f)),
        Some(Scalar::Int(i)) => Ok(Some(*i as f64)),
        Some(Scalar::UInt(u)) => Ok(Some(*u as f64)),
        Some(other) => Err(format!(
            "field '{field}': expected a number, got {}",
            other.kind()
        )),
    }
}

fn timestamp_field(v: &Option<Scalar<'_>>) -> Result<i64, String> {
    const F: &str = "transaction_ts";
    match required(v, F)? {
        Scalar::Str(s) => timestamp::parse_rfc3339_micros(s)
            .ok_or_else(|| format!("field '{F}': {} is not an RFC 3339 timestamp", quote(s))),
        Scalar::Int(ms) => timestamp::millis_to_micros(*ms)
            .ok_or_else(|| format!("field '{F}': epoch milliseconds {ms} out of range")),
        Scalar::UInt(ms) => Err(format!("field '{F}': epoch milliseconds {ms} out of range")),
        Scalar::Float(f) => Err(format!(
            "field '{F}': expected RFC 3339 string or integer epoch milliseconds, got number {f}"
        )),
        other => Err(format!(
            "field '{F}': expected RFC 3339 string or integer epoch milliseconds, got {}",
            other.kind()
        )),
    }
}

fn amount_field(v: &Option<Scalar<'_>>) -> Result<i64, String> {
    const F: &str = "amount";
    let cents = match required(v, F)? {
        Scalar::Int(i) => i.checked_mul(100).map(i128::from),
        Scalar::UInt(u) => Some(i128::from(*u) * 100),
        Scalar::Float(f) => {
            let c = (f * 100.0).round();
            c.is_finite().then_some(c as i128)
        }
        other => {
            return Err(format!(
                "field '{F}': expected a number, got {}",
                other.kind()
            ))
        }
    };
    match cents {
        Some(c) if c.abs() <= MAX_MONEY_CENTS => Ok(c as i64),
        _ => Err(format!("field '{F}': value out of range for Decimal(18,2)")),
    }
}

fn bool_field(v: &Option<Scalar<'_>>, field: &str) -> Result<bool, String> {
    match required(v, field)? {
        Scalar::Bool(b) => Ok(*b),
        other => Err(format!(
            "field '{field}': expected a boolean, got {}",
            other.kind()
        )),
    }
}

fn currency_field<'a>(v: Option<Scalar<'a>>, fx: &FxTable) -> Result<(Cow<'a, str>, f64), String> {
    const F: &str = "currency";
    required(&v, F)?;
    let code = match v {
        Some(Scalar::Str(code)) => code,
        Some(other) => {
            return Err(format!(
                "field '{F}': expected a currency code string, got {}",
                other.kind()
            ))
        }
        None => return Err(format!("missing required field '{F}'")),
    };
    let code = if code.bytes().any(|c| c.is_ascii_lowercase()) || code.trim().len() != code.len() {
        Cow::Owned(code.trim().to_ascii_uppercase())
    } else {
        code
    };
    match fx.rate(&code) {
        Some(rate) => Ok((code, rate)),
        None => Err(format!(
            "field '{F}': no fx rate for currency {}",
            quote(&code)
        )),
    }
}

fn type_row<'a>(raw: RawTransaction<'a>, fx: &FxTable) -> Result<TypedRow<'a>, String> {
    let ts_micros = timestamp_field(&raw.transaction_ts)?;
    let amount_cents = amount_field(&raw.amount)?;
    let latitude = float_field(&raw.latitude, "latitude")?;
    let longitude = float_field(&raw.longitude, "longitude")?;
    let is_foreign = bool_field(&raw.is_foreign, "is_foreign")?;
    let transaction_id = uuid_field(raw.transaction_id, "transaction_id")?;
    let customer_id = uuid_field(raw.customer_id, "customer_id")?;
    let merchant_id = uuid_field(raw.merchant_id, "merchant_id")?;
    let device_id = string_field(raw.device_id, "device_id")?;
    let payment_method = string_field(raw.payment_method, "payment_method")?;
    let (currency, rate) = currency_field(raw.currency, fx)?;
    let amount_usd_cents = to_usd_cents(amount_cents, rate)
        .ok_or_else(|| "field 'amount': USD value out of range for Decimal(18,2)".to_string())?;
    Ok(TypedRow {
        transaction_id,
        ts_micros,
        customer_id,
        merchant_id,
        amount_cents,
        currency,
        latitude,
        longitude,
        device_id,
        payment_method,
        is_foreign,
        amount_usd_cents,
    })
}

/// Column builders of the typed output.
struct TransactionColumns {
    transaction_id: StringBuilder,
    transaction_ts: TimestampMicrosecondBuilder,
    customer_id: StringBuilder,
    merchant_id: StringBuilder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    latitude: Float64Builder,
    longitude: Float64Builder,
    device_id: StringBuilder,
    payment_method: StringBuilder,
    is_foreign: BooleanBuilder,
    amount_usd: Decimal128Builder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
}

impl TransactionColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            transaction_id: StringBuilder::with_capacity(n, n * 36),
            transaction_ts: TimestampMicrosecondBuilder::with_capacity(n),
            customer_id: StringBuilder::with_capacity(n, n * 36),
            merchant_id: StringBuilder::with_capacity(n, n * 36),
            amount: Decimal128Builder::with_capacity(n),
            currency: StringBuilder::with_capacity(n, n * 3),
            latitude: Float64Builder::with_capacity(n),
            longitude: Float64Builder::with_capacity(n),
            device_id: StringBuilder::with_capacity(n, n * 16),
            payment_method: StringBuilder::with_capacity(n, n * 12),
            is_foreign: BooleanBuilder::with_capacity(n),
            amount_usd: Decimal128Builder::with_capacity(n),
            source_partition: Int32Builder::with_capacity(n),
            source_offset: Int64Builder::with_capacity(n),
        }
    }

    fn push(&mut self, r: &TypedRow<'_>, partition: i32, offset: i64) {
        self.transaction_id.append_value(&r.transaction_id);
        self.transaction_ts.append_value(r.ts_micros);
        self.customer_id.append_value(&r.customer_id);
        self.merchant_id.append_value(&r.merchant_id);
        self.amount.append_value(i128::from(r.amount_cents));
        self.currency.append_value(&r.currency);
        self.latitude.append_option(r.latitude);
        self.longitude.append_option(r.longitude);
        self.device_id.append_option(r.device_id.as_deref());
        self.payment_method
            .append_option(r.payment_method.as_deref());
        self.is_foreign.append_value(r.is_foreign);
        self.amount_usd.append_value(i128::from(r.amount_usd_cents));
        self.source_partition.append_value(partition);
        self.source_offset.append_value(offset);
    }

    fn finish(&mut self, source: &str, ingested_at: i64) -> Result<RecordBatch> {
        let n = self.transaction_id.len();
        let money = |b: &mut Decimal128Builder| -> Result<ArrayRef> {
            Ok(Arc::new(
                b.finish()
                    .with_precision_and_scale(MONEY_PRECISION, MONEY_SCALE)?,
            ))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.transaction_id.finish()),
            Arc::new(self.transaction_ts.finish().with_timezone("UTC")),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.merchant_id.finish()),
            money(&mut self.amount)?,
            Arc::new(self.currency.finish()),
            Arc::new(self.latitude.finish()),
            Arc::new(self.longitude.finish()),
            Arc::new(self.device_id.finish()),
            Arc::new(self.payment_method.finish()),
            Arc::new(self.is_foreign.finish()),
            money(&mut self.amount_usd)?,
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                source, n,
            ))),
            Arc::new(self.source_partition.finish()),
            Arc::new(self.source_offset.finish()),
            Arc::new(TimestampMicrosecondArray::from(vec![ingested_at; n]).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(TRANSACTION_SCHEMA.clone(), columns)?)
    }
}

/// Column builders of the quarantine output.
struct QuarantineColumns {
    payload: BinaryBuilder,
    error: StringBuilder,
    source_partition: Int32Builder,
    source_offset: Int64Builder,
}

impl QuarantineColumns {
    fn new() -> Self {
        Self {
            payload: BinaryBuilder::new(),
            error: StringBuilder::new(),
            source_partition: Int32Builder::new(),
            source_offset: Int64Builder::new(),
        }
    }

    fn push(&mut self, payload: &[u8], error: &str, partition: i32, offset: i64) {
        self.payload.append_value(payload);
        self.error.append_value(error);
        self.source_partition.append_value(partition);
        self.source_offset.append_value(offset);
    }

    fn finish(&mut self, source: &str, received_at: i64) -> Result<RecordBatch> {
        let n = self.error.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.payload.finish()),
            Arc::new(self.error.finish()),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                source, n,
            ))),
            Arc::new(self.source_partition.finish()),
            Arc::new(self.source_offset.finish()),
            Arc::new(TimestampMicrosecondArray::from(vec![received_at; n]).with_timezone("UTC")),
        ];
        Ok(RecordBatch::try_new(QUARANTINE_SCHEMA.clone(), columns)?)
    }
}

/// Push decoder from raw JSON payloads to typed transaction batches.
///
/// ```
/// use std::sync::Arc;
/// use txpipe_core::decode::TransactionDecoder;
/// use txpipe_core::fx::FxTable;
///
/// let mut decoder = TransactionDecoder::new(Arc::new(FxTable::defaults()), "example");
/// decoder.push(br#"{"transaction_id":"67e55044-10b1-426f-9247-bb680e5fe0c8",
///   "transaction_ts":"2026-11-20T13:45:12.123Z","customer_id":"9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10",
///   "merchant_id":"0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f","amount":123.45,"currency":"EUR",
///   "latitude":48.85,"longitude":2.35,"device_id":"dev-1","payment_method":"credit_card",
///   "is_foreign":false}"#, 0, 0);
/// decoder.push(b"not json", 0, 1);
/// let out = decoder.finish(0).unwrap();
/// assert_eq!(out.transactions.num_rows(), 1);
/// assert_eq!(out.quarantine.num_rows(), 1);
/// ```
pub struct TransactionDecoder {
    fx: Arc<FxTable>,
    source: Arc<str>,
    capacity: usize,
    rows: TransactionColumns,
    quarantine: QuarantineColumns,
}

impl TransactionDecoder {
    /// Default number of rows the builders are sized for.
    pub const DEFAULT_CAPACITY: usize = 8192;

    /// A decoder converting amounts with `fx` and tagging rows with `source`
    /// (topic or file name) in the lineage columns.
    pub fn new(fx: Arc<FxTable>, source: impl Into<Arc<str>>) -> Self {
        Self::with_capacity(fx, source, Self::DEFAULT_CAPACITY)
    }

    /// Like [`new`](Self::new) with builders pre-sized for `capacity` rows.
    pub fn with_capacity(fx: Arc<FxTable>, source: impl Into<Arc<str>>, capacity: usize) -> Self {
        Self {
            fx,
            source: source.into(),
            capacity,
            rows: TransactionColumns::with_capacity(capacity),
            quarantine: QuarantineColumns::new(),
        }
    }

    /// Decodes one message; it lands in the typed output or in the quarantine.
    ///
    /// `partition` and `offset` are its source position (Kafka partition and
    /// offset, or 0 and the line number for files).
    pub fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        if payload.iter().all(u8::is_ascii_whitespace) {
            let reason = if payload.is_empty() {
                "empty message"
            } else {
                "message is only whitespace"
            };
            self.quarantine.push(payload, reason, partition, offset);
            return;
        }
        let raw = match scan::parse(payload) {
            Some(raw) => Ok(raw),
            None => message::parse(payload),
        };
        let typed = raw.and_then(|raw| type_row(raw, &self.fx));
        match typed {
            Ok(row) => self.rows.push(&row, partition, offset),
            Err(reason) => self.quarantine.push(payload, &reason, partition, offset),
        }
    }

    /// Messages pushed since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows.transaction_id.len() + self.quarantine.error.len()
    }

    /// True when nothing was pushed since the last [`finish`](Self::finish).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the decoded rows and quarantined records, and resets the decoder.
    ///
    /// `now_micros` fills `ingested_at` / `received_at`.
    ///
    /// # Errors
    /// Only if Arrow rejects the assembled columns, which indicates a bug.
    pub fn finish(&mut self, now_micros: i64) -> Result<DecodedBatch> {
        let transactions = self.rows.finish(&self.source, now_micros)?;
        let quarantine = self.quarantine.finish(&self.source, now_micros)?;
        self.rows = TransactionColumns::with_capacity(self.capacity);
        Ok(DecodedBatch {
            transactions,
            quarantine,
        })
    }
}

#[cfg(test)]
mod tests;
