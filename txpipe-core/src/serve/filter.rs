//! The dashboard's filters: a date range and a merchant country and
//! category, validated into SQL conditions (never copied from the raw text).

use chrono::NaiveDate;

use super::api::{BadParam, Params};

/// The filter parameters every panel endpoint accepts.
pub const FILTER_PARAMS: [&str; 4] = ["from", "to", "country", "category"];

/// A validated filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// First day (inclusive).
    pub from: Option<NaiveDate>,
    /// Last day (inclusive).
    pub to: Option<NaiveDate>,
    /// Merchant country code (2 or 3 upper-case letters).
    pub country: Option<String>,
    /// Merchant category (letters, digits, spaces, `_`, `-`, `&`).
    pub category: Option<String>,
}

fn bad(parameter: &str, message: &str, accepted: &str) -> BadParam {
    BadParam {
        parameter: parameter.into(),
        message: message.into(),
        accepted: accepted.into(),
    }
}

impl Filter {
    /// The filter in `params`.
    ///
    /// # Errors
    /// A malformed date, country or category, or `from` after `to`.
    pub fn from_params(params: &Params) -> Result<Self, BadParam> {
        let date = |name: &str| -> Result<Option<NaiveDate>, BadParam> {
            params
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| {
                        bad(
                            name,
                            &format!("parameter '{name}' must be a date YYYY-MM-DD"),
                            "YYYY-MM-DD",
                        )
                    })
                })
                .transpose()
        };
        let from = date("from")?;
        let to = date("to")?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(bad("from", "'from' is after 'to'", "from <= to"));
            }
        }
        let country = params.get("country").filter(|v| !v.is_empty()).map(|v| {
            if (2..=3).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(v.to_string())
            } else {
                Err(bad(
                    "country",
                    "parameter 'country' must be a country code such as US",
                    "2 or 3 upper-case letters",
                ))
            }
        });
        let category = params.get("category").filter(|v| !v.is_empty()).map(|v| {
            let ok = v.len() <= 40
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b' ' | b'_' | b'-' | b'&'));
            if ok {
                Ok(v.to_string())
            } else {
                Err(bad(
                    "category",
                    "parameter 'category' must be a merchant category",
                    "letters, digits, spaces, _ - & (at most 40)",
                ))
            }
        });
        Ok(Filter {
            from,
            to,
            country: country.transpose()?,
            category: category.transpose()?,
        })
    }

    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// True when a merchant attribute is filtered.
    pub fn on_merchant(&self) -> bool {
        self.country.is_some() || self.category.is_some()
    }

    /// `WHERE …` (or an empty string) over `date_col` and, when
    /// `merchant` is given, that table alias's `country` and `category`.
    pub fn where_sql(&self, date_col: &str, merchant: Option<&str>) -> String {
        let mut c = Vec::new();
        if let Some(f) = self.from {
            c.push(format!("{date_col} >= DATE '{f}'"));
        }
        if let Some(t) = self.to {
            c.push(format!("{date_col} <= DATE '{t}'"));
        }
        if let Some(m) = merchant {
            // Validated above: no quote can reach the SQL.
            if let Some(k) = &self.country {
                c.push(format!("{m}.country = '{k}'"));
            }
            if let Some(k) = &self.category {
                c.push(format!("{m}.category = '{k}'"));
            }
        }
        if c.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", c.join(" AND "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<Filter, BadParam> {
        let p = Params::parse(&format!("/x?{q}").parse().unwrap(), &FILTER_PARAMS).unwrap();
        Filter::from_params(&p)
    }

    #[test]
    fn filters_are_validated_into_sql() {
        let f = parse("from=2026-11-01&to=2026-11-20&country=US&category=restaurants").unwrap();
        assert_eq!(
            f.where_sql("d.event_date", Some("m")),
            "WHERE d.event_date >= DATE '2026-11-01' AND d.event_date <= DATE '2026-11-20' \
             AND m.country = 'US' AND m.category = 'restaurants'"
        );
        assert_eq!(f.where_sql("event_date", None).matches("AND").count(), 1);
        assert!(parse("").unwrap().is_empty());
        assert!(parse("from=&country=").unwrap().is_empty());
        for (q, param) in [
            ("from=2026-13-01", "from"),
            ("to=yesterday", "to"),
            ("from=2026-11-02&to=2026-11-01", "from"),
            ("country=us", "country"),
            ("country=US'--", "country"),
            ("category=a'b", "category"),
        ] {
            assert_eq!(parse(q).unwrap_err().parameter, param, "{q}");
        }
    }
}
