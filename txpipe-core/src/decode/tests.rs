use super::*;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
};
use proptest::prelude::*;

const TID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";
const CID: &str = "9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10";
const MID: &str = "0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f";

fn decoder() -> TransactionDecoder {
    TransactionDecoder::new(Arc::new(FxTable::defaults()), "test")
}

fn valid() -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "transaction_id": TID, "transaction_ts": "2026-11-20T13:45:12.123Z",
        "customer_id": CID, "merchant_id": MID, "amount": 123.45, "currency": "EUR",
        "latitude": 37.56, "longitude": 126.97, "device_id": "dev-1",
        "payment_method": "credit_card", "is_foreign": false
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn decode_one(payload: &[u8]) -> DecodedBatch {
    let mut d = decoder();
    d.push(payload, 3, 42);
    d.finish(7).unwrap()
}

fn reason_of(payload: &[u8]) -> String {
    let out = decode_one(payload);
    assert_eq!(
        out.transactions.num_rows(),
        0,
        "expected quarantine for {}",
        String::from_utf8_lossy(payload)
    );
    out.quarantine
        .column(1)
        .as_string::<i32>()
        .value(0)
        .to_string()
}

#[test]
fn decodes_a_valid_message_with_types_and_lineage() {
    let out = decode_one(serde_json::to_string(&valid()).unwrap().as_bytes());
    let b = &out.transactions;
    assert_eq!(b.num_rows(), 1);
    assert_eq!(out.quarantine.num_rows(), 0);
    assert_eq!(b.column(0).as_string::<i32>().value(0), TID);
    assert_eq!(
        b.column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_795_182_312_123_000
    );
    assert_eq!(b.column(4).as_primitive::<Decimal128Type>().value(0), 12345);
    // EUR 123.45 at 1.08 = 133.326 → 133.33
    assert_eq!(
        b.column(11).as_primitive::<Decimal128Type>().value(0),
        13333
    );
    assert_eq!(b.column(6).as_primitive::<Float64Type>().value(0), 37.56);
    assert_eq!(b.column(12).as_string::<i32>().value(0), "test");
    assert_eq!(b.column(14).as_primitive::<Int64Type>().value(0), 42);
}

#[test]
fn normalises_offsets_epoch_millis_case_and_missing_optionals() {
    let mut m = valid();
    m.insert(
        "transaction_ts".into(),
        "2026-11-20T22:45:12.123+09:00".into(),
    );
    m.insert("transaction_id".into(), TID.to_uppercase().into());
    m.insert("currency".into(), "usd".into());
    m.remove("latitude");
    m.insert("device_id".into(), serde_json::Value::Null);
    m.insert(
        "extra".into(),
        serde_json::json!({"nested": [1, 2, {"x": null}]}),
    );
    let out = decode_one(serde_json::to_string(&m).unwrap().as_bytes());
    let b = &out.transactions;
    assert_eq!(b.num_rows(), 1, "{:?}", out.quarantine);
    assert_eq!(b.column(0).as_string::<i32>().value(0), TID);
    assert_eq!(
        b.column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_795_182_312_123_000
    );
    assert_eq!(b.column(5).as_string::<i32>().value(0), "USD");
    assert!(b.column(6).is_null(0));
    assert!(b.column(8).is_null(0));

    m.insert("transaction_ts".into(), 1_795_182_312_123_i64.into());
    let out = decode_one(serde_json::to_string(&m).unwrap().as_bytes());
    assert_eq!(
        out.transactions
            .column(1)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_795_182_312_123_000
    );
}

#[test]
fn suspicious_but_typed_values_are_landed() {
    let mut m = valid();
    m.insert("latitude".into(), 200.into());
    m.insert("amount".into(), 1e9.into());
    m.insert("payment_method".into(), "cash".into());
    let out = decode_one(serde_json::to_string(&m).unwrap().as_bytes());
    assert_eq!(out.transactions.num_rows(), 1);
}

#[test]
fn quarantine_reasons_name_the_field() {
    let with = |k: &str, v: serde_json::Value| {
        let mut m = valid();
        m.insert(k.into(), v);
        serde_json::to_vec(&m).unwrap()
    };
    let without = |k: &str| {
        let mut m = valid();
        m.remove(k);
        serde_json::to_vec(&m).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), "not valid JSON"),
        (b"{\"transaction_id\":".to_vec(), "truncated"),
        (b"[1,2,3]".to_vec(), "not a JSON object"),
        (b"".to_vec(), "empty message"),
        (b"   ".to_vec(), "whitespace"),
        (
            without("transaction_id"),
            "missing required field 'transaction_id'",
        ),
        (
            with("amount", serde_json::Value::Null),
            "required field 'amount' is null",
        ),
        (
            with("amount", "12.5".into()),
            "field 'amount': expected a number, got string",
        ),
        (
            with("transaction_ts", "yesterday".into()),
            "field 'transaction_ts': 'yesterday' is not an RFC 3339",
        ),
        (with("transaction_ts", 1.5.into()), "field 'transaction_ts'"),
        (
            with("customer_id", "cust-1".into()),
            "field 'customer_id': 'cust-1' is not a UUID",
        ),
        (
            with("merchant_id", 5.into()),
            "field 'merchant_id': expected a UUID string, got number",
        ),
        (
            with("currency", "XYZ".into()),
            "field 'currency': no fx rate for currency 'XYZ'",
        ),
        (
            with("is_foreign", "yes".into()),
            "field 'is_foreign': expected a boolean, got string",
        ),
        (
            with("latitude", "north".into()),
            "field 'latitude': expected a number, got string",
        ),
        (
            with("device_id", serde_json::json!([1])),
            "field 'device_id': expected a string, got array",
        ),
        (with("amount", 1e30.into()), "out of range"),
    ];
    for (payload, expected) in cases {
        let reason = reason_of(&payload);
        assert!(
            reason.contains(expected),
            "payload {:?}: reason {reason:?} lacks {expected:?}",
            String::from_utf8_lossy(&payload)
        );
    }
    let mut two = serde_json::to_vec(&valid()).unwrap();
    two.extend_from_slice(b" {}");
    assert!(reason_of(&two).contains("trailing"), "{}", reason_of(&two));
}

#[test]
fn quarantine_keeps_payload_and_position() {
    let out = decode_one(b"\x00\xff binary");
    let q = &out.quarantine;
    assert_eq!(q.column(0).as_binary::<i32>().value(0), b"\x00\xff binary");
    assert_eq!(
        q.column(3)
            .as_primitive::<datafusion::arrow::datatypes::Int32Type>()
            .value(0),
        3
    );
    assert_eq!(q.column(4).as_primitive::<Int64Type>().value(0), 42);
}

/// `depth` levels of nesting around `1`: arrays, objects or both in turn.
fn nested(depth: usize, kind: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(depth * 6 + 1);
    for i in 0..depth {
        let array = match kind {
            0 => true,
            1 => false,
            _ => i % 2 == 0,
        };
        v.extend_from_slice(if array { b"[" } else { b"{\"k\":" });
    }
    v.push(b'1');
    for i in (0..depth).rev() {
        let array = match kind {
            0 => true,
            1 => false,
            _ => i % 2 == 0,
        };
        v.push(if array { b']' } else { b'}' });
    }
    v
}

/// A valid message with `raw` (JSON bytes) as the value of field `key`.
fn valid_with_raw(key: &str, raw: &[u8]) -> Vec<u8> {
    let mut m = valid();
    m.remove(key);
    let mut v = serde_json::to_vec(&m).unwrap();
    v.pop(); // '}'
    v.extend_from_slice(format!(",\"{key}\":").as_bytes());
    v.extend_from_slice(raw);
    v.push(b'}');
    v
}

/// Levels of nesting an unknown field of a message may have (the message
/// object itself is one of serde_json's 128 levels, the limit is reached at 128).
const MAX_FIELD_DEPTH: usize = message::MAX_DEPTH - 2;

#[test]
fn deep_nesting_is_quarantined_without_overflowing_the_stack() {
    for kind in 0..3 {
        for depth in [
            1,
            20,
            MAX_FIELD_DEPTH,
            MAX_FIELD_DEPTH + 1,
            1000,
            100_000,
            200_000,
        ] {
            let too_deep = depth > MAX_FIELD_DEPTH;
            // As an unknown field of an otherwise valid message.
            let out = decode_one(&valid_with_raw("extra", &nested(depth, kind)));
            assert_eq!(out.rows_in(), 1);
            assert_eq!(
                out.transactions.num_rows(),
                usize::from(!too_deep),
                "kind {kind} depth {depth}"
            );
            if too_deep {
                let r = out
                    .quarantine
                    .column(1)
                    .as_string::<i32>()
                    .value(0)
                    .to_string();
                assert!(
                    r.contains("nested too deeply"),
                    "kind {kind} depth {depth}: {r}"
                );
            }
            // As the value of a known field: quarantined either way, never landed.
            let r = reason_of(&valid_with_raw("amount", &nested(depth, kind)));
            let want = if too_deep {
                "nested too deeply"
            } else {
                "field 'amount': expected a number"
            };
            assert!(r.contains(want), "kind {kind} depth {depth}: {r}");
        }
    }
    // A whole message nested deeply: an object of objects, or an array.
    let r = reason_of(&nested(100_000, 1));
    assert!(
        r.starts_with("message is nested too deeply (more than 128 levels"),
        "{r}"
    );
    assert!(r.contains("recursion limit exceeded"), "{r}");
    assert!(reason_of(&nested(100_000, 0)).contains("not a JSON object"));
}

#[test]
fn invalid_utf8_anywhere_in_a_message_is_quarantined_with_a_reason() {
    let valid_bytes = serde_json::to_vec(&valid()).unwrap();
    let mut bad_key = b"{\"\xff\xfe\":1,".to_vec();
    bad_key.extend_from_slice(&valid_bytes[1..]);
    let cases: Vec<Vec<u8>> = vec![
        bad_key,
        valid_with_raw("device_id", b"\"dev-\xff\xfe\""),
        valid_with_raw("note", b"\"\xc3\x28\""),
        valid_with_raw("note", b"[1, {\"\xed\xa0\x80\": 2}]"),
        valid_with_raw("note", b"{\"x\": [\"ok\", \"\xf8\"]}"),
    ];
    for payload in cases {
        let r = reason_of(&payload);
        assert!(
            r.contains("not valid UTF-8 (byte 0x"),
            "{:?}: {r}",
            String::from_utf8_lossy(&payload)
        );
    }
    // Valid multi-byte UTF-8 in an unknown field (and an escaped pair) lands.
    let out = decode_one(&valid_with_raw(
        "note",
        "\"café ✓ 😀 \\ud83d\\ude00\"".as_bytes(),
    ));
    assert_eq!(out.transactions.num_rows(), 1, "{:?}", out.quarantine);
}

fn arb_valid_message(
) -> impl Strategy<Value = (serde_json::Map<String, serde_json::Value>, i64, i64)> {
    (
        any::<[u8; 16]>(),
        -2_000_000_000_000i64..4_000_000_000_000,
        -99_999_999_999i64..99_999_999_999,
        prop::option::of(-1000.0f64..1000.0),
        any::<bool>(),
        prop::sample::select(vec!["USD", "EUR", "KRW", "jpy"]),
        any::<bool>(),
    )
        .prop_map(|(id, ms, cents, lat, foreign, cur, as_int)| {
            let mut m = valid();
            m.insert(
                "transaction_id".into(),
                uuid::Uuid::from_bytes(id).to_string().into(),
            );
            let ts: serde_json::Value = if as_int {
                ms.into()
            } else {
                timestamp::format_rfc3339_millis(ms * 1000).into()
            };
            m.insert("transaction_ts".into(), ts);
            m.insert("amount".into(), serde_json::json!(cents as f64 / 100.0));
            m.insert("latitude".into(), lat.into());
            m.insert("is_foreign".into(), foreign.into());
            m.insert("currency".into(), cur.into());
            (m, ms * 1000, cents)
        })
}

proptest! {
    #[test]
    fn valid_messages_round_trip((m, ts_us, cents) in arb_valid_message()) {
        let out = decode_one(&serde_json::to_vec(&m).unwrap());
        prop_assert_eq!(out.transactions.num_rows(), 1, "{:?}", out.quarantine);
        let b = &out.transactions;
        prop_assert_eq!(b.column(1).as_primitive::<TimestampMicrosecondType>().value(0), ts_us);
        prop_assert_eq!(b.column(4).as_primitive::<Decimal128Type>().value(0), i128::from(cents));
    }

    #[test]
    fn any_bytes_are_landed_or_quarantined(msgs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20)) {
        let mut d = decoder();
        for (i, m) in msgs.iter().enumerate() {
            d.push(m, 0, i as i64);
        }
        let out = d.finish(0).unwrap();
        prop_assert_eq!(out.rows_in(), msgs.len());
    }

    #[test]
    fn mutated_messages_are_landed_or_quarantined(
        (m, _, _) in arb_valid_message(),
        cut in 0usize..400,
        key in prop::sample::select(vec!["transaction_id", "transaction_ts", "customer_id", "amount", "currency", "latitude", "is_foreign", "payment_method"]),
        val in prop_oneof![Just(serde_json::Value::Null), any::<i64>().prop_map(serde_json::Value::from), "\\PC{0,20}".prop_map(serde_json::Value::from), any::<bool>().prop_map(serde_json::Value::from)],
    ) {
        let mut mutated = m.clone();
        mutated.insert(key.to_string(), val);
        let full = serde_json::to_vec(&mutated).unwrap();
        let truncated = &full[..cut.min(full.len())];
        let mut d = decoder();
        d.push(&full, 0, 0);
        d.push(truncated, 0, 1);
        let out = d.finish(0).unwrap();
        prop_assert_eq!(out.rows_in(), 2);
        // Every quarantined record carries a non-empty reason.
        let reasons = out.quarantine.column(1).as_string::<i32>();
        for i in 0..reasons.len() {
            prop_assert!(!reasons.value(i).is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any nesting depth up to 200 000, of any shape, at the top or in a known
    /// or unknown field: never a panic or a stack overflow; landed only when the
    /// message is valid and within the limit, else quarantined with a reason.
    #[test]
    fn arbitrary_nesting_depth_never_panics(
        depth in prop_oneof![0usize..300, 0usize..200_001],
        kind in 0u8..3,
        place in 0u8..3,
    ) {
        let inner = nested(depth, kind);
        let payload = match place {
            0 => inner,
            1 => valid_with_raw("extra", &inner),
            _ => valid_with_raw("customer_id", &inner),
        };
        let out = decode_one(&payload);
        prop_assert_eq!(out.rows_in(), 1);
        let landed = out.transactions.num_rows() == 1;
        prop_assert_eq!(landed, place == 1 && depth <= MAX_FIELD_DEPTH);
        if !landed {
            let r = out.quarantine.column(1).as_string::<i32>().value(0).to_string();
            prop_assert!(!r.is_empty());
            // A top-level array (kind 0 and 2 start with one) is not an object.
            let top_level = place == 0 && kind == 1 && depth >= message::MAX_DEPTH;
            if (place != 0 && depth > MAX_FIELD_DEPTH) || top_level {
                prop_assert!(r.contains("nested too deeply"), "{}", r);
            }
        }
    }
}
