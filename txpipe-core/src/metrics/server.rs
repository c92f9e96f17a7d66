//! A small HTTP server (axum on the current tokio runtime) for `/metrics` and
//! JSON endpoints, used by `txpipe ingest --metrics-addr` and `txpipe serve`.
//!
//! Every server started here enforces [`Limits`]: requests whose headers are
//! too large get `431`, request bodies beyond the limit get `413`, so a
//! misbehaving client cannot make the process buffer without bound.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use tokio::net::TcpListener;
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

/// Size limits enforced on every request, before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus all header names and values, in bytes; more → `431`.
    ///
    /// hyper itself closes connections whose head exceeds its read buffer
    /// (about 400 KiB); this is the tighter, answered limit.
    pub max_header_bytes: usize,
    /// Request body, in bytes; a larger `Content-Length` → `413` before the
    /// body is read, and a chunked body is cut off once it exceeds the limit.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    /// 32 KiB of headers (what nginx accepts by default), 64 KiB of body (the
    /// endpoints are all `GET`; nothing legitimate sends a body).
    fn default() -> Self {
        Limits {
            max_header_bytes: 32 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Resolves `addr` (`127.0.0.1:9898`, `[::1]:0`, `localhost:8080`) to socket
/// addresses, in the resolver's order.
///
/// # Errors
/// The address does not parse or does not resolve.
pub async fn resolve(addr: &str) -> Result<Vec<SocketAddr>> {
    let http = |source| Error::Http {
        addr: addr.to_string(),
        source,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr).await.map_err(http)?.collect();
    if addrs.is_empty() {
        return Err(http(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )));
    }
    Ok(addrs)
}

/// Whether every address is a loopback address (`127.0.0.0/8`, `::1`, or an
/// IPv4-mapped loopback). The unspecified addresses `0.0.0.0` and `::` are
/// not loopback: they listen on every interface.
pub fn all_loopback(addrs: &[SocketAddr]) -> bool {
    !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback())
}

/// Binds `addr` (e.g. `127.0.0.1:9898`, port 0 for any) and serves `router`
/// in the background on the current tokio runtime, with the default
/// [`Limits`].
///
/// # Errors
/// The address does not parse or cannot be bound.
pub async fn spawn(addr: &str, router: Router) -> Result<HttpServer> {
    let addrs = resolve(addr).await?;
    spawn_on(addr, &addrs, router, Limits::default()).await
}

/// Binds the first of `addrs` that can be bound (already resolved from
/// `addr`, which is only used in messages) and serves `router` with `limits`
/// in the background on the current tokio runtime.
///
/// # Errors
/// None of the addresses can be bound.
pub async fn spawn_on(
    addr: &str,
    addrs: &[SocketAddr],
    router: Router,
    limits: Limits,
) -> Result<HttpServer> {
    let http = |source| Error::Http {
        addr: addr.to_string(),
        source,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address to bind");
    let mut listener = None;
    for a in addrs {
        match TcpListener::bind(a).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) => last = e,
        }
    }
    let listener = listener.ok_or_else(|| http(last))?;
    let bound = listener.local_addr().map_err(http)?;
    let router = with_limits(router, limits);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("txpipe: HTTP server on {bound} stopped: {e}");
        }
    });
    Ok(HttpServer { addr: bound, task })
}

/// Wraps `router` so that every request is checked against `limits` before
/// routing (`431` / `413`, with `Connection: close`), and body extractors are
/// capped at the body limit too.
pub fn with_limits(router: Router, limits: Limits) -> Router {
    router
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            Arc::new(limits),
            enforce_limits,
        ))
}

async fn enforce_limits(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let head: usize = req.uri().to_string().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head > limits.max_header_bytes {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers too large (limit {} bytes)\n",
                limits.max_header_bytes
            ),
        );
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    match declared {
        Some(None) => {
            return refuse(StatusCode::BAD_REQUEST, "invalid Content-Length\n".into());
        }
        Some(Some(n)) if n > limits.max_body_bytes as u64 => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body too large (limit {} bytes)\n",
                    limits.max_body_bytes
                ),
            );
        }
        _ => {}
    }
    // A body without a length (chunked) is cut off once it passes the limit,
    // for any handler that reads it.
    let max = limits.max_body_bytes;
    let req = req.map(|body| {
        let mut seen = 0usize;
        Body::from_stream(body.into_data_stream().map(move |chunk| {
            let chunk = chunk?;
            seen = seen.saturating_add(chunk.len());
            if seen > max {
                Err(axum::Error::new(format!(
                    "request body too large (limit {max} bytes)"
                )))
            } else {
                Ok(chunk)
            }
        }))
    });
    next.run(req).await
}

/// A short text refusal that also closes the connection (the rest of the
/// request is not read).
fn refuse(status: StatusCode, message: String) -> Response {
    let mut r = (status, message).into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_means_loopback_only() {
        assert!(all_loopback(&[sa("127.0.0.1:1")]));
        assert!(all_loopback(&[sa("127.3.2.1:1")]));
        assert!(all_loopback(&[sa("[::1]:1"), sa("127.0.0.1:1")]));
        assert!(all_loopback(&[sa("[::ffff:127.0.0.1]:1")]));
        assert!(!all_loopback(&[sa("0.0.0.0:1")]));
        assert!(!all_loopback(&[sa("[::]:1")]));
        assert!(!all_loopback(&[sa("192.168.1.10:1")]));
        assert!(!all_loopback(&[sa("127.0.0.1:1"), sa("10.0.0.1:1")]));
        assert!(!all_loopback(&[]));
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let addrs = resolve("localhost:0").await.unwrap();
        assert!(all_loopback(&addrs), "{addrs:?}");
        assert!(resolve("no port here").await.is_err());
    }
}
