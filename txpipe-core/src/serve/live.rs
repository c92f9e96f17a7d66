//! The live analyst view's data: the newest flagged transactions as they are
//! committed, and one customer's recent transactions — both straight from the
//! fact table's committed Delta snapshot, so they work before (and without)
//! the daily job.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use datafusion::prelude::SessionContext;

use super::api::{sql_json, AppState, BadParam, Params};
use crate::error::Result;
use crate::lake::Lake;
use crate::read::register_table;
use crate::schema::{DIM_CUSTOMER, DIM_MERCHANT, FACT_TABLE};

/// Most rows `/api/alerts` returns.
pub const MAX_ALERTS: u32 = 200;

/// Columns shown for a transaction, with the dims' names when seeded.
const COLUMNS: &str = "f.transaction_id, CAST(f.transaction_ts AS VARCHAR) AS transaction_ts, \
     f.customer_id, {customer_name} AS customer_name, f.merchant_id, {merchant_name} AS merchant_name, \
     CAST(f.amount AS VARCHAR) AS amount, f.currency, CAST(f.amount_usd AS DOUBLE) AS amount_usd, \
     f.is_fraud, f.risk_score, array_to_string(f.fraud_reasons, ',') AS fraud_reasons, \
     f.fraud_evidence, CAST(f.ingested_at AS VARCHAR) AS ingested_at, \
     CAST(f.ingested_at AS BIGINT) AS ingested_us";

/// Registers the fact table (false when there is none yet) and whichever
/// dims exist; returns the SELECT list and FROM clause.
async fn from_clause(ctx: &SessionContext, lake: &Lake) -> Result<Option<String>> {
    lake.register_object_store(ctx);
    if !register_table(ctx, lake, "f", FACT_TABLE).await? {
        return Ok(None);
    }
    let mut from = "f".to_string();
    let mut customer = "CAST(NULL AS VARCHAR)".to_string();
    let mut merchant = "CAST(NULL AS VARCHAR)".to_string();
    if register_table(ctx, lake, "c", DIM_CUSTOMER).await? {
        from.push_str(" LEFT JOIN c ON c.customer_id = f.customer_id");
        customer = "c.name".into();
    }
    if register_table(ctx, lake, "m", DIM_MERCHANT).await? {
        from.push_str(" LEFT JOIN m ON m.merchant_id = f.merchant_id");
        merchant = "m.name".into();
    }
    let cols = COLUMNS
        .replace("{customer_name}", &customer)
        .replace("{merchant_name}", &merchant);
    Ok(Some(format!("SELECT {cols} FROM {from}")))
}

fn error(e: crate::error::Error) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({ "error": e.to_string() })),
    )
        .into_response()
}

/// `GET /api/alerts[?after=MICROS][&limit=N]`: flagged transactions,
/// newest commit first, committed after `after` (the `ingested_at` of a
/// previous answer, microseconds since the epoch), with the customer's and
/// merchant's names. `{"cursor": newest ingested_at seen, "alerts": [...]}`.
pub(super) async fn alerts(State(s): State<Arc<AppState>>, uri: Uri) -> Response {
    let params = match Params::parse(&uri, &["after", "limit"]) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let after = match params.get("after").map(str::parse::<i64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => {
            return BadParam {
                parameter: "after".into(),
                message: "parameter 'after' must be microseconds since the epoch".into(),
                accepted: "an integer (the cursor of a previous answer)".into(),
            }
            .into_response()
        }
    };
    let limit = match params.get("limit").map(str::parse::<u32>) {
        None => 50,
        Some(Ok(n)) if (1..=MAX_ALERTS).contains(&n) => n,
        Some(_) => {
            return BadParam {
                parameter: "limit".into(),
                message: format!("parameter 'limit' must be an integer from 1 to {MAX_ALERTS}"),
                accepted: format!("1..={MAX_ALERTS} (default 50)"),
            }
            .into_response()
        }
    };
    let ctx = SessionContext::new();
    let select = match from_clause(&ctx, s.lake()).await {
        Ok(Some(sel)) => sel,
        Ok(None) => {
            return axum::Json(serde_json::json!({ "cursor": after, "alerts": [] })).into_response()
        }
        Err(e) => return error(e),
    };
    let filter = match after {
        Some(a) => format!(" AND f.ingested_at > to_timestamp_micros({a})"),
        None => String::new(),
    };
    let sql = format!(
        "SELECT * FROM ({select} WHERE f.is_fraud{filter}) ORDER BY ingested_us DESC, \
         transaction_ts DESC, transaction_id LIMIT {limit}"
    );
    match sql_json(&ctx, &sql).await {
        Ok(v) => {
            let newest = v
                .as_array()
                .and_then(|a| a.iter().filter_map(|r| r["ingested_us"].as_i64()).max())
                .or(after);
            axum::Json(serde_json::json!({ "cursor": newest, "alerts": v })).into_response()
        }
        Err(e) => error(e),
    }
}

/// True for the ids txpipe writes (UUIDs, generated ids): letters, digits,
/// `-` and `_`, at most 64 characters.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /api/customers/<id>/transactions`: the customer's newest 100
/// transactions (by transaction time), flagged or not.
pub(super) async fn customer_transactions(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    if let Err(e) = Params::parse(&uri, &[]) {
        return e.into_response();
    }
    if !valid_id(&id) {
        return BadParam {
            parameter: "customer_id".into(),
            message: "a customer id is letters, digits, '-' and '_' (at most 64)".into(),
            accepted: "a customer_id of the fact table".into(),
        }
        .into_response();
    }
    let ctx = SessionContext::new();
    let select = match from_clause(&ctx, s.lake()).await {
        Ok(Some(sel)) => sel,
        Ok(None) => return axum::Json(serde_json::json!([])).into_response(),
        Err(e) => return error(e),
    };
    // `id` is checked above to hold no quote or other SQL syntax.
    let sql = format!(
        "SELECT * FROM ({select} WHERE f.customer_id = '{id}') ORDER BY transaction_ts DESC, \
         transaction_id LIMIT 100"
    );
    match sql_json(&ctx, &sql).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::valid_id;

    #[test]
    fn only_plain_ids_are_accepted() {
        assert!(valid_id("9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10"));
        assert!(valid_id("cust_42"));
        for bad in ["", "a'b", "x OR 1=1", "a;b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
