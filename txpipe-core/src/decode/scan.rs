//! A fast path for the common message: one flat JSON object of plain strings,
//! short numbers, booleans and nulls.
//!
//! Producers send the same simple shape millions of times. This scanner reads
//! it in one pass over the bytes, with a table that classifies each byte,
//! instead of going through serde's visitor machinery, and gives exactly what
//! [`message::parse`](super::message::parse) gives for it. Anything it is not
//! sure about — escapes, nested values, exponents, long numbers, `-0`, bad
//! syntax, trailing bytes — makes it return `None`, and the message goes
//! through serde_json as before (which also writes the quarantine reasons).
//! A proptest checks that whenever the scanner answers, serde_json gives the
//! same answer.

use std::borrow::Cow;

use super::message::{Key, RawTransaction, Scalar};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` (little-endian) that is `"`, `\` or below
/// 0x20. Bytes above the lowest hit may be flagged wrongly (a borrow carries
/// up), but the lowest flagged byte is always a real hit, and that is the one
/// used.
fn special(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let slash = w ^ (ONES * u64::from(b'\\'));
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v;
    (zero_byte(quote) | zero_byte(slash) | (w.wrapping_sub(ONES * 0x20) & !w)) & HIGH
}

/// Powers of ten exactly representable as `f64`.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// A contract key as it appears in a message, closing quote included, as
/// two little-endian words and masks: matched by two compares.
struct Literal {
    key: Key,
    /// Bytes matched (the name and its closing quote, at most 16).
    len: usize,
    words: [u64; 2],
    masks: [u64; 2],
}

const fn literal(key: Key, name: &[u8]) -> Literal {
    let mut words = [0u64; 2];
    let mut masks = [0u64; 2];
    let len = name.len() + 1;
    let mut i = 0;
    while i < len {
        let c = if i < name.len() { name[i] } else { b'"' };
        words[i / 8] |= (c as u64) << (8 * (i % 8));
        masks[i / 8] |= 0xFF << (8 * (i % 8));
        i += 1;
    }
    Literal {
        key,
        len,
        words,
        masks,
    }
}

/// The contract's keys in the order producers write them: each key is
/// first tried as the one after the previous key.
const KEYS: [Literal; 11] = [
    literal(Key::TransactionId, b"transaction_id"),
    literal(Key::TransactionTs, b"transaction_ts"),
    literal(Key::CustomerId, b"customer_id"),
    literal(Key::MerchantId, b"merchant_id"),
    literal(Key::Amount, b"amount"),
    literal(Key::Currency, b"currency"),
    literal(Key::Latitude, b"latitude"),
    literal(Key::Longitude, b"longitude"),
    literal(Key::DeviceId, b"device_id"),
    literal(Key::PaymentMethod, b"payment_method"),
    literal(Key::IsForeign, b"is_foreign"),
];

struct Scanner<'a> {
    /// The whole message, checked to be UTF-8 once.
    text: &'a str,
    /// Its bytes.
    b: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        let skipped = self.b[self.at..]
            .iter()
            .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            .unwrap_or(self.b.len() - self.at);
        self.at += skipped;
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    /// Key `KEYS[i]` and its closing quote, if they come next (after the
    /// opening quote): what [`string`](Self::string) and [`Key::of`] would
    /// find, without scanning the name.
    fn literal_key(&mut self, i: usize) -> Option<Key> {
        let lit = KEYS.get(i)?;
        let next = self.b.get(self.at..self.at + 16)?;
        let (lo, hi) = next.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        if word(lo) & lit.masks[0] == lit.words[0] && word(hi) & lit.masks[1] == lit.words[1] {
            self.at += lit.len;
            return Some(lit.key);
        }
        None
    }

    /// A string without escapes or control characters, after its opening
    /// quote.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.at;
        let rest = &self.b[start..];
        // Eight bytes at a time: the first byte that is a quote, a backslash
        // or a control character ends the scan.
        let mut len = 0;
        let mut words = rest.chunks_exact(8);
        let found = loop {
            let Some(word) = words.next() else {
                break words
                    .remainder()
                    .iter()
                    .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                    .map(|i| len + i);
            };
            let w = u64::from_le_bytes(word.try_into().ok()?);
            let hits = special(w);
            if hits != 0 {
                break Some(len + (hits.trailing_zeros() / 8) as usize);
            }
            len += 8;
        };
        let end = start + found?;
        if self.b[end] != b'"' {
            return None;
        }
        self.at = end + 1;
        // (Both ends are ASCII quotes, so this is a char boundary slice.)
        self.text.get(start..end)
    }

    /// A number as serde_json reads it, when its value is sure to be the same:
    /// integers of at most 18 digits (not `-0`), and decimals without an
    /// exponent of at most 15 significant digits (exact: both the digits and
    /// the power of ten are exact `f64`s, and one division rounds correctly,
    /// as serde_json's own result is then).
    fn number(&mut self) -> Option<Scalar<'a>> {
        let neg = self.eat(b'-').is_some();
        let int_start = self.at;
        let mut m: u64 = 0;
        let int_digits = self.digits(&mut m, 18)?;
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let mut frac_digits = 0;
        if self.eat(b'.').is_some() {
            frac_digits = self.digits(&mut m, 15 - int_digits.min(15))?;
            if frac_digits == 0 {
                return None;
            }
        }
        if matches!(self.b.get(self.at), Some(b'e' | b'E')) {
            return None;
        }
        if frac_digits == 0 {
            if neg && m == 0 {
                return None;
            }
            let v = i64::try_from(m).ok()?;
            return Some(Scalar::Int(if neg { -v } else { v }));
        }
        let v = m as f64 / POW10[frac_digits];
        Some(Scalar::Float(if neg { -v } else { v }))
    }

    /// Appends the decimal digits here to `m`; how many there were, or
    /// `None` past `most` of them.
    fn digits(&mut self, m: &mut u64, most: usize) -> Option<usize> {
        let start = self.at;
        while let Some(&c) = self.b.get(self.at) {
            if !c.is_ascii_digit() {
                break;
            }
            *m = *m * 10 + u64::from(c - b'0');
            self.at += 1;
            if self.at - start > most {
                return None;
            }
        }
        Some(self.at - start)
    }

    fn literal(&mut self, word: &[u8], value: Scalar<'a>) -> Option<Scalar<'a>> {
        let end = self.at + word.len();
        (self.b.get(self.at..end) == Some(word)).then(|| {
            self.at = end;
            value
        })
    }

    fn value(&mut self) -> Option<Scalar<'a>> {
        match *self.b.get(self.at)? {
            b'"' => {
                self.at += 1;
                self.string().map(|s| Scalar::Str(Cow::Borrowed(s)))
            }
            b't' => self.literal(b"true", Scalar::Bool(true)),
            b'f' => self.literal(b"false", Scalar::Bool(false)),
            b'n' => self.literal(b"null", Scalar::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }
}

/// The message's fields, when it is a flat object the fast path reads;
/// `None` means "ask serde_json".
pub(super) fn parse(payload: &[u8]) -> Option<RawTransaction<'_>> {
    // One check of the whole message (word at a time over ASCII) instead of
    // one per string.
    let text = std::str::from_utf8(payload).ok()?;
    let mut s = Scanner {
        text,
        b: payload,
        at: 0,
    };
    let mut t = RawTransaction::default();
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_none() {
        // Where the key after the previous one sits in `KEYS`.
        let mut next = 0;
        loop {
            s.eat(b'"')?;
            let key = match s.literal_key(next) {
                Some(key) => {
                    next += 1;
                    key
                }
                None => {
                    let key = Key::of(s.string()?);
                    next = KEYS
                        .iter()
                        .position(|l| l.key == key)
                        .map_or(KEYS.len(), |i| i + 1);
                    key
                }
            };
            s.ws();
            s.eat(b':')?;
            s.ws();
            let value = s.value()?;
            if let Some(slot) = t.slot(key) {
                *slot = Some(value);
            }
            s.ws();
            if s.eat(b',').is_some() {
                s.ws();
                continue;
            }
            s.eat(b'}')?;
            break;
        }
    }
    s.ws();
    (s.at == payload.len()).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn serde(payload: &[u8]) -> Option<RawTransaction<'_>> {
        super::super::message::parse(payload).ok()
    }

    #[test]
    fn reads_the_generators_messages() {
        let line = br#"{"transaction_id":"17f69afb-4aa7-4a95-bc3a-c91be511bf65","transaction_ts":"2026-11-01T00:00:20.985Z","customer_id":"dca6017e-56db-45e9-a2dc-417d835c7523","merchant_id":"22deca7c-5ab7-4a1d-8a5a-2ced276562c5","amount":35539.00,"currency":"GBP","latitude":36.4819,"longitude":-139.1589,"device_id":null,"payment_method":"mobile_wallet","is_foreign":true}"#;
        let fast = parse(line).expect("the common shape takes the fast path");
        assert_eq!(fast, serde(line).unwrap());
        assert_eq!(fast.amount, Some(Scalar::Float(35539.0)));
        assert_eq!(fast.longitude, Some(Scalar::Float(-139.1589)));
        assert_eq!(fast.device_id, Some(Scalar::Null));
        assert_eq!(fast.is_foreign, Some(Scalar::Bool(true)));
        assert_eq!(parse(b" { } \r\n"), Some(RawTransaction::default()));
    }

    proptest! {
        /// The word-at-a-time search finds the same first special byte as a
        /// byte-by-byte one.
        #[test]
        fn special_finds_the_first_hit(bytes in prop::array::uniform8(prop_oneof![
            Just(b'"'), Just(b'\\'), Just(b'!'), Just(b']'), 0u8..0x40, any::<u8>()
        ])) {
            let w = u64::from_le_bytes(bytes);
            let first = bytes.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
            let hits = special(w);
            let got = (hits != 0).then(|| (hits.trailing_zeros() / 8) as usize);
            prop_assert_eq!(got, first);
        }
    }

    #[test]
    fn leaves_the_unusual_to_serde() {
        for m in [
            &br#"{"amount":1e3}"#[..],
            br#"{"amount":-0}"#,
            br#"{"amount":01}"#,
            br#"{"amount":1.}"#,
            br#"{"amount":1234567890123456.5}"#,
            br#"{"device_id":"a\"b"}"#,
            br#"{"x":{"y":1}}"#,
            br#"{"x":[1]}"#,
            br#"{"a":1,}"#,
            br#"{"a":1} x"#,
            b"{\"a\":\"\x01\"}",
            br#"{"a":tru}"#,
            b"[1]",
        ] {
            assert!(parse(m).is_none(), "{}", String::from_utf8_lossy(m));
        }
    }

    /// JSON-ish fragments, valid or not, the grammar below glues together.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"transaction_id\"".to_string()),
            Just("\"transaction_ts\"".to_string()),
            Just("\"customer_id\"".to_string()),
            Just("\"payment_method\"".to_string()),
            // Near misses of the keys read as literals.
            Just("\"transaction_idx\"".to_string()),
            Just("\"transaction_i\"".to_string()),
            Just("\"amount \"".to_string()),
            Just("\"amou\\u006et\"".to_string()),
            Just("\"amount\"".to_string()),
            Just("\"latitude\"".to_string()),
            Just("\"device_id\"".to_string()),
            Just("\"is_foreign\"".to_string()),
            Just("\"other\"".to_string()),
            "\"[a-zé\\\\\"\\x01-]{0,6}\"",
            "-?[0-9]{0,20}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,3})?",
            any::<f64>().prop_map(|f| f.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
            Just("nul".to_string()),
            Just("{}".to_string()),
            Just("[1,\"a\"]".to_string()),
            "[ \t\r\n]{0,2}",
        ]
    }

    proptest! {
        /// Whenever the fast path answers, serde_json gives the same fields
        /// (floats to the bit). (That it does answer on plain objects is
        /// `takes_plain_objects`.)
        #[test]
        fn agrees_with_serde(
            fields in prop::collection::vec((fragment(), fragment()), 0..6),
            seps in prop::collection::vec("[ ,:]{0,2}", 0..14),
            raw in prop::collection::vec(fragment(), 0..8),
        ) {
            // A well-formed object of the fragments, and a jumble of them.
            let object = format!(
                "{{{}}}",
                fields.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(",")
            );
            let mut jumble = String::from("{");
            for (i, f) in raw.iter().enumerate() {
                jumble.push_str(f);
                jumble.push_str(seps.get(i).map_or("", String::as_str));
            }
            jumble.push('}');
            for m in [object, jumble] {
                if let Some(fast) = parse(m.as_bytes()) {
                    let slow = serde(m.as_bytes());
                    prop_assert!(slow.is_some(), "fast path took what serde refuses: {}", m);
                    let slow = slow.unwrap();
                    prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{}", m);
                    // (Debug already prints floats exactly; the bits, to be sure.)
                    for (a, b) in [(&fast.amount, &slow.amount), (&fast.latitude, &slow.latitude)] {
                        if let (Some(Scalar::Float(a)), Some(Scalar::Float(b))) = (a, b) {
                            prop_assert_eq!(a.to_bits(), b.to_bits(), "{}", m);
                        }
                    }
                }
            }
        }

        /// Simple objects of the contract's scalar shapes always take the fast path.
        #[test]
        fn takes_plain_objects(
            amount in -99_999_999_999_999i64..99_999_999_999_999,
            scale in 0u32..6,
            lat in -90.0f64..90.0,
            id in "[0-9a-f-]{36}",
            dev in proptest::option::of("[a-z0-9-]{1,16}"),
        ) {
            let amount = format!("{}", amount as f64 / 10f64.powi(scale as i32));
            let lat = format!("{lat:.4}");
            let dev = dev.map_or("null".to_string(), |d| format!("\"{d}\""));
            let m = format!(
                r#"{{"transaction_id":"{id}","amount":{amount},"latitude":{lat},"device_id":{dev},"is_foreign":false}}"#
            );
            if amount.contains('e') || amount.replace(['-', '.'], "").len() > 15 || amount == "-0" {
                return Ok(());
            }
            let fast = parse(m.as_bytes());
            prop_assert!(fast.is_some(), "{}", m);
            prop_assert_eq!(format!("{:?}", fast.unwrap()), format!("{:?}", serde(m.as_bytes()).unwrap()));
        }
    }
}
