//! Live metrics: counters of an ingest, fixed-bucket histograms and the
//! Prometheus text format, served over HTTP by [`server`].

pub mod histogram;
pub mod ingest;
pub mod server;
pub mod text;

pub use histogram::{Histogram, HistogramSnapshot, LATENCY_BUCKETS};
pub use ingest::{IngestMetrics, IngestStats};
pub use text::PromText;
