//! RFC 3339 timestamps and civil dates, without allocation.
//!
//! `transaction_ts` arrives as RFC 3339 text with any UTC offset, or as an
//! integer of epoch milliseconds. Both become microseconds since the Unix epoch
//! in UTC, which is what the lake's `Timestamp(µs, UTC)` column stores.

/// Microseconds in one day.
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Smallest accepted instant: 0001-01-01T00:00:00Z (keeps `event_date` a 4-digit year).
pub const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// Largest accepted instant: 9999-12-31T23:59:59.999999Z.
pub const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `(year, month, day)` of a day number since 1970-01-01 (Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats a day number as `YYYY-MM-DD` (the hive partition value).
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` into a day number since 1970-01-01.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])? as u32;
    let day = digits(&b[8..10])? as u32;
    valid_date(year, month, day).then(|| days_from_civil(year, month, day))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

fn valid_date(year: i64, month: u32, day: u32) -> bool {
    (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month)
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

/// Parses an RFC 3339 timestamp into microseconds since the epoch, UTC.
///
/// Accepts `T`, `t` or a space between date and time, an optional fraction of
/// 1–9 digits (digits past the microsecond are truncated) and `Z`/`z` or a
/// `±HH:MM` offset. Returns `None` for anything else, including impossible
/// dates such as February 30th.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])? as u32;
    let day = digits(&b[8..10])? as u32;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !valid_date(year, month, day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_micros: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            let n = i - start;
            if n < 6 {
                frac_micros = frac_micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..6 {
            frac_micros *= 10;
        }
    }
    let offset_secs: i64 = match b.get(i..) {
        Some([b'Z' | b'z']) => 0,
        Some([sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]) => {
            let oh = digits(&[*h1, *h2])?;
            let om = digits(&[*m1, *m2])?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let micros = secs * 1_000_000 + frac_micros;
    (MIN_MICROS..=MAX_MICROS)
        .contains(&micros)
        .then_some(micros)
}

/// Converts epoch milliseconds to microseconds, if within the accepted range.
pub fn millis_to_micros(ms: i64) -> Option<i64> {
    ms.checked_mul(1000)
        .filter(|us| (MIN_MICROS..=MAX_MICROS).contains(us))
}

/// The UTC day number (since 1970-01-01) of an instant in microseconds.
pub fn day_of_micros(us: i64) -> i64 {
    us.div_euclid(MICROS_PER_DAY)
}

/// Formats microseconds since the epoch as RFC 3339 with millisecond precision.
pub fn format_rfc3339_millis(us: i64) -> String {
    let days = day_of_micros(us);
    let (y, mo, d) = civil_from_days(days);
    let rem = us - days * MICROS_PER_DAY;
    let ms = rem / 1000;
    let (h, mi, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("1970-01-01T00:00:00.5Z"),
            Some(500_000)
        );
        assert_eq!(parse_rfc3339_micros("1970-01-01T09:00:00+09:00"), Some(0));
        assert_eq!(parse_rfc3339_micros("1969-12-31 19:00:00-05:00"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("2026-11-20T13:45:12.123456789Z"),
            Some(1_795_182_312_123_456)
        );
        assert_eq!(parse_rfc3339_micros("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339_micros("2026-11-20T13:45:12"), None);
        assert_eq!(parse_rfc3339_micros("2026-11-20T13:45:12.Z"), None);
        assert_eq!(parse_rfc3339_micros("yesterday"), None);
    }

    #[test]
    fn formats_dates() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(parse_date("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(
            format_rfc3339_millis(1_795_182_312_123_456),
            "2026-11-20T13:45:12.123Z"
        );
    }

    proptest! {
        #[test]
        fn civil_round_trips(days in -700_000i64..3_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }

        #[test]
        fn agrees_with_chrono(
            secs in -62_000_000_000i64..253_000_000_000,
            nanos in 0u32..1_000_000_000,
            offset_min in -1439i32..1439,
            frac_digits in 0usize..10,
        ) {
            use chrono::{DateTime, FixedOffset, SecondsFormat};
            let utc = DateTime::from_timestamp(secs, nanos).unwrap();
            let off = FixedOffset::east_opt(offset_min * 60).unwrap();
            let local = utc.with_timezone(&off);
            let fmt = match frac_digits {
                0 => SecondsFormat::Secs,
                1..=3 => SecondsFormat::Millis,
                4..=6 => SecondsFormat::Micros,
                _ => SecondsFormat::Nanos,
            };
            let text = local.to_rfc3339_opts(fmt, offset_min == 0);
            let expected = DateTime::parse_from_rfc3339(&text).unwrap();
            let expected_us = expected.timestamp() * 1_000_000 + i64::from(expected.timestamp_subsec_micros());
            prop_assert_eq!(parse_rfc3339_micros(&text), Some(expected_us), "{}", text);
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339_micros(&s);
            let _ = parse_date(&s);
        }
    }
}
