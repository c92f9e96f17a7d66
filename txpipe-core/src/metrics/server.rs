//! A small HTTP server (axum on the current tokio runtime) for `/metrics` and
//! JSON endpoints, used by `txpipe ingest --metrics-addr` and `txpipe serve`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::task::JoinHandle;

use super::{IngestMetrics, PromText};
use crate::error::{Error, Result};

/// Content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running server.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The serving task; abort it to stop.
    pub task: JoinHandle<()>,
}

/// Binds `addr` (e.g. `127.0.0.1:9898`, port 0 for any) and serves `router`
/// in the background on the current tokio runtime.
///
/// # Errors
/// The address does not parse or cannot be bound.
pub async fn spawn(addr: &str, router: Router) -> Result<HttpServer> {
    let http = |source| Error::Http {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(http)?;
    let bound = listener.local_addr().map_err(http)?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("txpipe: HTTP server on {bound} stopped: {e}");
        }
    });
    Ok(HttpServer { addr: bound, task })
}

/// Renders a Prometheus document as an HTTP response.
pub fn prometheus_response(text: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], text)
}

/// `GET /metrics` (Prometheus text) and `GET /api/ingest` (JSON) of one ingest.
pub fn ingest_router(metrics: Arc<IngestMetrics>) -> Router {
    let m = metrics.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    let mut t = PromText::default();
                    m.render(&mut t);
                    prometheus_response(t.finish())
                }
            }),
        )
        .route(
            "/api/ingest",
            get(move || {
                let m = metrics.clone();
                async move { Json(m.stats()) }
            }),
        )
}
