//! Currency conversion to USD: the `fx_rate` dimension in memory.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::schema::MAX_MONEY_CENTS;

/// The default rates shipped in `data/fx_rates.csv`, built into the binary.
pub const DEFAULT_FX_CSV: &str = include_str!("../../data/fx_rates.csv");

/// USD rate per currency code (USD per one unit of the currency).
#[derive(Debug, Clone, PartialEq)]
pub struct FxTable {
    /// Sorted by code.
    rates: Vec<(String, f64)>,
    /// The codes of at most 7 bytes (all ISO codes) packed into one integer
    /// each, sorted: a lookup per row is a binary search over integers, a
    /// fraction of hashing the code or comparing strings.
    packed: Vec<(u64, f64)>,
}

/// `code` as one integer (its bytes, then its length), if at most 7 bytes.
fn pack(code: &str) -> Option<u64> {
    let b = code.as_bytes();
    if b.len() > 7 {
        return None;
    }
    let mut word = [0u8; 8];
    word[..b.len()].copy_from_slice(b);
    word[7] = b.len() as u8;
    Some(u64::from_be_bytes(word))
}

impl FxTable {
    /// Builds a table from `(currency, usd_rate)` pairs; codes are upper-cased.
    ///
    /// # Errors
    /// A rate that is not a finite positive number.
    pub fn try_new<I, S>(pairs: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, f64)>,
        S: AsRef<str>,
    {
        let mut rates = BTreeMap::new();
        for (code, rate) in pairs {
            let code = code.as_ref().trim().to_ascii_uppercase();
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Error::Config(format!(
                    "fx rate for {code} must be a positive number, got {rate}"
                )));
            }
            rates.insert(code, rate);
        }
        Ok(Self::from_sorted(rates.into_iter().collect()))
    }

    fn from_sorted(rates: Vec<(String, f64)>) -> Self {
        let mut packed: Vec<(u64, f64)> = rates
            .iter()
            .filter_map(|(code, rate)| pack(code).map(|k| (k, *rate)))
            .collect();
        packed.sort_unstable_by_key(|p| p.0);
        Self { rates, packed }
    }

    /// The built-in default rates (`data/fx_rates.csv`).
    pub fn defaults() -> Self {
        // The embedded file is part of the build and covered by a unit test.
        Self::from_csv("fx_rates.csv", DEFAULT_FX_CSV)
            .unwrap_or_else(|_| Self::from_sorted(Vec::new()))
    }

    /// Parses `currency,usd_rate` CSV text (header required).
    ///
    /// # Errors
    /// A missing header, a short line or a rate that is not a positive number,
    /// naming the line.
    pub fn from_csv(file: &str, text: &str) -> Result<Self> {
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, l)| l.trim()).unwrap_or_default();
        if header.replace(' ', "") != "currency,usd_rate" {
            return Err(Error::Csv {
                file: file.into(),
                reason: format!("expected header 'currency,usd_rate', got '{header}'"),
            });
        }
        let mut pairs = Vec::new();
        for (i, line) in lines {
            if line.trim().is_empty() {
                continue;
            }
            let mut parts = line.split(',');
            let (Some(code), Some(rate), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(Error::Csv {
                    file: file.into(),
                    reason: format!("line {}: expected 2 columns: '{line}'", i + 1),
                });
            };
            let rate: f64 = rate.trim().parse().map_err(|_| Error::Csv {
                file: file.into(),
                reason: format!("line {}: usd_rate '{}' is not a number", i + 1, rate.trim()),
            })?;
            pairs.push((code.to_string(), rate));
        }
        Self::try_new(pairs).map_err(|e| Error::Csv {
            file: file.into(),
            reason: e.to_string(),
        })
    }

    /// The USD rate of `currency` (already upper-case), if known.
    pub fn rate(&self, currency: &str) -> Option<f64> {
        match pack(currency) {
            Some(key) => self
                .packed
                .binary_search_by_key(&key, |p| p.0)
                .ok()
                .map(|i| self.packed[i].1),
            None => self
                .rates
                .binary_search_by(|(code, _)| code.as_str().cmp(currency))
                .ok()
                .map(|i| self.rates[i].1),
        }
    }

    /// Number of currencies.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// True when no currency is known.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// All `(currency, rate)` pairs, sorted by currency.
    pub fn entries(&self) -> Vec<(String, f64)> {
        self.rates.clone()
    }
}

/// Converts an amount in cents with a USD rate to USD cents, rounding half away from zero.
///
/// Returns `None` when the result does not fit `Decimal128(18, 2)`.
pub fn to_usd_cents(cents: i64, rate: f64) -> Option<i64> {
    let usd = (cents as f64 * rate).round();
    (usd.is_finite() && usd.abs() <= MAX_MONEY_CENTS as f64).then_some(usd as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_required_currencies() {
        let fx = FxTable::defaults();
        for c in [
            "USD", "EUR", "KRW", "JPY", "GBP", "CNY", "SGD", "AUD", "CAD",
        ] {
            assert!(fx.rate(c).is_some(), "{c}");
        }
        assert_eq!(fx.rate("USD"), Some(1.0));
    }

    proptest::proptest! {
        /// Lookups give what a map of the pairs gives (the last rate of a
        /// code wins, codes are upper-cased), and nothing for other codes.
        #[test]
        fn lookups_match_a_map(
            pairs in proptest::collection::vec(("[A-Za-z]{1,9}", 0.001f64..1000.0), 0..30),
            probe in "[A-Z]{1,9}",
        ) {
            let fx = FxTable::try_new(pairs.iter().map(|(c, r)| (c.as_str(), *r))).unwrap();
            let map: std::collections::HashMap<String, f64> =
                pairs.iter().map(|(c, r)| (c.to_ascii_uppercase(), *r)).collect();
            proptest::prop_assert_eq!(fx.len(), map.len());
            for (code, rate) in &map {
                proptest::prop_assert_eq!(fx.rate(code), Some(*rate));
            }
            proptest::prop_assert_eq!(fx.rate(&probe), map.get(&probe).copied());
        }
    }

    #[test]
    fn rejects_bad_csv() {
        assert!(FxTable::from_csv("f", "cur,rate\nUSD,1").is_err());
        let e = FxTable::from_csv("f", "currency,usd_rate\nUSD,abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(FxTable::from_csv("f", "currency,usd_rate\nUSD,-1").is_err());
    }

    #[test]
    fn converts_with_rounding() {
        assert_eq!(to_usd_cents(12345, 1.0), Some(12345));
        assert_eq!(to_usd_cents(100_000, 0.00072), Some(72));
        assert_eq!(to_usd_cents(-150, 0.5), Some(-75));
        assert_eq!(to_usd_cents(i64::MAX, 2.0), None);
    }
}
