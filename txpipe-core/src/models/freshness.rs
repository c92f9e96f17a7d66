//! Source freshness checks, spelled like dbt's: a `[[source]]` entry of
//! `tests.toml` names a lake table, its `loaded_at_field` and how old the
//! newest value may get before a warning (`warn_after`) or an error
//! (`error_after`).
//!
//! ```toml
//! [[source]]
//! table = "fact_transaction"
//! loaded_at_field = "ingested_at"
//! warn_after = { count = 1, period = "hour" }
//! error_after = { count = 1, period = "day" }
//! ```
//!
//! Each entry compiles to a [`DataTest`] named
//! `source_freshness_<table>_<field>` that `txpipe test` (and the daily job)
//! runs with the other tests: pass, warn past `warn_after`, fail past
//! `error_after` or when the table has no rows.

use serde::Deserialize;

use super::datatest::{DataTest, Severity};
use super::model::check_name;
use crate::error::{Error, Result};

/// How old a source's newest row may be, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Warn when the newest value is older than this.
    pub warn_after: Option<u64>,
    /// Fail when the newest value is older than this.
    pub error_after: Option<u64>,
}

/// What a freshness check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Within `warn_after`.
    Fresh,
    /// Past `warn_after`.
    Warn,
    /// Past `error_after`, or no rows at all.
    Error,
}

impl Freshness {
    /// The verdict for a newest value `age` seconds old (`None`: no rows).
    pub fn judge(&self, age: Option<i64>) -> Staleness {
        let Some(age) = age else {
            return Staleness::Error;
        };
        let past = |limit: Option<u64>| limit.is_some_and(|l| age > l as i64);
        if past(self.error_after) {
            Staleness::Error
        } else if past(self.warn_after) {
            Staleness::Warn
        } else {
            Staleness::Fresh
        }
    }
}

/// dbt's `{ count = N, period = "minute" | "hour" | "day" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAfter {
    count: u64,
    period: String,
}

/// A `[[source]]` entry of `tests.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    table: String,
    loaded_at_field: String,
    warn_after: Option<RawAfter>,
    error_after: Option<RawAfter>,
}

fn seconds(a: &RawAfter) -> Result<u64> {
    let unit = match a.period.as_str() {
        "minute" => 60,
        "hour" => 3600,
        "day" => 86_400,
        other => {
            return Err(Error::Project(format!(
                "period '{other}' (minute, hour or day)"
            )))
        }
    };
    Ok(a.count.saturating_mul(unit))
}

/// Compiles a `[[source]]` entry into a freshness test.
///
/// # Errors
/// A bad table or field name, an unknown period, or neither threshold given.
pub(crate) fn compile_source(raw: &RawSource) -> Result<DataTest> {
    check_name("table", &raw.table)?;
    check_name("loaded_at_field", &raw.loaded_at_field)?;
    let freshness = Freshness {
        warn_after: raw.warn_after.as_ref().map(seconds).transpose()?,
        error_after: raw.error_after.as_ref().map(seconds).transpose()?,
    };
    if freshness.warn_after.is_none() && freshness.error_after.is_none() {
        return Err(Error::Project(
            "a source needs warn_after, error_after or both".into(),
        ));
    }
    let (t, f) = (&raw.table, &raw.loaded_at_field);
    Ok(DataTest {
        name: format!("source_freshness_{t}_{f}"),
        table: t.clone(),
        reads: vec![t.clone()],
        severity: if freshness.error_after.is_some() {
            Severity::Error
        } else {
            Severity::Warn
        },
        sql: format!(
            "SELECT to_unixtime(now()) - to_unixtime(MAX(\"{f}\")) AS age_seconds, \
             CAST(MAX(\"{f}\") AS VARCHAR) AS newest FROM \"{t}\""
        ),
        freshness: Some(freshness),
    })
}

/// `3h 2m`-style text for an age in seconds.
pub fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(count: u64, period: &str) -> Option<RawAfter> {
        Some(RawAfter {
            count,
            period: period.into(),
        })
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let f = Freshness {
            warn_after: Some(3600),
            error_after: Some(86_400),
        };
        assert_eq!(f.judge(Some(10)), Staleness::Fresh);
        assert_eq!(f.judge(Some(3600)), Staleness::Fresh);
        assert_eq!(f.judge(Some(3601)), Staleness::Warn);
        assert_eq!(f.judge(Some(86_401)), Staleness::Error);
        assert_eq!(f.judge(None), Staleness::Error, "no rows is an error");
        let warn_only = Freshness {
            warn_after: Some(60),
            error_after: None,
        };
        assert_eq!(warn_only.judge(Some(1_000_000)), Staleness::Warn);
    }

    #[test]
    fn sources_compile_with_dbt_periods_and_reject_bad_ones() {
        let raw = RawSource {
            table: "fact_transaction".into(),
            loaded_at_field: "ingested_at".into(),
            warn_after: after(2, "hour"),
            error_after: after(1, "day"),
        };
        let t = compile_source(&raw).unwrap();
        assert_eq!(t.name, "source_freshness_fact_transaction_ingested_at");
        assert_eq!(
            t.freshness,
            Some(Freshness {
                warn_after: Some(7200),
                error_after: Some(86_400)
            })
        );
        assert!(t.sql.contains("MAX(\"ingested_at\")"));
        let bad = RawSource {
            warn_after: after(1, "fortnight"),
            ..raw
        };
        assert!(compile_source(&bad).is_err());
        let none = RawSource {
            table: "fact_transaction".into(),
            loaded_at_field: "ingested_at".into(),
            warn_after: None,
            error_after: None,
        };
        assert!(compile_source(&none).is_err());
        assert_eq!(human_age(3 * 3600 + 120), "3h 2m");
    }
}
