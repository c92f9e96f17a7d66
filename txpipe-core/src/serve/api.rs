//! `GET /api/...` JSON panels (read from the marts), `GET /metrics` and
//! `GET /healthz`.
//!
//! Query parameters are validated against what each endpoint accepts (unknown,
//! repeated or out-of-range parameters are `400` with a JSON message naming
//! the parameter and the accepted values); SQL is only ever built from the
//! typed, validated values, never from the raw strings.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::arrow::json::ArrayWriter;
use datafusion::prelude::SessionContext;
use tokio::sync::Mutex;

use super::filter::{Filter, FILTER_PARAMS};
use super::lake_stats::{kafka_lag, LakeStats, LogFollower};
use super::prometheus::render_lake_metrics;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::metrics::server::prometheus_response;
use crate::models::run_record::RUNS;
use crate::models::runner::register_mart;

/// The dashboard page: HTML, CSS, JS and SVG charts in one file, no CDN.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Shared state of the server.
pub struct AppState {
    lake: Lake,
    follower: Mutex<LogFollower>,
    kafka: Option<(String, String)>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("lake", &self.lake.url().as_str())
            .finish()
    }
}

impl AppState {
    /// State for `lake`; `kafka` = (brokers, topic) to report consumer lag.
    pub fn new(lake: Lake, kafka: Option<(String, String)>) -> Self {
        AppState {
            follower: Mutex::new(LogFollower::new(lake.clone())),
            lake,
            kafka,
        }
    }

    /// The lake served.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Lake statistics, with lag when a topic is watched.
    ///
    /// # Errors
    /// The store failed.
    pub async fn stats(&self) -> Result<LakeStats> {
        let mut stats = self.follower.lock().await.refresh().await?;
        if let Some((brokers, topic)) = self.kafka.clone() {
            let positions = stats.positions.get(&topic).cloned();
            stats.lag = tokio::task::spawn_blocking(move || {
                kafka_lag(&brokers, &topic, positions.as_ref())
            })
            .await
            .ok()
            .flatten();
        }
        Ok(stats)
    }

    /// Rows of `sql` over the marts it names (registered as tables), as JSON.
    async fn query(&self, marts: &[&str], sql: &str) -> Result<serde_json::Value> {
        let ctx = SessionContext::new();
        self.lake.register_object_store(&ctx);
        for m in marts {
            if m.starts_with("dim_") {
                if !crate::read::register_table(&ctx, &self.lake, m, m).await? {
                    return Err(Error::Project(format!(
                        "{m} has not been loaded yet (run `txpipe seed`)"
                    )));
                }
                continue;
            }
            if !register_mart(&ctx, &self.lake, m).await? {
                return Err(Error::Project(format!(
                    "mart {m} has not been built yet (run `txpipe models run` or `txpipe run`)"
                )));
            }
        }
        sql_json(&ctx, sql).await
    }

    /// The newest run record, if any.
    async fn last_run(&self) -> Result<Option<serde_json::Value>> {
        let mut runs = self.lake.list(RUNS).await?;
        runs.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        match runs.last() {
            None => Ok(None),
            Some(m) => match self.lake.get(&self.lake.relative(&m.location)).await? {
                Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
                None => Ok(None),
            },
        }
    }
}

/// The rows of `sql` in `ctx` as a JSON array of objects.
pub(super) async fn sql_json(ctx: &SessionContext, sql: &str) -> Result<serde_json::Value> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut w = ArrayWriter::new(Vec::new());
    let refs: Vec<_> = batches.iter().collect();
    w.write_batches(&refs)?;
    w.finish()?;
    let buf = w.into_inner();
    if buf.is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    Ok(serde_json::from_slice(&buf)?)
}

fn json_result(r: Result<serde_json::Value>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e @ Error::Project(_)) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// The largest `limit` accepted by the list endpoints.
pub const MAX_LIMIT: u32 = 100;

/// The number of rows the list endpoints return without `limit`.
pub const DEFAULT_LIMIT: u32 = 10;

/// A rejected query parameter: `400` with a JSON body
/// `{"error": …, "parameter": …, "accepted": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    /// The parameter (or `query` when the query string itself is malformed).
    pub parameter: String,
    /// What is wrong.
    pub message: String,
    /// What is accepted, for humans.
    pub accepted: String,
}

impl IntoResponse for BadParam {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": self.message,
                "parameter": self.parameter,
                "accepted": self.accepted,
            })),
        )
            .into_response()
    }
}

/// The query parameters of one request, checked against the names an endpoint
/// accepts: each at most once, nothing else.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses the query of `uri`, accepting only `allowed` names.
    ///
    /// # Errors
    /// A malformed query, an unknown or repeated parameter.
    pub fn parse(uri: &Uri, allowed: &[&str]) -> Result<Self, BadParam> {
        let accepted = if allowed.is_empty() {
            "no query parameters".to_string()
        } else {
            allowed.join(", ")
        };
        let pairs = match uri.query() {
            None => Vec::new(),
            Some(_) => {
                Query::<Vec<(String, String)>>::try_from_uri(uri)
                    .map_err(|_| BadParam {
                        parameter: "query".into(),
                        message: "malformed query string".into(),
                        accepted: accepted.clone(),
                    })?
                    .0
            }
        };
        for (i, (k, _)) in pairs.iter().enumerate() {
            let shown: String = k.chars().take(64).collect();
            if !allowed.contains(&k.as_str()) {
                return Err(BadParam {
                    message: format!("unknown parameter '{shown}'; accepted: {accepted}"),
                    parameter: shown,
                    accepted,
                });
            }
            if pairs[..i].iter().any(|(p, _)| p == k) {
                return Err(BadParam {
                    message: format!("parameter '{shown}' given more than once"),
                    parameter: shown,
                    accepted,
                });
            }
        }
        Ok(Params(pairs))
    }

    /// The raw value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `limit`: an integer from 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    ///
    /// # Errors
    /// Not an integer in range.
    pub fn limit(&self) -> Result<u32, BadParam> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
                _ => Err(BadParam {
                    parameter: "limit".into(),
                    message: format!("parameter 'limit' must be an integer from 1 to {MAX_LIMIT}"),
                    accepted: format!("1..={MAX_LIMIT} (default {DEFAULT_LIMIT})"),
                }),
            },
        }
    }
}

/// `top_merchants?by=`: what to rank merchants by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopBy {
    /// Revenue in USD, largest first (the default).
    #[default]
    Revenue,
    /// Fraud rate, then fraud count, largest first.
    FraudRate,
}

impl TopBy {
    /// The accepted spellings.
    pub const ACCEPTED: &'static str = "revenue, fraud_rate";

    /// `by` of `params`, [`TopBy::Revenue`] when absent.
    ///
    /// # Errors
    /// Any other value.
    pub fn from_params(params: &Params) -> Result<Self, BadParam> {
        match params.get("by") {
            None | Some("revenue") => Ok(TopBy::Revenue),
            Some("fraud_rate") => Ok(TopBy::FraudRate),
            Some(_) => Err(BadParam {
                parameter: "by".into(),
                message: format!("parameter 'by' must be one of: {}", Self::ACCEPTED),
                accepted: Self::ACCEPTED.into(),
            }),
        }
    }

    fn order_by(self) -> &'static str {
        match self {
            TopBy::Revenue => "revenue_usd DESC",
            TopBy::FraudRate => "fraud_rate DESC, fraud_count DESC",
        }
    }
}

/// Rejects any query parameter (for the endpoints that take none).
macro_rules! no_params {
    ($uri:expr) => {
        if let Err(e) = Params::parse(&$uri, &[]) {
            return e.into_response();
        }
    };
}

type S = State<Arc<AppState>>;

/// The filter of a panel request (`from`, `to`, `country`, `category`)
/// plus `extra` parameters.
fn filter(uri: &Uri, extra: &[&str]) -> Result<(Filter, Params), BadParam> {
    let mut allowed: Vec<&str> = FILTER_PARAMS.to_vec();
    allowed.extend_from_slice(extra);
    let params = Params::parse(uri, &allowed)?;
    Ok((Filter::from_params(&params)?, params))
}

/// Per merchant and day, joined to the merchant's country and category
/// (`d`, `m`), filtered: what the filtered panels aggregate.
fn merchant_days(f: &Filter) -> String {
    format!(
        "(SELECT d.event_date, d.merchant_id, m.name AS merchant_name, \
         COALESCE(m.category, 'unknown') AS category, COALESCE(m.country, 'unknown') AS country, \
         d.txn_count, d.amount_usd, d.fraud_count FROM int_merchant_daily d \
         LEFT JOIN dim_merchant m ON d.merchant_id = m.merchant_id {}) AS md",
        f.where_sql("d.event_date", Some("m"))
    )
}

async fn daily(State(s): S, uri: Uri) -> Response {
    let f = match filter(&uri, &[]) {
        Ok((f, _)) => f,
        Err(e) => return e.into_response(),
    };
    if f.is_empty() {
        return json_result(
            s.query(
                &["daily_sales_summary"],
                "SELECT CAST(event_date AS VARCHAR) AS day, txn_count, CAST(total_amount_usd AS DOUBLE) AS revenue_usd, \
                 fraud_count, fraud_rate FROM daily_sales_summary ORDER BY event_date",
            )
            .await,
        );
    }
    json_result(
        s.query(
            &["int_merchant_daily", "dim_merchant"],
            &format!(
                "SELECT CAST(event_date AS VARCHAR) AS day, SUM(txn_count) AS txn_count, \
                 CAST(SUM(amount_usd) AS DOUBLE) AS revenue_usd, SUM(fraud_count) AS fraud_count, \
                 CAST(SUM(fraud_count) AS DOUBLE) / SUM(txn_count) AS fraud_rate \
                 FROM {} GROUP BY event_date ORDER BY event_date",
                merchant_days(&f)
            ),
        )
        .await,
    )
}

async fn fraud_by_rule(State(s): S, uri: Uri) -> Response {
    let f = match filter(&uri, &[]) {
        Ok((f, _)) => f,
        Err(e) => return e.into_response(),
    };
    // Per rule and day: the date range applies; merchant filters do not.
    json_result(
        s.query(
            &["fraud_by_rule"],
            &format!(
                "SELECT rule, SUM(hits) AS hits, CAST(SUM(amount_usd) AS DOUBLE) AS amount_usd \
                 FROM fraud_by_rule {} GROUP BY rule ORDER BY hits DESC",
                f.where_sql("event_date", None)
            ),
        )
        .await,
    )
}

/// Revenue and fraud per `key` of a breakdown mart, largest revenue first.
async fn breakdown(s: &AppState, uri: &Uri, mart: &str, key: &str) -> Response {
    let f = match filter(uri, &[]) {
        Ok((f, _)) => f,
        Err(e) => return e.into_response(),
    };
    if f.is_empty() {
        return json_result(
            s.query(
                &[mart],
                &format!(
                    "SELECT {key} AS name, CAST(revenue_usd AS DOUBLE) AS revenue_usd, txn_count, fraud_count, \
                     fraud_rate FROM {mart} ORDER BY revenue_usd DESC"
                ),
            )
            .await,
        );
    }
    json_result(
        s.query(
            &["int_merchant_daily", "dim_merchant"],
            &format!(
                "SELECT {key} AS name, CAST(SUM(amount_usd) AS DOUBLE) AS revenue_usd, \
                 SUM(txn_count) AS txn_count, SUM(fraud_count) AS fraud_count, \
                 CAST(SUM(fraud_count) AS DOUBLE) / SUM(txn_count) AS fraud_rate \
                 FROM {} GROUP BY {key} ORDER BY revenue_usd DESC",
                merchant_days(&f)
            ),
        )
        .await,
    )
}

async fn categories(State(s): S, uri: Uri) -> Response {
    breakdown(&s, &uri, "category_analytics", "category").await
}

async fn countries(State(s): S, uri: Uri) -> Response {
    breakdown(&s, &uri, "country_analytics", "country").await
}

async fn top_merchants(State(s): S, uri: Uri) -> Response {
    let parsed = filter(&uri, &["by", "limit"])
        .and_then(|(f, p)| Ok((f, TopBy::from_params(&p)?, p.limit()?)));
    let (f, by, limit) = match parsed {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let order = by.order_by();
    if f.is_empty() {
        return json_result(
            s.query(
                &["merchant_analytics"],
                &format!(
                    "SELECT merchant_id, merchant_name, category, country, CAST(revenue_usd AS DOUBLE) AS revenue_usd, \
                     txn_count, fraud_count, fraud_rate FROM merchant_analytics WHERE txn_count >= 5 \
                     ORDER BY {order} LIMIT {limit}"
                ),
            )
            .await,
        );
    }
    json_result(
        s.query(
            &["int_merchant_daily", "dim_merchant"],
            &format!(
                "SELECT merchant_id, merchant_name, category, country, revenue_usd, txn_count, fraud_count, \
                 CAST(fraud_count AS DOUBLE) / txn_count AS fraud_rate FROM ( \
                 SELECT merchant_id, max(merchant_name) AS merchant_name, max(category) AS category, \
                 max(country) AS country, CAST(SUM(amount_usd) AS DOUBLE) AS revenue_usd, \
                 SUM(txn_count) AS txn_count, SUM(fraud_count) AS fraud_count FROM {} \
                 GROUP BY merchant_id) WHERE txn_count >= 5 ORDER BY {order} LIMIT {limit}",
                merchant_days(&f)
            ),
        )
        .await,
    )
}

async fn risky_customers(State(s): S, uri: Uri) -> Response {
    let limit = match Params::parse(&uri, &["limit"]).and_then(|p| p.limit()) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    json_result(
        s.query(
            &["customer_kpis"],
            &format!(
                "SELECT customer_id, customer_name, home_country, txn_count, CAST(total_spend_usd AS DOUBLE) AS total_spend_usd, \
                 fraud_count, fraud_rate, foreign_share FROM customer_kpis \
                 ORDER BY fraud_count DESC, fraud_rate DESC LIMIT {limit}"
            ),
        )
        .await,
    )
}

async fn ingest(State(s): S, uri: Uri) -> Response {
    no_params!(uri);
    json_result(
        s.stats()
            .await
            .and_then(|st| serde_json::to_value(st).map_err(Error::from)),
    )
}

async fn runs(State(s): S, uri: Uri) -> Response {
    no_params!(uri);
    json_result(
        s.last_run()
            .await
            .map(|r| r.unwrap_or(serde_json::Value::Null)),
    )
}

/// The quality report against the lake's `fraud_labels` table; `null` when
/// no labels were loaded (`txpipe seed` loads DIR/fraud_labels.csv).
async fn quality(State(s): S, uri: Uri) -> Response {
    no_params!(uri);
    let labelled = crate::sink::delta::open(&s.lake, crate::schema::FRAUD_LABELS).await;
    json_result(match labelled {
        Ok(None) => Ok(serde_json::Value::Null),
        Ok(Some(_)) => crate::quality::quality(&s.lake, crate::quality::Labels::Lake, &[])
            .await
            .and_then(|r| serde_json::to_value(r).map_err(Error::from)),
        Err(e) => Err(e),
    })
}

async fn metrics(State(s): S) -> Response {
    let stats = match s.stats().await {
        Ok(st) => st,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let run = s.last_run().await.ok().flatten();
    prometheus_response(render_lake_metrics(&stats, run.as_ref())).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD_HTML))
}

/// The dashboard's routes: `/`, `/api/*`, `/metrics` and `/healthz` (always
/// `200 ok`), without access control (see [`super::auth::protect`]).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/", get(page))
        .route("/api/daily", get(daily))
        .route("/api/fraud_by_rule", get(fraud_by_rule))
        .route("/api/categories", get(categories))
        .route("/api/countries", get(countries))
        .route("/api/top_merchants", get(top_merchants))
        .route("/api/risky_customers", get(risky_customers))
        .route("/api/ingest", get(ingest))
        .route("/api/runs/latest", get(runs))
        .route("/api/quality", get(quality))
        .route("/api/alerts", get(super::live::alerts))
        .route(
            "/api/customers/{id}/transactions",
            get(super::live::customer_transactions),
        )
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str, allowed: &[&str]) -> Result<Params, BadParam> {
        Params::parse(&format!("/x?{q}").parse().unwrap(), allowed)
    }

    #[test]
    fn parameters_are_validated() {
        let p = params("by=fraud_rate&limit=25", &["by", "limit"]).unwrap();
        assert_eq!(TopBy::from_params(&p), Ok(TopBy::FraudRate));
        assert_eq!(p.limit(), Ok(25));
        let p = Params::parse(&"/x".parse().unwrap(), &["by", "limit"]).unwrap();
        assert_eq!(TopBy::from_params(&p), Ok(TopBy::Revenue));
        assert_eq!(p.limit(), Ok(DEFAULT_LIMIT));

        let e = TopBy::from_params(&params("by=revenue%3BDROP", &["by"]).unwrap()).unwrap_err();
        assert_eq!(e.parameter, "by");
        assert!(e.message.contains("revenue, fraud_rate"), "{e:?}");
        for bad in [
            "limit=abc",
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=99999999999",
        ] {
            let e = params(bad, &["limit"]).unwrap().limit().unwrap_err();
            assert_eq!(e.parameter, "limit", "{bad}");
        }
        let e = params("nope=1", &["by"]).unwrap_err();
        assert_eq!(e.parameter, "nope");
        assert!(e.message.contains("accepted: by"), "{e:?}");
        let e = params("by=revenue&by=fraud_rate", &["by"]).unwrap_err();
        assert!(e.message.contains("more than once"), "{e:?}");
        assert!(params("x=1", &[])
            .unwrap_err()
            .message
            .contains("no query parameters"));
    }
}
