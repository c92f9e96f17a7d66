//! `GET /api/...` JSON panels (read from the marts) and `GET /metrics`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::arrow::json::ArrayWriter;
use datafusion::prelude::SessionContext;
use serde::Deserialize;
use tokio::sync::Mutex;

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
            if !register_mart(&ctx, &self.lake, m).await? {
                return Err(Error::Project(format!(
                    "mart {m} has not been built yet (run `txpipe models run` or `txpipe run`)"
                )));
            }
        }
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

/// `?by=revenue|fraud_rate`
#[derive(Debug, Deserialize)]
struct TopBy {
    by: Option<String>,
}

type S = State<Arc<AppState>>;

async fn daily(State(s): S) -> Response {
    json_result(
        s.query(
            &["daily_sales_summary"],
            "SELECT CAST(event_date AS VARCHAR) AS day, txn_count, CAST(total_amount_usd AS DOUBLE) AS revenue_usd, \
             fraud_count, fraud_rate FROM daily_sales_summary ORDER BY event_date",
        )
        .await,
    )
}

async fn fraud_by_rule(State(s): S) -> Response {
    json_result(
        s.query(
            &["fraud_by_rule"],
            "SELECT rule, SUM(hits) AS hits, CAST(SUM(amount_usd) AS DOUBLE) AS amount_usd \
             FROM fraud_by_rule GROUP BY rule ORDER BY hits DESC",
        )
        .await,
    )
}

/// Revenue and fraud per `key` of a breakdown mart, largest revenue first.
async fn breakdown(s: &AppState, mart: &str, key: &str) -> Response {
    json_result(
        s.query(
            &[mart],
            &format!(
                "SELECT {key} AS name, CAST(revenue_usd AS DOUBLE) AS revenue_usd, txn_count, fraud_count, \
                 fraud_rate FROM {mart} ORDER BY revenue_usd DESC"
            ),
        )
        .await,
    )
}

async fn categories(State(s): S) -> Response {
    breakdown(&s, "category_analytics", "category").await
}

async fn countries(State(s): S) -> Response {
    breakdown(&s, "country_analytics", "country").await
}

async fn top_merchants(State(s): S, Query(q): Query<TopBy>) -> Response {
    let order = match q.by.as_deref() {
        Some("fraud_rate") => "fraud_rate DESC, fraud_count DESC",
        _ => "revenue_usd DESC",
    };
    json_result(
        s.query(
            &["merchant_analytics"],
            &format!(
                "SELECT merchant_id, merchant_name, category, country, CAST(revenue_usd AS DOUBLE) AS revenue_usd, \
                 txn_count, fraud_count, fraud_rate FROM merchant_analytics WHERE txn_count >= 5 \
                 ORDER BY {order} LIMIT 10"
            ),
        )
        .await,
    )
}

async fn risky_customers(State(s): S) -> Response {
    json_result(
        s.query(
            &["customer_kpis"],
            "SELECT customer_id, customer_name, home_country, txn_count, CAST(total_spend_usd AS DOUBLE) AS total_spend_usd, \
             fraud_count, fraud_rate, foreign_share FROM customer_kpis \
             ORDER BY fraud_count DESC, fraud_rate DESC LIMIT 10",
        )
        .await,
    )
}

async fn ingest(State(s): S) -> Response {
    json_result(
        s.stats()
            .await
            .and_then(|st| serde_json::to_value(st).map_err(Error::from)),
    )
}

async fn runs(State(s): S) -> Response {
    json_result(
        s.last_run()
            .await
            .map(|r| r.unwrap_or(serde_json::Value::Null)),
    )
}

async fn metrics(State(s): S) -> Response {
    let stats = match s.stats().await {
        Ok(st) => st,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let run = s.last_run().await.ok().flatten();
    prometheus_response(render_lake_metrics(&stats, run.as_ref())).into_response()
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD_HTML))
}

/// The dashboard's routes: `/`, `/api/*` and `/metrics`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/daily", get(daily))
        .route("/api/fraud_by_rule", get(fraud_by_rule))
        .route("/api/categories", get(categories))
        .route("/api/countries", get(countries))
        .route("/api/top_merchants", get(top_merchants))
        .route("/api/risky_customers", get(risky_customers))
        .route("/api/ingest", get(ingest))
        .route("/api/runs/latest", get(runs))
        .route("/metrics", get(metrics))
        .with_state(state)
}
