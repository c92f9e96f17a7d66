//! Ingest statistics read from the lake's commit log (incrementally), plus
//! Kafka consumer lag when brokers are given.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;
use crate::metrics::{Histogram, HistogramSnapshot, LATENCY_BUCKETS};
use crate::sink::commit_log::CommitLog;
use crate::sink::BatchCounts;

/// Totals over every commit of the lake, and recent activity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LakeStats {
    /// Rows in, landed, quarantined, fraud and per-rule counts, all streams.
    pub counts: BatchCounts,
    /// Commits (micro-batches).
    pub commits: u64,
    /// Parquet files published.
    pub files: u64,
    /// Parquet bytes published.
    pub bytes: u64,
    /// Time of the newest commit (RFC 3339).
    pub last_commit_at: Option<String>,
    /// Rows per second over the last minute of commits.
    pub rows_per_sec_1m: f64,
    /// Next offset per source partition (the newest commit of each stream).
    pub positions: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Kafka consumer lag per partition of the watched topic, when known.
    pub lag: Option<BTreeMap<i32, i64>>,
    /// Batch latency (first message → commit) of every commit that recorded it.
    #[serde(skip)]
    pub batch_latency: Option<HistogramSnapshot>,
}

/// Follows the commit log: each [`refresh`](Self::refresh) reads only new entries.
#[derive(Debug)]
pub struct LogFollower {
    log: CommitLog,
    next_version: u64,
    stats: LakeStats,
    /// (commit time in ms since the epoch, rows in) of recent commits.
    recent: Vec<(i64, u64)>,
    latency: Histogram,
}

fn parse_ms(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl LogFollower {
    /// A follower of `lake`'s log, at its beginning.
    pub fn new(lake: Lake) -> Self {
        LogFollower {
            log: CommitLog::new(lake),
            next_version: 0,
            stats: LakeStats::default(),
            recent: Vec::new(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }

    /// Reads new entries and returns the updated statistics.
    ///
    /// # Errors
    /// The store failed or an entry is unreadable.
    pub async fn refresh(&mut self) -> Result<LakeStats> {
        for v in self.log.versions().await? {
            if v < self.next_version {
                continue;
            }
            let e = self.log.read(v).await?;
            self.next_version = v + 1;
            let s = &mut self.stats;
            s.counts.add(&e.counts);
            s.commits += 1;
            s.files += e.files.len() as u64;
            s.bytes += e.files.iter().map(|f| f.bytes).sum::<u64>();
            s.positions.insert(
                e.source.clone(),
                e.positions
                    .iter()
                    .map(|(p, pos)| (*p, pos.next_offset))
                    .collect(),
            );
            if let Some(ms) = e.batch_latency_ms {
                self.latency.observe(ms as f64 / 1000.0);
            }
            if let Some(ms) = parse_ms(&e.committed_at) {
                self.recent.push((ms, e.counts.rows_in));
            }
            s.last_commit_at = Some(e.committed_at);
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.recent.retain(|(t, _)| now - t <= 60_000);
        self.stats.rows_per_sec_1m = self.recent.iter().map(|(_, n)| *n).sum::<u64>() as f64 / 60.0;
        self.stats.batch_latency = Some(self.latency.snapshot());
        Ok(self.stats.clone())
    }
}

/// Consumer lag of `topic` against the lake: high watermark − the lake's next
/// offset per partition (the lake is the source of truth of progress).
pub fn kafka_lag(
    brokers: &str,
    topic: &str,
    positions: Option<&BTreeMap<i32, i64>>,
) -> Option<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = crate::kafka::client_config(brokers, &[])
        .set("group.id", "txpipe-serve-lag")
        .create()
        .ok()?;
    let watermarks =
        crate::kafka::topic_watermarks(&consumer, topic, Duration::from_secs(2)).ok()?;
    Some(crate::kafka::lake_lag(
        &watermarks,
        positions.unwrap_or(&BTreeMap::new()),
    ))
}
