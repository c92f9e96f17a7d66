//! One transaction as a JSON line, the way producers send it (and, for bad
//! lines, the way they get it wrong).

use super::scenarios::{Txn, HANDBOOK_HIGH_AMOUNT, HIGH_AMOUNT_USD};
use super::{
    push_fixed, push_hex, push_int, push_ts, push_uuid, LineKind, TransactionGenerator, COUNTRIES,
    PAYMENT,
};

impl TransactionGenerator {
    /// Writes `t` as a JSON line (with `defect` if given) and says what it is.
    pub(super) fn write(
        &mut self,
        out: &mut Vec<u8>,
        t: &Txn,
        defect: Option<&'static str>,
    ) -> LineKind {
        let rng = &mut self.rng;
        let c = &self.customers[t.customer];
        let m = &self.merchants[t.merchant];
        let mc = &COUNTRIES[m.country];
        let currency = mc.currency;
        let rate = self.fx.rate(currency).unwrap_or(1.0);
        let mut cents = (t.usd / rate * 100.0).round() as i64;
        if matches!(currency, "JPY" | "KRW") {
            cents = (cents / 100).max(1) * 100;
        }
        let mut pm_roll = rng.below(100) as u32;
        let mut pm = PAYMENT[0].0;
        for (name, w) in PAYMENT {
            if pm_roll < w {
                pm = name;
                break;
            }
            pm_roll -= w;
        }

        out.extend_from_slice(b"{\"transaction_id\":\"");
        self.last_id = rng.uuid();
        if defect == Some("bad_uuid") {
            out.extend_from_slice(b"txn-");
            push_int(out, self.next, 1);
        } else {
            push_uuid(out, &self.last_id);
        }
        out.extend_from_slice(b"\",\"transaction_ts\":\"");
        if defect == Some("bad_timestamp") {
            out.extend_from_slice(b"2026-13-45T99:00:00Z");
        } else {
            push_ts(out, t.ts);
        }
        out.extend_from_slice(b"\",\"customer_id\":\"");
        push_uuid(out, &c.id);
        out.extend_from_slice(b"\",\"merchant_id\":\"");
        push_uuid(out, &m.id);
        out.extend_from_slice(b"\",\"amount\":");
        match defect {
            Some("null_required") => out.extend_from_slice(b"null"),
            Some("wrong_type") => {
                out.push(b'"');
                push_fixed(out, cents, 2);
                out.push(b'"');
            }
            _ => push_fixed(out, cents, 2),
        }
        out.extend_from_slice(b",\"currency\":\"");
        out.extend_from_slice(if defect == Some("unknown_currency") {
            b"XYZ"
        } else {
            currency.as_bytes()
        });
        out.extend_from_slice(b"\",\"latitude\":");
        let (lat_s, lon_s): (Option<i64>, Option<i64>) = if t.invalid_geo {
            match rng.below(3) {
                0 => (Some(2_000_000), Some((t.lon * 1e4).round() as i64)),
                1 => (Some((t.lat * 1e4).round() as i64), Some(-1_900_000)),
                _ => (None, None),
            }
        } else {
            let wrapped_lon = (t.lon + 180.0).rem_euclid(360.0) - 180.0;
            (
                Some((t.lat.clamp(-89.9, 89.9) * 1e4).round() as i64),
                Some((wrapped_lon * 1e4).round() as i64),
            )
        };
        match lat_s {
            Some(v) => push_fixed(out, v, 4),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"longitude\":");
        match lon_s {
            Some(v) => push_fixed(out, v, 4),
            None => out.extend_from_slice(b"null"),
        }
        match t.device {
            Some(device) => {
                out.extend_from_slice(b",\"device_id\":\"dev-");
                push_hex(out, &device.to_be_bytes()[2..]);
                out.extend_from_slice(b"\"");
            }
            None => out.extend_from_slice(b",\"device_id\":null"),
        }
        out.extend_from_slice(b",\"payment_method\":\"");
        out.extend_from_slice(pm.as_bytes());
        out.extend_from_slice(b"\",\"is_foreign\":");
        out.extend_from_slice(if t.foreign { b"true" } else { b"false" });
        out.push(b'}');
        if defect == Some("missing_field") {
            // Drop the transaction_id member: `{"transaction_id":"…",` → `{`.
            if let Some(pos) = out.windows(17).rposition(|w| w == b"{\"transaction_id\"") {
                if let Some(comma) = out[pos..].iter().position(|&b| b == b',') {
                    out.drain(pos + 1..pos + comma + 1);
                }
            }
        }
        // Handbook scenario 1: every transaction above the threshold is fraud.
        let usd = cents as f64 / 100.0 * rate;
        let label = match t.label {
            Some(l) => Some(l),
            None if self.scheduler.enabled() && usd > HIGH_AMOUNT_USD => Some(HANDBOOK_HIGH_AMOUNT),
            None => None,
        };
        LineKind::Valid {
            foreign: t.foreign,
            huge: t.huge,
            invalid_geo: t.invalid_geo,
            fraud: if defect.is_some() { None } else { label },
        }
    }
}
