//! UUID normalisation to the lake's lower-case canonical form.

use std::borrow::Cow;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Eight bytes of `b` from `at`, the first in the lowest byte.
#[inline]
fn load8(b: &[u8; 36], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Four bytes of `b` from `at`, the first in the lowest byte.
#[inline]
fn load4(b: &[u8; 36], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Per byte of `v`: the high bit set where the byte is a lower-case hex
/// digit (`0-9`, `a-f`). Bytes are compared on their low seven bits, so no
/// sum carries into the next byte; bytes with the high bit set are not
/// ASCII and never match.
#[inline]
fn lower_hex_bits(v: u64) -> u64 {
    let a = v & !HIGH;
    let digit = (a + ONES * (0x80 - 0x30)) & !(a + ONES * (0x80 - 0x3A));
    let letter = (a + ONES * (0x80 - 0x61)) & !(a + ONES * (0x80 - 0x67));
    (digit | letter) & !v & HIGH
}

/// Per byte of `v`: the high bit set where the byte is `-`.
#[inline]
fn hyphen_bits(v: u64) -> u64 {
    let t = v ^ (ONES * u64::from(b'-'));
    // (A byte of `t` is zero exactly when its low seven bits and its high
    // bit are.)
    !((t & !HIGH) + ONES * 0x7F) & !t & HIGH
}

/// Hyphens of the canonical form: bytes 8 and 13 (in the word at 8), 18
/// and 23 (in the word at 16).
const HYPHENS_AT_8: u64 = 0x80 | 0x80 << 40;
const HYPHENS_AT_16: u64 = 0x80 << 16 | 0x80 << 56;

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with lower-case hex digits.
fn is_canonical_lower(s: &str) -> bool {
    <&[u8; 36]>::try_from(s.as_bytes()).is_ok_and(is_canonical_36)
}

/// [`is_canonical_lower`] of 36 bytes.
fn is_canonical_36(b: &[u8; 36]) -> bool {
    // Eight bytes at a time: 0..8, 8..16, 16..24, 24..32 and 28..36.
    let (w8, w16) = (load8(b, 8), load8(b, 16));
    let digits = lower_hex_bits(load8(b, 0))
        & lower_hex_bits(load8(b, 24))
        & lower_hex_bits(load8(b, 28))
        & ((lower_hex_bits(w8) & !HYPHENS_AT_8) | (hyphen_bits(w8) & HYPHENS_AT_8))
        & ((lower_hex_bits(w16) & !HYPHENS_AT_16) | (hyphen_bits(w16) & HYPHENS_AT_16));
    digits == HIGH
}

/// The value of eight lower-case hex digits (the first in the lowest byte
/// of `v`, and the most significant).
#[inline]
fn hex8(v: u64) -> u32 {
    // Each byte's digit value: `0-9` are 0x30-0x39, `a-f` 0x61-0x66 (bit 6 set).
    let n = (v & (ONES * 0x0F)) + ((v >> 6) & ONES) * 9;
    // Pairs of digits into bytes, pairs of bytes into 16 bits, then 32.
    let p = ((n << 4) | (n >> 8)) & 0x00FF_00FF_00FF_00FF;
    let q = ((p << 8) | (p >> 16)) & 0x0000_FFFF_0000_FFFF;
    (((q << 16) | (q >> 32)) & 0xFFFF_FFFF) as u32
}

/// The 128 bits of a UUID in canonical lower-case form, or `None` for any
/// other text: formatting them back gives the same text.
pub(crate) fn canonical_uuid_bits(s: &str) -> Option<u128> {
    let b = <&[u8; 36]>::try_from(s.as_bytes())
        .ok()
        .filter(|b| is_canonical_36(b))?;
    let parts = [
        hex8(load8(b, 0)),
        hex8(load4(b, 9) | load4(b, 14) << 32),
        hex8(load4(b, 19) | load4(b, 24) << 32),
        hex8(load8(b, 28)),
    ];
    Some(
        parts
            .iter()
            .fold(0u128, |acc, &p| (acc << 32) | u128::from(p)),
    )
}

/// Returns the canonical lower-case hyphenated form of a UUID, borrowing when
/// the input already is canonical; `None` when `s` is not a UUID.
///
/// Accepts whatever the `uuid` crate parses: hyphenated in any case, simple
/// (32 hex digits), braced and `urn:uuid:` forms.
pub fn canonical_uuid(s: &str) -> Option<Cow<'_, str>> {
    if is_canonical_lower(s) {
        return Some(Cow::Borrowed(s));
    }
    uuid::Uuid::try_parse(s)
        .ok()
        .map(|u| Cow::Owned(u.hyphenated().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises() {
        let c = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert!(matches!(canonical_uuid(c), Some(Cow::Borrowed(_))));
        assert_eq!(
            canonical_uuid("67E55044-10B1-426F-9247-BB680E5FE0C8").as_deref(),
            Some(c)
        );
        assert_eq!(
            canonical_uuid("67e5504410b1426f9247bb680e5fe0c8").as_deref(),
            Some(c)
        );
        assert_eq!(canonical_uuid("not-a-uuid"), None);
        assert_eq!(canonical_uuid(""), None);
        assert_eq!(canonical_uuid("67e55044-10b1-426f-9247-bb680e5fe0cg"), None);
        assert_eq!(
            canonical_uuid("67e55044-10b1-426f-9247-bb680e5fe0c8 "),
            None
        );
        assert_eq!(
            canonical_uuid("67e55044x10b1-426f-9247-bb680e5fe0c8"),
            None,
            "a separator that is not a hyphen"
        );
    }

    /// Every byte value in every position of a word, beside any neighbour:
    /// the per-byte tests see exactly their own byte.
    #[test]
    fn byte_tests_are_exact_per_byte() {
        for at in 0..8 {
            for c in 0..=255u8 {
                for fill in [b'0', b'-', 0xFF, 0x7F, 0x00] {
                    let mut w = [fill; 8];
                    w[at] = c;
                    let v = u64::from_le_bytes(w);
                    let (hex, hyphen) = (lower_hex_bits(v), hyphen_bits(v));
                    for (k, &byte) in w.iter().enumerate() {
                        let is_hex = byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte);
                        assert_eq!(
                            hex >> (8 * k) & 0xFF,
                            if is_hex { 0x80 } else { 0 },
                            "{w:?}"
                        );
                        assert_eq!(
                            hyphen >> (8 * k) & 0xFF,
                            if byte == b'-' { 0x80 } else { 0 },
                            "{w:?}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        /// The canonical check accepts exactly what the uuid crate parses and
        /// writes back unchanged in lower case.
        #[test]
        fn canonical_check_matches_the_uuid_crate(
            bytes in any::<[u8; 16]>(),
            edits in prop::collection::vec((0usize..37, any::<u8>()), 0..3),
        ) {
            let mut text = uuid::Uuid::from_bytes(bytes).hyphenated().to_string().into_bytes();
            for (at, c) in edits {
                // (Printable ASCII mostly, so that near misses are common.)
                let c = if c < 0x80 { c % 0x60 + 0x20 } else { c };
                if at < text.len() {
                    text[at] = c;
                } else {
                    text.push(c);
                }
            }
            if let Ok(text) = String::from_utf8(text) {
                let want = uuid::Uuid::try_parse(&text).is_ok_and(|u| u.hyphenated().to_string() == text);
                prop_assert_eq!(is_canonical_lower(&text), want, "{}", text);
            }
        }

        /// The bits are the uuid crate's, exactly for the canonical text.
        #[test]
        fn bits_match_the_uuid_crate(bits: u128, at in 0usize..36, c in any::<u8>()) {
            let text = uuid::Uuid::from_u128(bits).hyphenated().to_string();
            prop_assert_eq!(canonical_uuid_bits(&text), Some(bits));
            let mut bytes = text.into_bytes();
            bytes[at] = c;
            if let Ok(changed) = String::from_utf8(bytes) {
                let want = uuid::Uuid::try_parse(&changed)
                    .ok()
                    .filter(|u| u.hyphenated().to_string() == changed)
                    .map(|u| u.as_u128());
                prop_assert_eq!(canonical_uuid_bits(&changed), want);
            }
        }

        #[test]
        fn any_uuid_round_trips(bytes in any::<[u8; 16]>(), upper in any::<bool>()) {
            let u = uuid::Uuid::from_bytes(bytes);
            let text = if upper { u.hyphenated().to_string().to_uppercase() } else { u.hyphenated().to_string() };
            let got = canonical_uuid(&text).map(|c| c.into_owned());
            prop_assert_eq!(got, Some(u.hyphenated().to_string()));
        }
    }
}
