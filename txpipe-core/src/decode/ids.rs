//! UUID normalisation to the lake's lower-case canonical form.

use std::borrow::Cow;

/// Lower-case hex digits' values; 0xFF for every other byte.
pub(crate) const LOWER_HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// True for `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with lower-case hex digits.
fn is_canonical_lower(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return false;
    }
    // Without a branch per byte: the digits' values are or-ed together, and
    // any non-digit sets the high bit.
    [&b[0..8], &b[9..13], &b[14..18], &b[19..23], &b[24..36]]
        .iter()
        .flat_map(|part| part.iter())
        .fold(0u8, |bad, &c| bad | LOWER_HEX[usize::from(c)])
        & 0x80
        == 0
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

        #[test]
        fn any_uuid_round_trips(bytes in any::<[u8; 16]>(), upper in any::<bool>()) {
            let u = uuid::Uuid::from_bytes(bytes);
            let text = if upper { u.hyphenated().to_string().to_uppercase() } else { u.hyphenated().to_string() };
            let got = canonical_uuid(&text).map(|c| c.into_owned());
            prop_assert_eq!(got, Some(u.hyphenated().to_string()));
        }
    }
}
