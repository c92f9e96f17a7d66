//! Zero-copy view of one JSON message: the known fields as untyped scalars.
//!
//! serde drives a streaming parse of the raw bytes straight into this struct:
//! strings without escapes are borrowed from the input, unknown keys and nested
//! values are skipped without allocation. No `serde_json::Value` is built.
//!
//! Skipped values are still checked like the rest of the message (see
//! [`Skip`]): nesting deeper than serde_json's recursion limit and strings that
//! are not UTF-8 quarantine the message wherever they appear.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// One JSON value, reduced to what typing needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    /// The JSON kind, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "boolean",
            Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
            Scalar::Array => "array",
            Scalar::Object => "object",
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(v),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_seq(seq)?;
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        SkipVisitor.visit_map(map)?;
        Ok(Scalar::Object)
    }
}

/// A value that is parsed and dropped: unknown fields and the insides of
/// arrays and objects.
///
/// Unlike [`serde::de::IgnoredAny`], which serde_json skips with a loop that
/// neither limits nesting nor checks that strings are UTF-8, this goes through
/// `deserialize_any`: serde_json's recursion limit (128 levels) applies, so a
/// message nested 100 000 levels deep fails with "recursion limit exceeded"
/// (after a bounded amount of stack) instead of landing, and every string is
/// validated. Strings without escapes are still borrowed, not copied.
struct Skip;

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// The keys of the message contract; anything else is ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    TransactionId,
    TransactionTs,
    CustomerId,
    MerchantId,
    Amount,
    Currency,
    Latitude,
    Longitude,
    DeviceId,
    PaymentMethod,
    IsForeign,
    Other,
}

impl Key {
    /// The key a field name stands for.
    pub(crate) fn of(name: &str) -> Self {
        match name {
            "transaction_id" => Key::TransactionId,
            "transaction_ts" => Key::TransactionTs,
            "customer_id" => Key::CustomerId,
            "merchant_id" => Key::MerchantId,
            "amount" => Key::Amount,
            "currency" => Key::Currency,
            "latitude" => Key::Latitude,
            "longitude" => Key::Longitude,
            "device_id" => Key::DeviceId,
            "payment_method" => Key::PaymentMethod,
            "is_foreign" => Key::IsForeign,
            _ => Key::Other,
        }
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key::of(v))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

/// The contract's fields as they appeared: `None` = absent, `Some(Null)` = null.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RawTransaction<'a> {
    pub transaction_id: Option<Scalar<'a>>,
    pub transaction_ts: Option<Scalar<'a>>,
    pub customer_id: Option<Scalar<'a>>,
    pub merchant_id: Option<Scalar<'a>>,
    pub amount: Option<Scalar<'a>>,
    pub currency: Option<Scalar<'a>>,
    pub latitude: Option<Scalar<'a>>,
    pub longitude: Option<Scalar<'a>>,
    pub device_id: Option<Scalar<'a>>,
    pub payment_method: Option<Scalar<'a>>,
    pub is_foreign: Option<Scalar<'a>>,
}

impl<'a> RawTransaction<'a> {
    /// Where the value of `key` goes; `None` for keys outside the contract.
    pub(crate) fn slot(&mut self, key: Key) -> Option<&mut Option<Scalar<'a>>> {
        Some(match key {
            Key::TransactionId => &mut self.transaction_id,
            Key::TransactionTs => &mut self.transaction_ts,
            Key::CustomerId => &mut self.customer_id,
            Key::MerchantId => &mut self.merchant_id,
            Key::Amount => &mut self.amount,
            Key::Currency => &mut self.currency,
            Key::Latitude => &mut self.latitude,
            Key::Longitude => &mut self.longitude,
            Key::DeviceId => &mut self.device_id,
            Key::PaymentMethod => &mut self.payment_method,
            Key::IsForeign => &mut self.is_foreign,
            Key::Other => return None,
        })
    }
}

struct TransactionVisitor;

impl<'de> Visitor<'de> for TransactionVisitor {
    type Value = RawTransaction<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut t = RawTransaction::default();
        while let Some(key) = map.next_key::<Key>()? {
            match t.slot(key) {
                Some(slot) => *slot = Some(map.next_value()?),
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(t)
    }
}

impl<'de> Deserialize<'de> for RawTransaction<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(TransactionVisitor)
    }
}

/// serde_json's nesting limit (its `remaining_depth`), quoted in reasons.
pub(crate) const MAX_DEPTH: usize = 128;

/// Parses one message; the error is a human-readable reason.
pub(crate) fn parse(payload: &[u8]) -> Result<RawTransaction<'_>, String> {
    serde_json::from_slice::<RawTransaction<'_>>(payload).map_err(|e| {
        // serde_json has no public error code; these two are told apart by
        // their (stable) messages to give a reason naming the actual problem.
        let text = e.to_string();
        if text.starts_with("recursion limit exceeded") {
            return format!(
                "message is nested too deeply (more than {MAX_DEPTH} levels of arrays/objects): {e}"
            );
        }
        if text.starts_with("invalid unicode code point") {
            if let Err(u) = std::str::from_utf8(payload) {
                let at = u.valid_up_to();
                return format!(
                    "message is not valid JSON: not valid UTF-8 (byte 0x{:02X} at offset {at}): {e}",
                    payload[at]
                );
            }
        }
        if e.is_data() {
            format!("message is not a JSON object: {e}")
        } else if e.is_eof() {
            format!("message is not valid JSON (truncated): {e}")
        } else {
            format!("message is not valid JSON: {e}")
        }
    })
}
