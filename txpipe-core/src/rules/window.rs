//! Window calls in rule and feature SQL, and the look-back frames they read.
//!
//! A stateful rule is written as standard SQL with a window function:
//!
//! ```sql
//! count(*) FILTER (WHERE amount_usd < 5) OVER (
//!     PARTITION BY customer_id ORDER BY transaction_ts
//!     RANGE BETWEEN INTERVAL '30 minutes' PRECEDING AND CURRENT ROW)
//! ```
//!
//! [`extract`] finds every such call, checks it is one txpipe can keep state
//! for, and replaces it by a column reference, so the rest of the expression
//! stays a plain vectorized DataFusion expression. Frames always look back
//! over the key's *earlier* rows (source order, the row itself excluded), and
//! select those whose `transaction_ts` lies in `(ts − PRECEDING, ts + FOLLOWING]`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, DateTimeField, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    Ident, UnaryOperator, Value, WindowFrameBound, WindowFrameUnits, WindowSpec, WindowType,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Microseconds per second.
const SECOND: i64 = 1_000_000;

/// The aggregate a window call computes over its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowFunc {
    /// `count(*)` or `count(x)` (non-null `x`): rows in the frame.
    Count,
    /// `sum(x)` over the frame; NULL when no non-null `x`.
    Sum,
    /// `avg(x)` over the frame; NULL when no non-null `x`.
    Avg,
    /// `min(x)` over the frame.
    Min,
    /// `max(x)` over the frame.
    Max,
    /// `count_equal(x)`: frame rows whose `x` equals this row's `x` (0 when
    /// this row's `x` is NULL). SQL has no way to compare a frame row with the
    /// current row, which "a device not seen before" needs.
    CountEqual,
    /// `last_value(x)`: `x` of the most recent frame row in source order.
    LastValue,
}

impl WindowFunc {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "count" => Self::Count,
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "min" => Self::Min,
            "max" => Self::Max,
            "count_equal" => Self::CountEqual,
            "last_value" => Self::LastValue,
            _ => return None,
        })
    }
}

/// One window call, as the state evaluates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowCall {
    /// The aggregate.
    pub func: WindowFunc,
    /// SQL of the argument, `None` for `count(*)`.
    pub arg: Option<String>,
    /// SQL of the `FILTER (WHERE …)` condition.
    pub filter: Option<String>,
    /// The `PARTITION BY` column: whose history the frame reads.
    pub key: String,
    /// Frame start, microseconds before the row's `transaction_ts` (exclusive).
    pub preceding: i64,
    /// Frame end, microseconds after the row's `transaction_ts` (inclusive).
    pub following: i64,
    /// The call as written, for messages and evidence.
    pub text: String,
}

/// Named windows from the rules file's `[windows]` table, parsed.
pub type NamedWindows = BTreeMap<String, WindowSpec>;

fn parse_expr(sql: &str) -> Result<Expr, String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("{sql}: {e}"))
}

/// Parses a window definition (`PARTITION BY … ORDER BY … RANGE …`) given
/// under `[windows]`.
///
/// # Errors
/// A message saying what is wrong with it.
pub fn parse_window_spec(spec: &str) -> Result<WindowSpec, String> {
    match parse_expr(&format!("count(*) OVER ({spec})"))? {
        Expr::Function(f) => match f.over {
            Some(WindowType::WindowSpec(w)) => Ok(w),
            _ => Err(format!("'{spec}' is not a window definition")),
        },
        _ => Err(format!("'{spec}' is not a window definition")),
    }
}

/// Parses `sql`, moves every window call into `calls` (deduplicated) and
/// returns the SQL with each call replaced by its column `__w<index>`.
///
/// # Errors
/// A message naming what is wrong: an unsupported function or frame, a
/// window without `PARTITION BY`, a negative or unbounded interval.
pub fn extract(
    sql: &str,
    named: &NamedWindows,
    calls: &mut Vec<WindowCall>,
) -> Result<String, String> {
    let mut expr = parse_expr(sql)?;
    let mut failure: Option<String> = None;
    let _ = visit_expressions_mut(&mut expr, |e| {
        if let Expr::Function(f) = e {
            if f.over.is_some() {
                match window_call(f, named) {
                    Ok(call) => {
                        let index = match calls.iter().position(|c| same_call(c, &call)) {
                            Some(i) => i,
                            None => {
                                calls.push(call);
                                calls.len() - 1
                            }
                        };
                        *e = Expr::Identifier(Ident::with_quote('"', column_name(index)));
                    }
                    Err(reason) => {
                        failure = Some(reason);
                        return ControlFlow::Break(());
                    }
                }
            }
        }
        ControlFlow::Continue(())
    });
    match failure {
        Some(reason) => Err(reason),
        None => Ok(expr.to_string()),
    }
}

fn same_call(a: &WindowCall, b: &WindowCall) -> bool {
    (a.func, &a.arg, &a.filter, &a.key, a.preceding, a.following)
        == (b.func, &b.arg, &b.filter, &b.key, b.preceding, b.following)
}

/// The internal column holding window call `index`'s values.
pub fn column_name(index: usize) -> String {
    format!("__w{index}")
}

fn window_call(
    f: &datafusion::sql::sqlparser::ast::Function,
    named: &NamedWindows,
) -> Result<WindowCall, String> {
    let text = f.to_string();
    let name = f.name.to_string().to_ascii_lowercase();
    let func = WindowFunc::parse(&name).ok_or_else(|| {
        format!(
            "{text}: '{name}' is not a window function txpipe keeps state for \
             (count, sum, avg, min, max, count_equal, last_value)"
        )
    })?;
    if f.null_treatment.is_some() || !f.within_group.is_empty() {
        return Err(format!(
            "{text}: IGNORE/RESPECT NULLS and WITHIN GROUP are not supported"
        ));
    }
    let args = match &f.args {
        FunctionArguments::List(list) => {
            if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                return Err(format!(
                    "{text}: DISTINCT and argument clauses are not supported"
                ));
            }
            list.args.clone()
        }
        FunctionArguments::None => Vec::new(),
        FunctionArguments::Subquery(_) => {
            return Err(format!("{text}: subqueries are not supported"))
        }
    };
    let arg = match (func, args.as_slice()) {
        (WindowFunc::Count, [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)]) => None,
        (_, [FunctionArg::Unnamed(FunctionArgExpr::Expr(a))]) => {
            let sql = a.to_string();
            if sql.contains("__w") {
                return Err(format!("{text}: a window call inside a window call"));
            }
            Some(sql)
        }
        _ => return Err(format!("{text}: '{name}' takes exactly one argument")),
    };
    let filter = f.filter.as_ref().map(|c| c.to_string());
    let spec = match &f.over {
        Some(WindowType::WindowSpec(spec)) => spec.clone(),
        Some(WindowType::NamedWindow(w)) => named
            .get(&w.value)
            .cloned()
            .ok_or_else(|| format!("{text}: no window named '{}' under [windows]", w.value))?,
        None => return Err(format!("{text}: not a window call")),
    };
    let spec = match &spec.window_name {
        Some(base) if spec.partition_by.is_empty() && spec.order_by.is_empty() => named
            .get(&base.value)
            .cloned()
            .ok_or_else(|| format!("{text}: no window named '{}' under [windows]", base.value))?,
        _ => spec,
    };
    let key = match spec.partition_by.as_slice() {
        [] => {
            return Err(format!(
                "{text}: the window has no key; add PARTITION BY <column> (e.g. customer_id), \
                 whose history the frame reads"
            ))
        }
        [Expr::Identifier(id)] => id.value.clone(),
        [other] => {
            return Err(format!(
                "{text}: PARTITION BY takes a column name, not '{other}'"
            ))
        }
        _ => return Err(format!("{text}: PARTITION BY takes exactly one column")),
    };
    match spec.order_by.as_slice() {
        [o] if matches!(&o.expr, Expr::Identifier(id) if id.value.eq_ignore_ascii_case("transaction_ts"))
            && o.options.asc != Some(false) => {}
        _ => {
            return Err(format!(
                "{text}: the window must be ORDER BY transaction_ts (event time)"
            ))
        }
    }
    let frame = spec.window_frame.as_ref().ok_or_else(|| {
        format!("{text}: the window needs a frame: RANGE BETWEEN INTERVAL '…' PRECEDING AND CURRENT ROW")
    })?;
    if frame.units != WindowFrameUnits::Range {
        return Err(format!(
            "{text}: only RANGE frames over event time are supported (ROWS and GROUPS frames \
             cannot be bounded in time)"
        ));
    }
    let preceding = match &frame.start_bound {
        WindowFrameBound::CurrentRow => 0,
        WindowFrameBound::Preceding(Some(e)) => {
            interval_micros(e).map_err(|r| format!("{text}: {r}"))?
        }
        WindowFrameBound::Preceding(None) => {
            return Err(format!(
                "{text}: UNBOUNDED PRECEDING would keep state forever; give an interval"
            ))
        }
        WindowFrameBound::Following(_) => {
            return Err(format!("{text}: the frame must start at or before the row"))
        }
    };
    let following = match &frame.end_bound {
        None | Some(WindowFrameBound::CurrentRow) => 0,
        Some(WindowFrameBound::Following(Some(e))) => {
            interval_micros(e).map_err(|r| format!("{text}: {r}"))?
        }
        Some(_) => {
            return Err(format!(
                "{text}: the frame must end at CURRENT ROW or at INTERVAL '…' FOLLOWING"
            ))
        }
    };
    Ok(WindowCall {
        func,
        arg,
        filter,
        key,
        preceding,
        following,
        text,
    })
}

/// Microseconds of an `INTERVAL '10 minutes'` (or `INTERVAL '10' MINUTE`) expression.
fn interval_micros(e: &Expr) -> Result<i64, String> {
    match e {
        Expr::Interval(i) => {
            let text = match i.value.as_ref() {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    Value::Number(n, _) => n.clone(),
                    other => return Err(format!("bad interval value {other}")),
                },
                Expr::UnaryOp {
                    op: UnaryOperator::Minus,
                    ..
                } => return Err(format!("negative interval {e}")),
                other => return Err(format!("bad interval value {other}")),
            };
            let text = match &i.leading_field {
                None => text,
                Some(field) => {
                    let unit = match field {
                        DateTimeField::Second | DateTimeField::Seconds => "seconds",
                        DateTimeField::Minute | DateTimeField::Minutes => "minutes",
                        DateTimeField::Hour | DateTimeField::Hours => "hours",
                        DateTimeField::Day | DateTimeField::Days => "days",
                        DateTimeField::Week(_) | DateTimeField::Weeks => "weeks",
                        other => return Err(format!("interval unit {other} has no fixed length")),
                    };
                    format!("{text} {unit}")
                }
            };
            parse_duration(&text)
        }
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => parse_duration(s),
            _ => Err(format!(
                "'{e}' is not an interval; write INTERVAL '10 minutes'"
            )),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            ..
        } => Err(format!("negative interval {e}")),
        _ => Err(format!(
            "'{e}' is not an interval; write INTERVAL '10 minutes'"
        )),
    }
}

/// Parses a duration such as `10 minutes`, `1 day 12 hours`, `90 seconds`
/// into microseconds.
///
/// # Errors
/// Negative, unparsable, or in a unit with no fixed length (month, year).
///
/// ```
/// use txpipe_core::rules::window::parse_duration;
/// assert_eq!(parse_duration("10 minutes"), Ok(600_000_000));
/// assert_eq!(parse_duration("1 day 12 hours"), Ok(129_600_000_000));
/// assert!(parse_duration("-5 minutes").unwrap_err().contains("negative"));
/// ```
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return Err(format!(
            "'{text}' is not a duration; write e.g. '10 minutes', '30 days', '1 day 12 hours'"
        ));
    }
    let mut total: i64 = 0;
    for pair in words.chunks(2) {
        let n: f64 = pair[0]
            .parse()
            .map_err(|_| format!("'{text}': '{}' is not a number", pair[0]))?;
        if n < 0.0 || pair[0].starts_with('-') {
            return Err(format!("negative interval '{text}'"));
        }
        let unit = match pair[1].to_ascii_lowercase().trim_end_matches('s') {
            "microsecond" | "u" => 1,
            "millisecond" | "m" => 1_000,
            "second" | "sec" => SECOND,
            "minute" | "min" => 60 * SECOND,
            "hour" | "h" => 3_600 * SECOND,
            "day" | "d" => 86_400 * SECOND,
            "week" | "w" => 7 * 86_400 * SECOND,
            other => {
                return Err(format!(
                    "'{text}': unit '{other}' is not one of seconds, minutes, hours, days, weeks"
                ))
            }
        };
        total = total.saturating_add((n * unit as f64).round() as i64);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "PARTITION BY customer_id ORDER BY transaction_ts \
                     RANGE BETWEEN INTERVAL '10 minutes' PRECEDING AND CURRENT ROW";

    #[test]
    fn extracts_and_deduplicates_calls() {
        let mut named = NamedWindows::new();
        named.insert("w10".into(), parse_window_spec(W).unwrap());
        let mut calls = Vec::new();
        let sql = extract(
            &format!("1 + count(*) OVER ({W}) >= 5 AND count(*) OVER w10 < 100"),
            &named,
            &mut calls,
        )
        .unwrap();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(sql, "1 + \"__w0\" >= 5 AND \"__w0\" < 100");
        assert_eq!(calls[0].preceding, 600 * SECOND);
        assert_eq!(calls[0].following, 0);
        assert_eq!(calls[0].key, "customer_id");
        let sql = extract(
            "last_value(latitude) FILTER (WHERE latitude IS NOT NULL) OVER (PARTITION BY \
             customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '24' HOUR PRECEDING \
             AND INTERVAL '1 day' FOLLOWING)",
            &named,
            &mut calls,
        )
        .unwrap();
        assert_eq!(sql, "\"__w1\"");
        assert_eq!(calls[1].func, WindowFunc::LastValue);
        assert_eq!(calls[1].filter.as_deref(), Some("latitude IS NOT NULL"));
        assert_eq!(
            (calls[1].preceding, calls[1].following),
            (86_400 * SECOND, 86_400 * SECOND)
        );
    }

    #[test]
    fn refuses_what_it_cannot_keep_state_for() {
        let named = NamedWindows::new();
        for (sql, expect) in [
            ("count(*) OVER (ORDER BY transaction_ts RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW)", "no key"),
            ("count(*) OVER (PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '-1 hour' PRECEDING AND CURRENT ROW)", "negative"),
            ("count(*) OVER (PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)", "UNBOUNDED"),
            ("count(*) OVER (PARTITION BY customer_id ORDER BY transaction_ts ROWS BETWEEN 5 PRECEDING AND CURRENT ROW)", "RANGE"),
            ("count(*) OVER (PARTITION BY customer_id ORDER BY amount RANGE BETWEEN 5 PRECEDING AND CURRENT ROW)", "ORDER BY transaction_ts"),
            ("rank() OVER (PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '1 hour' PRECEDING AND CURRENT ROW)", "not a window function"),
            ("count(*) OVER nope", "no window named"),
            ("count(*) OVER (PARTITION BY customer_id ORDER BY transaction_ts RANGE BETWEEN INTERVAL '1 month' PRECEDING AND CURRENT ROW)", "unit"),
        ] {
            let e = extract(sql, &named, &mut Vec::new()).unwrap_err();
            assert!(e.contains(expect), "{sql}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30 days"), Ok(30 * 86_400 * SECOND));
        assert_eq!(parse_duration("1 hour"), Ok(3_600 * SECOND));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("10").is_err());
    }
}
