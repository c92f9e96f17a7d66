//! `txpipe serve`: the dashboard (the seed's Metabase board), JSON panels and
//! Prometheus metrics, all served by the binary with no CDN.
//!
//! The panels read the marts, so they show the lake as the last models run
//! left it; the page refreshes itself. Live ingest statistics come from the
//! lake's commit log (and Kafka watermarks for lag when a topic is given).

pub mod api;
pub mod lake_stats;
pub mod prometheus;

use std::sync::Arc;

pub use api::{router, AppState, DASHBOARD_HTML};
pub use lake_stats::{LakeStats, LogFollower};

use crate::error::Result;
use crate::lake::Lake;
use crate::metrics::server::{spawn, HttpServer};

/// Serves the dashboard of `lake` on `addr` in the background; `kafka` =
/// (brokers, topic) adds consumer lag.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(lake: Lake, addr: &str, kafka: Option<(String, String)>) -> Result<HttpServer> {
    let state = Arc::new(AppState::new(lake, kafka));
    spawn(addr, router(state)).await
}
