//! `txpipe serve`: the dashboard (the seed's Metabase board), JSON panels and
//! Prometheus metrics, all served by the binary with no CDN.
//!
//! The panels read the marts, so they show the lake as the last models run
//! left it; the page refreshes itself. Live ingest statistics come from the
//! lake's Delta logs (and Kafka watermarks for lag when a topic is given).
//!
//! Security: the server listens on loopback unless told otherwise, and
//! refuses a non-loopback address without a bearer [`Token`] or an explicit
//! [`ServeOptions::insecure_public`] (see [`auth`]); requests are size-limited
//! (see [`crate::metrics::server::Limits`]) and query parameters validated
//! (see [`api::Params`]).

pub mod api;
pub mod auth;
pub mod filter;
pub mod lake_stats;
pub mod live;
pub mod prometheus;

use std::sync::Arc;

pub use api::{router, AppState, DASHBOARD_HTML};
pub use auth::{Access, Token};
pub use lake_stats::{LakeStats, LogFollower};

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::metrics::server::{all_loopback, resolve, spawn_on, HttpServer, Limits};

/// How to serve the dashboard.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on, e.g. `127.0.0.1:8080` or `localhost:0`.
    pub addr: String,
    /// (brokers, topic) to report consumer lag.
    pub kafka: Option<(String, String)>,
    /// Require this bearer token on every route except `/healthz`.
    pub token: Option<Token>,
    /// Allow a non-loopback `addr` without a token (anyone who can reach the
    /// port can read the marts).
    pub insecure_public: bool,
    /// Request size limits.
    pub limits: Limits,
}

impl ServeOptions {
    /// Loopback-style defaults for `addr`: no token, not public, default limits.
    pub fn new(addr: impl Into<String>) -> Self {
        ServeOptions {
            addr: addr.into(),
            kafka: None,
            token: None,
            insecure_public: false,
            limits: Limits::default(),
        }
    }
}

/// A running dashboard server.
#[derive(Debug)]
pub struct Serving {
    /// The server (bound address and task).
    pub server: HttpServer,
    /// Whether it is reachable beyond loopback without a token
    /// (`insecure_public` on a non-loopback address).
    pub public_unauthenticated: bool,
}

/// Serves the dashboard of `lake` on `addr` in the background, loopback only
/// and without a token; `kafka` = (brokers, topic) adds consumer lag.
///
/// # Errors
/// The address does not resolve to loopback addresses only
/// ([`Error::PublicUnauthenticated`]) or cannot be bound.
pub async fn serve(lake: Lake, addr: &str, kafka: Option<(String, String)>) -> Result<HttpServer> {
    let mut opts = ServeOptions::new(addr);
    opts.kafka = kafka;
    Ok(serve_with(lake, opts).await?.server)
}

/// Serves the dashboard of `lake` as `opts` say, in the background.
///
/// `opts.addr` is resolved first; when any of its addresses is not loopback
/// (`0.0.0.0`, `::`, a LAN address or name), a token or `insecure_public` is
/// required.
///
/// # Errors
/// [`Error::PublicUnauthenticated`] as above, or the address does not
/// resolve or cannot be bound.
pub async fn serve_with(lake: Lake, opts: ServeOptions) -> Result<Serving> {
    let addrs = resolve(&opts.addr).await?;
    let loopback = all_loopback(&addrs);
    let access = match (opts.token, loopback, opts.insecure_public) {
        (Some(token), _, _) => Access::token(token),
        (None, true, _) => Access::LoopbackOnly,
        (None, false, true) => Access::Open,
        (None, false, false) => {
            let resolved: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            return Err(Error::PublicUnauthenticated {
                addr: opts.addr,
                resolved: resolved.join(", "),
            });
        }
    };
    let public_unauthenticated = matches!(access, Access::Open);
    let state = Arc::new(AppState::new(lake, opts.kafka));
    let app = auth::protect(router(state), access);
    let server = spawn_on(&opts.addr, &addrs, app, opts.limits).await?;
    Ok(Serving {
        server,
        public_unauthenticated,
    })
}
