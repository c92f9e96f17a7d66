//! Ingest statistics read from the fact table's Delta log (incrementally),
//! per-table sizes from the tables' snapshots, plus Kafka consumer lag when
//! brokers are given.

use std::collections::BTreeMap;
use std::time::Duration;

use deltalake_core::DeltaTable;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;

use crate::error::Result;
use crate::lake::Lake;
use crate::metrics::{Histogram, HistogramSnapshot, LATENCY_BUCKETS};
use crate::schema::{FACT_TABLE, QUARANTINE_TABLE};
use crate::sink::delta::{delta_error, open};
use crate::sink::lake_writer::commit_entry_of;
use crate::sink::BatchCounts;

/// One Delta table's current size and newest commit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStats {
    /// Data files in the current snapshot.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Newest table version.
    pub version: u64,
    /// Time of the newest commit, ms since the epoch (when the log says).
    pub last_commit_ms: Option<i64>,
}

/// Totals over the commits of the lake's retained log, and recent activity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LakeStats {
    /// Rows in, landed, quarantined, fraud and per-rule counts, all streams.
    pub counts: BatchCounts,
    /// Commits (micro-batches).
    pub commits: u64,
    /// Parquet files ingest committed.
    pub files: u64,
    /// Parquet bytes ingest committed.
    pub bytes: u64,
    /// Time of the newest commit (RFC 3339).
    pub last_commit_at: Option<String>,
    /// Rows per second over the last minute of commits.
    pub rows_per_sec_1m: f64,
    /// Next offset per source partition (the newest commit of each stream).
    pub positions: BTreeMap<String, BTreeMap<i32, i64>>,
    /// Kafka consumer lag per partition of the watched topic, when known.
    pub lag: Option<BTreeMap<i32, i64>>,
    /// The fact and quarantine tables' snapshots.
    pub tables: BTreeMap<String, TableStats>,
    /// Newest value (ms since the epoch) of the fact table's
    /// [`FRESHNESS_FIELDS`], from the file statistics of its commits.
    pub newest: BTreeMap<&'static str, i64>,
    /// Batch latency (first message → commit) of every commit that recorded it.
    #[serde(skip)]
    pub batch_latency: Option<HistogramSnapshot>,
}

/// Follows the fact table's Delta log: each [`refresh`](Self::refresh) reads
/// only the commits added since the last one.
#[derive(Debug)]
pub struct LogFollower {
    lake: Lake,
    tables: BTreeMap<&'static str, DeltaTable>,
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
            lake,
            tables: BTreeMap::new(),
            next_version: 0,
            stats: LakeStats::default(),
            recent: Vec::new(),
            latency: Histogram::new(LATENCY_BUCKETS),
        }
    }

    /// Brings a table up to date; `None` while it does not exist.
    async fn table(&mut self, name: &'static str) -> Result<Option<&DeltaTable>> {
        if let Some(t) = self.tables.get_mut(name) {
            t.update_incremental(None)
                .await
                .map_err(|e| delta_error(name, e))?;
        } else if let Some(t) = open(&self.lake, name).await? {
            self.tables.insert(name, t);
        }
        Ok(self.tables.get(name))
    }

    /// Reads new commits and returns the updated statistics.
    ///
    /// # Errors
    /// The store failed or the log is unreadable.
    pub async fn refresh(&mut self) -> Result<LakeStats> {
        for name in [FACT_TABLE, QUARANTINE_TABLE] {
            let Some(table) = self.table(name).await? else {
                continue;
            };
            let snapshot = table.snapshot().map_err(|e| delta_error(name, e))?;
            let files = snapshot.log_data();
            let mut t = TableStats {
                files: files.num_files() as u64,
                bytes: files.iter().map(|f| f.size().max(0) as u64).sum(),
                version: snapshot.version(),
                last_commit_ms: None,
            };
            let store = table.log_store();
            if name == FACT_TABLE {
                let latest = snapshot.version();
                while self.next_version <= latest {
                    let v = self.next_version;
                    let commit = store
                        .read_commit_entry(v)
                        .await
                        .map_err(|e| delta_error(name, e))?;
                    self.next_version = v + 1;
                    if let Some(c) = &commit {
                        note_newest(&mut self.stats.newest, c);
                    }
                    if let Some(e) = commit.and_then(|c| commit_entry_of(&c, v)) {
                        self.add(e);
                    }
                }
            }
            if let Some(Ok(Some(bytes))) = Some(store.read_commit_entry(t.version).await) {
                t.last_commit_ms = commit_timestamp(&bytes);
            }
            self.stats.tables.insert(name.to_string(), t);
        }
        let now = chrono::Utc::now().timestamp_millis();
        self.recent.retain(|(t, _)| now - t <= 60_000);
        self.stats.rows_per_sec_1m = self.recent.iter().map(|(_, n)| *n).sum::<u64>() as f64 / 60.0;
        self.stats.batch_latency = Some(self.latency.snapshot());
        Ok(self.stats.clone())
    }

    fn add(&mut self, e: crate::sink::CommitEntry) {
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
}

/// The fact table's timestamp columns whose newest value `/metrics` reports
/// as `txpipe_source_freshness_seconds`.
pub const FRESHNESS_FIELDS: [&str; 2] = ["ingested_at", "transaction_ts"];

/// Raises `newest` to the `maxValues` of the files a commit adds.
fn note_newest(newest: &mut BTreeMap<&'static str, i64>, commit: &[u8]) {
    for line in commit.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let Some(stats) = v.pointer("/add/stats").and_then(|s| s.as_str()) else {
            continue;
        };
        let Ok(stats) = serde_json::from_str::<serde_json::Value>(stats) else {
            continue;
        };
        for field in FRESHNESS_FIELDS {
            let ms = stats
                .pointer(&format!("/maxValues/{field}"))
                .and_then(|t| t.as_str())
                .and_then(parse_ms);
            if let Some(ms) = ms {
                let e = newest.entry(field).or_insert(ms);
                *e = (*e).max(ms);
            }
        }
    }
}

/// `commitInfo.timestamp` of a Delta commit file.
fn commit_timestamp(commit: &[u8]) -> Option<i64> {
    commit.split(|b| *b == b'\n').find_map(|line| {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        v.get("commitInfo")?.get("timestamp")?.as_i64()
    })
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
