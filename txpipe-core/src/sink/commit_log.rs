//! The lake's commit log: `LAKE/_txpipe/log/<version>.json`.
//!
//! Like Delta's `_delta_log` and Spark's `_spark_metadata`, each committed
//! micro-batch is one JSON entry, created with a conditional put (`PutMode::Create`)
//! so two writers can never both claim a version. An entry lists the batch's
//! data files *and* the source positions it consumed, so data and offsets are
//! committed together: after a crash the writer resumes from the positions of
//! its stream's last entry.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::TXPIPE_DIR;

/// Folder of the commit log inside the lake.
pub const LOG_DIR: &str = "_txpipe/log";

/// Digits of a version number in an entry's file name.
const VERSION_DIGITS: usize = 20;

/// Where a source partition resumes: the next offset (Kafka offset or line number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// First offset (line number for files) not yet committed.
    pub next_offset: i64,
    /// For files: byte position of `next_offset`, so a resume can seek.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_byte: Option<u64>,
}

/// One data file a commit adds to the lake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAction {
    /// Table name (`fact_transaction`, `quarantine`).
    pub table: String,
    /// Hive partition folder, e.g. `event_date=2026-11-20`.
    pub partition: String,
    /// Lake-relative path of the published file.
    pub path: String,
    /// Lake-relative path where the file was staged before the commit.
    pub staged_path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// What a micro-batch did, for summaries and reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCounts {
    /// Messages read from the source (= landed + quarantined).
    pub rows_in: u64,
    /// Rows written to the fact table.
    pub landed: u64,
    /// Records written to the quarantine.
    pub quarantined: u64,
    /// Landed rows with `is_fraud`.
    pub fraud: u64,
    /// Landed rows each rule flagged.
    pub flagged: BTreeMap<String, u64>,
}

impl BatchCounts {
    /// Adds another batch's counts to these.
    pub fn add(&mut self, other: &BatchCounts) {
        self.rows_in += other.rows_in;
        self.landed += other.landed;
        self.quarantined += other.quarantined;
        self.fraud += other.fraud;
        for (k, v) in &other.flagged {
            *self.flagged.entry(k.clone()).or_default() += v;
        }
    }
}

/// One committed micro-batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitEntry {
    /// Log version (position in the lake's history).
    pub version: u64,
    /// Stream key of the writer (one per file source or Kafka topic+group).
    pub stream: String,
    /// Human-readable source (file path or topic).
    pub source: String,
    /// Next position per source partition after this batch.
    pub positions: BTreeMap<i32, SourcePosition>,
    /// Files this batch published.
    pub files: Vec<FileAction>,
    /// Row counts of this batch.
    pub counts: BatchCounts,
    /// When the entry was written (RFC 3339, UTC).
    pub committed_at: String,
    /// txpipe version that wrote the entry.
    pub writer: String,
    /// Identity of the writing process run (one per `txpipe ingest` start).
    #[serde(default)]
    pub writer_id: String,
    /// Milliseconds from the batch's first message to this entry (the batch
    /// latency; absent in entries of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_latency_ms: Option<u64>,
}

/// Reader and writer of the commit log.
#[derive(Debug, Clone)]
pub struct CommitLog {
    lake: Lake,
}

fn entry_path(version: u64) -> String {
    format!("{LOG_DIR}/{version:0width$}.json", width = VERSION_DIGITS)
}

impl CommitLog {
    /// The commit log of a lake.
    pub fn new(lake: Lake) -> Self {
        Self { lake }
    }

    /// All committed versions, ascending.
    ///
    /// # Errors
    /// The store failed.
    pub async fn versions(&self) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = self
            .lake
            .list(LOG_DIR)
            .await?
            .iter()
            .filter_map(|m| {
                m.location
                    .filename()
                    .and_then(|f| f.strip_suffix(".json"))
                    .and_then(|f| f.parse().ok())
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Reads one entry.
    ///
    /// # Errors
    /// The entry is missing or not valid JSON.
    pub async fn read(&self, version: u64) -> Result<CommitEntry> {
        let path = entry_path(version);
        let bytes = self
            .lake
            .get(&path)
            .await?
            .ok_or_else(|| Error::CommitLog(format!("{path} is missing")))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::CommitLog(format!("{path}: {e}")))
    }

    /// Every entry, oldest first.
    ///
    /// # Errors
    /// See [`read`](Self::read).
    pub async fn entries(&self) -> Result<Vec<CommitEntry>> {
        let mut out = Vec::new();
        for v in self.versions().await? {
            out.push(self.read(v).await?);
        }
        Ok(out)
    }

    /// The newest entry written by `stream`, if any.
    ///
    /// # Errors
    /// See [`read`](Self::read).
    pub async fn last_for_stream(&self, stream: &str) -> Result<Option<CommitEntry>> {
        for v in self.versions().await?.into_iter().rev() {
            let e = self.read(v).await?;
            if e.stream == stream {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Creates the entry at `entry.version` if no entry has that version yet;
    /// `Ok(false)` when another writer already took it.
    ///
    /// # Errors
    /// The store failed.
    pub async fn try_create(&self, entry: &CommitEntry) -> Result<bool> {
        let body = Bytes::from(serde_json::to_vec_pretty(entry)?);
        self.lake
            .put_if_absent(&entry_path(entry.version), body)
            .await
    }
}

/// Folder where a stream stages files before they are committed.
pub fn staging_dir(stream: &str) -> String {
    format!("{TXPIPE_DIR}/staging/{stream}")
}

/// Folder where one writer run of a stream stages its files.
pub fn run_staging_dir(stream: &str, writer_id: &str) -> String {
    format!("{TXPIPE_DIR}/staging/{stream}/{writer_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: &str) -> CommitEntry {
        CommitEntry {
            version: 0,
            stream: stream.into(),
            source: "s".into(),
            positions: BTreeMap::from([(
                0,
                SourcePosition {
                    next_offset: 10,
                    next_byte: Some(100),
                },
            )]),
            files: vec![],
            counts: BatchCounts::default(),
            committed_at: "now".into(),
            batch_latency_ms: None,
            writer: "test".into(),
            writer_id: "w".into(),
        }
    }

    #[tokio::test]
    async fn creates_versions_once_and_finds_streams() {
        let log = CommitLog::new(Lake::in_memory());
        assert_eq!(log.last_for_stream("a").await.unwrap(), None);
        for (v, stream) in [(0, "a"), (1, "b"), (2, "a")] {
            let mut e = entry(stream);
            e.version = v;
            assert!(log.try_create(&e).await.unwrap());
            assert!(
                !log.try_create(&e).await.unwrap(),
                "a version is created once"
            );
        }
        assert_eq!(log.versions().await.unwrap(), vec![0, 1, 2]);
        assert_eq!(log.last_for_stream("a").await.unwrap().unwrap().version, 2);
        assert_eq!(
            log.last_for_stream("b").await.unwrap().unwrap().positions[&0].next_offset,
            10
        );
    }
}
