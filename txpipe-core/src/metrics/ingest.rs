//! Live counters of one ingest process, for `/metrics` and dashboards.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::histogram::{Histogram, HistogramSnapshot, COMMIT_BUCKETS, LATENCY_BUCKETS};
use super::text::PromText;
use crate::sink::{BatchCounts, CommitEntry};

/// Everything an ingest has done so far, as plain numbers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestStats {
    /// The source (file path or topic).
    pub source: String,
    /// Row counts of committed batches.
    pub counts: BatchCounts,
    /// Micro-batches committed.
    pub batches: u64,
    /// Batches refused because another writer had committed their positions.
    pub conflicts: u64,
    /// Alerts published (acknowledged by every target) after their commit.
    pub alerts_delivered: u64,
    /// Whether every alert target acknowledged its last delivery (`None`:
    /// no alerts configured); `false` while deliveries are being retried.
    pub alerts_up: Option<bool>,
    /// Parquet files published.
    pub files: u64,
    /// Parquet bytes published.
    pub bytes_written: u64,
    /// Raw input bytes of committed batches.
    pub input_bytes: u64,
    /// Wall-clock time of the last commit, ms since the Unix epoch.
    pub last_commit_unix_ms: Option<i64>,
    /// Kafka consumer lag per partition (high watermark − lake position), as
    /// last measured.
    pub lag: BTreeMap<i32, i64>,
    /// Kafka only: whether the brokers answered at the last check (`None`
    /// for a file ingest).
    pub kafka_up: Option<bool>,
    /// Kafka only: times the brokers became unreachable.
    pub kafka_outages: u64,
    /// Kafka only: the last error the client reported, if the brokers are down.
    pub kafka_error: Option<String>,
    /// Seconds since the ingest started.
    pub uptime_secs: f64,
}

/// Thread-safe live metrics of an ingest; share it as an `Arc`.
#[derive(Debug)]
pub struct IngestMetrics {
    started: Instant,
    stats: Mutex<IngestStats>,
    batch_latency: Histogram,
    end_to_end_latency: Histogram,
    commit_duration: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new("")
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl IngestMetrics {
    /// Empty metrics for an ingest of `source`.
    pub fn new(source: &str) -> Self {
        IngestMetrics {
            started: Instant::now(),
            stats: Mutex::new(IngestStats {
                source: source.to_string(),
                ..Default::default()
            }),
            batch_latency: Histogram::new(LATENCY_BUCKETS),
            end_to_end_latency: Histogram::new(LATENCY_BUCKETS),
            commit_duration: Histogram::new(COMMIT_BUCKETS),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut IngestStats) -> R) -> R {
        match self.stats.lock() {
            Ok(mut s) => f(&mut s),
            Err(e) => f(&mut e.into_inner()),
        }
    }

    /// Sets the source name (once known).
    pub fn set_source(&self, source: &str) {
        self.with(|s| s.source = source.to_string());
    }

    /// Records a committed batch: its counts and files, how long it was open
    /// (`opened_at`: when its first message arrived) and, for Kafka, each
    /// message's produce time (ms since the epoch) to measure freshness.
    pub fn record_commit(
        &self,
        entry: &CommitEntry,
        input_bytes: u64,
        opened_at: Option<Instant>,
        produced_ms: &[i64],
    ) {
        let now = now_ms();
        self.with(|s| {
            s.counts.add(&entry.counts);
            s.batches += 1;
            s.files += entry.files.len() as u64;
            s.bytes_written += entry.files.iter().map(|f| f.bytes).sum::<u64>();
            s.input_bytes += input_bytes;
            s.last_commit_unix_ms = Some(now);
        });
        if let Some(t) = opened_at {
            self.batch_latency.observe(t.elapsed().as_secs_f64());
        }
        self.end_to_end_latency.observe_many(
            produced_ms
                .iter()
                .filter(|&&p| p > 0)
                .map(|&p| (now - p).max(0) as f64 / 1000.0),
        );
    }

    /// Records how long one lake commit took (files written, fact and
    /// quarantine commits).
    pub fn record_commit_duration(&self, d: std::time::Duration) {
        self.commit_duration.observe(d.as_secs_f64());
    }

    /// Records `n` alerts acknowledged by their targets.
    pub fn record_alerts(&self, n: u64) {
        self.with(|s| s.alerts_delivered += n);
    }

    /// Records a batch refused by the lake (another writer got there first).
    pub fn record_conflict(&self) {
        self.with(|s| s.conflicts += 1);
    }

    /// Replaces the consumer lag per partition.
    pub fn set_lag(&self, lag: BTreeMap<i32, i64>) {
        self.with(|s| s.lag = lag);
    }

    /// Records whether the Kafka brokers are reachable (`error`: why not).
    pub fn set_kafka_up(&self, up: bool, error: Option<String>) {
        self.with(|s| {
            if !up && s.kafka_up != Some(false) {
                s.kafka_outages += 1;
            }
            s.kafka_up = Some(up);
            s.kafka_error = if up { None } else { error };
        });
    }

    /// Records whether the alert targets acknowledge (false while a delivery
    /// is being retried through an outage).
    pub fn set_alerts_up(&self, up: bool) {
        self.with(|s| s.alerts_up = Some(up));
    }

    /// A copy of the counters.
    pub fn stats(&self) -> IngestStats {
        let mut s = self.with(|s| s.clone());
        s.uptime_secs = self.started.elapsed().as_secs_f64();
        s
    }

    /// First message arrival → lake commit, per batch.
    pub fn batch_latency(&self) -> HistogramSnapshot {
        self.batch_latency.snapshot()
    }

    /// Duration of each lake commit.
    pub fn commit_duration(&self) -> HistogramSnapshot {
        self.commit_duration.snapshot()
    }

    /// Kafka produce time → lake commit, per message.
    pub fn end_to_end_latency(&self) -> HistogramSnapshot {
        self.end_to_end_latency.snapshot()
    }

    /// Writes the Prometheus families of this ingest.
    pub fn render(&self, t: &mut PromText) {
        let s = self.stats();
        let src = [("source", s.source.as_str())];
        let counter = |t: &mut PromText, name: &str, help: &str, v: u64| {
            t.family(name, "counter", help).sample(name, &src, v as f64);
        };
        counter(
            t,
            "txpipe_rows_consumed_total",
            "Messages read from the source and committed (landed + quarantined).",
            s.counts.rows_in,
        );
        counter(
            t,
            "txpipe_rows_landed_total",
            "Rows written to the fact table.",
            s.counts.landed,
        );
        counter(
            t,
            "txpipe_rows_quarantined_total",
            "Records written to the quarantine table.",
            s.counts.quarantined,
        );
        counter(
            t,
            "txpipe_fraud_rows_total",
            "Landed rows flagged by at least one fraud rule.",
            s.counts.fraud,
        );
        t.family(
            "txpipe_fraud_flagged_total",
            "counter",
            "Landed rows each fraud rule flagged.",
        );
        for (rule, n) in &s.counts.flagged {
            t.sample(
                "txpipe_fraud_flagged_total",
                &[("source", &s.source), ("rule", rule)],
                *n as f64,
            );
        }
        counter(
            t,
            "txpipe_batches_committed_total",
            "Micro-batches committed to the lake.",
            s.batches,
        );
        counter(
            t,
            "txpipe_commit_conflicts_total",
            "Batches refused because another writer had committed their positions.",
            s.conflicts,
        );
        counter(
            t,
            "txpipe_alerts_delivered_total",
            "Fraud alerts acknowledged by their targets (Kafka topic, webhook) after their batch's commit.",
            s.alerts_delivered,
        );
        if let Some(up) = s.alerts_up {
            t.family(
                "txpipe_alerts_up",
                "gauge",
                "1 when every alert target acknowledged its last delivery, 0 while one is being retried (broker outage, webhook errors).",
            )
            .sample("txpipe_alerts_up", &src, if up { 1.0 } else { 0.0 });
        }
        counter(
            t,
            "txpipe_files_written_total",
            "Parquet files published.",
            s.files,
        );
        counter(
            t,
            "txpipe_bytes_written_total",
            "Parquet bytes published.",
            s.bytes_written,
        );
        counter(
            t,
            "txpipe_input_bytes_total",
            "Raw message bytes of committed batches.",
            s.input_bytes,
        );
        if let Some(ms) = s.last_commit_unix_ms {
            t.family(
                "txpipe_last_commit_timestamp_seconds",
                "gauge",
                "Time of the last lake commit.",
            )
            .sample(
                "txpipe_last_commit_timestamp_seconds",
                &src,
                ms as f64 / 1000.0,
            );
        }
        t.family("txpipe_consumer_lag", "gauge", "Kafka messages not yet in the lake per partition (high watermark minus lake position).");
        for (p, lag) in &s.lag {
            let p = p.to_string();
            t.sample(
                "txpipe_consumer_lag",
                &[("source", &s.source), ("partition", &p)],
                *lag as f64,
            );
        }
        if let Some(up) = s.kafka_up {
            t.family(
                "txpipe_kafka_brokers_up",
                "gauge",
                "1 when the Kafka brokers answered at the last check, 0 while they are unreachable (the ingest keeps retrying).",
            )
            .sample("txpipe_kafka_brokers_up", &src, if up { 1.0 } else { 0.0 });
            counter(
                t,
                "txpipe_kafka_broker_outages_total",
                "Times the Kafka brokers became unreachable.",
                s.kafka_outages,
            );
        }
        t.histogram(
            "txpipe_batch_latency_seconds",
            "Time from a batch's first message to its lake commit.",
            &self.batch_latency(),
        );
        t.histogram(
            "txpipe_end_to_end_latency_seconds",
            "Time from Kafka produce (message timestamp) to lake commit, per message.",
            &self.end_to_end_latency(),
        );
        t.histogram(
            "txpipe_commit_duration_seconds",
            "Time to commit one batch to the lake: its files, the fact and quarantine commits.",
            &self.commit_duration(),
        );
        t.single(
            "txpipe_uptime_seconds",
            "gauge",
            "Seconds since this process started ingesting.",
            s.uptime_secs,
        );
    }
}
