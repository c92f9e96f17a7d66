//! What a committed micro-batch is: its source positions, files and counts.
//!
//! Each micro-batch is one Delta commit on `fact_transaction` (then one on
//! `quarantine`): the `Add` actions of its files, one `txn` action per source
//! partition (`appId = txpipe-<stream>-<partition>`, `version` = the next
//! offset; for files also `…-byte`, the byte position) and, in the commit's
//! `commitInfo`, a [`CommitEntry`] under the key `txpipe` (counts, latency,
//! the quarantine files to roll forward after a crash between the two commits).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Lake-relative path of the file.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Delta file statistics (JSON), kept to re-commit a quarantine file.
    #[serde(default)]
    pub stats: String,
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

/// One committed micro-batch (stored in the fact commit's `commitInfo.txpipe`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitEntry {
    /// Version of the fact table's commit.
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
    /// When the batch was committed (RFC 3339, UTC).
    pub committed_at: String,
    /// txpipe version that wrote the entry.
    pub writer: String,
    /// Identity of the writing process run (one per `txpipe ingest` start).
    #[serde(default)]
    pub writer_id: String,
    /// Milliseconds from the batch's first message to its commit (the batch
    /// latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_latency_ms: Option<u64>,
}
