//! Exactly-once publishing of micro-batches: stage, commit, publish, recover.
//!
//! The protocol, per micro-batch:
//! 1. every file is written under `_txpipe/staging/<stream>/…` (invisible to
//!    readers of the table folders);
//! 2. one commit log entry is created, listing the files and the source
//!    positions the batch consumed — this is the atomic commit point;
//! 3. the staged files are moved to their table folders.
//!
//! On start, [`LakeWriter::recover`] finishes step 3 for the stream's last
//! committed entry (roll forward) and deletes whatever else is left in the
//! stream's staging folder (files of a batch that never committed). A crash at
//! any point therefore leaves either the whole batch or none of it, and the
//! source resumes from the committed positions.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::try_join_all;

use super::commit_log::{staging_dir, BatchCounts, CommitEntry, CommitLog, FileAction, SourcePosition};
use crate::decode::timestamp::format_rfc3339_millis;
use crate::error::{Error, Result};
use crate::lake::Lake;

/// One encoded file waiting to be committed.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    /// Table folder (`fact_transaction`, `quarantine`).
    pub table: &'static str,
    /// Hive partition folder, e.g. `event_date=2026-11-20`.
    pub partition: String,
    /// Rows in the file.
    pub rows: u64,
    /// The Parquet bytes.
    pub data: Bytes,
}

/// A processed micro-batch: its files, counts and the positions it ends at.
#[derive(Debug, Clone, Default)]
pub struct EncodedBatch {
    /// Files to publish.
    pub files: Vec<EncodedFile>,
    /// What happened to the batch's rows.
    pub counts: BatchCounts,
    /// Next position per source partition once this batch is committed.
    pub positions: BTreeMap<i32, SourcePosition>,
    /// Raw input bytes of the batch.
    pub input_bytes: u64,
}

/// Publishes micro-batches of one stream into a lake, exactly once.
#[derive(Debug, Clone)]
pub struct LakeWriter {
    lake: Lake,
    log: CommitLog,
    stream: String,
    source: String,
}

/// Current time in microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

impl LakeWriter {
    /// A writer for `stream` (a stable key of the source) described as `source`.
    pub fn new(lake: Lake, stream: impl Into<String>, source: impl Into<String>) -> Self {
        let log = CommitLog::new(lake.clone());
        Self { lake, log, stream: stream.into(), source: source.into() }
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Completes the stream's last commit and removes uncommitted staged files.
    ///
    /// Returns the last committed entry of the stream, whose positions are where
    /// the source resumes.
    ///
    /// # Errors
    /// A committed file is neither published nor staged (the lake was damaged),
    /// or the store failed.
    pub async fn recover(&self) -> Result<Option<CommitEntry>> {
        let last = self.log.last_for_stream(&self.stream).await?;
        if let Some(entry) = &last {
            self.publish(entry).await?;
        }
        let staging = staging_dir(&self.stream);
        for leftover in self.lake.list(&staging).await? {
            self.lake.delete(&self.lake.relative(&leftover.location)).await?;
        }
        Ok(last)
    }

    async fn publish(&self, entry: &CommitEntry) -> Result<()> {
        try_join_all(entry.files.iter().map(|f| async move {
            if self.lake.exists(&f.path).await? {
                return Ok(());
            }
            if !self.lake.exists(&f.staged_path).await? {
                return Err(Error::CommitLog(format!(
                    "version {}: file {} is neither published nor staged",
                    entry.version, f.path
                )));
            }
            self.lake.rename(&f.staged_path, &f.path).await
        }))
        .await?;
        Ok(())
    }

    /// Stages, commits and publishes one batch; returns its commit entry.
    ///
    /// # Errors
    /// The store failed or another writer committed for the same stream. Files
    /// staged before the failure are cleaned up by the next [`recover`](Self::recover).
    pub async fn commit(&self, batch: EncodedBatch) -> Result<CommitEntry> {
        let staging = staging_dir(&self.stream);
        let mut actions = Vec::with_capacity(batch.files.len());
        let puts = batch.files.into_iter().map(|f| {
            let name = format!("part-{}.parquet", uuid::Uuid::new_v4());
            let path = format!("{}/{}/{name}", f.table, f.partition);
            let staged_path = format!("{staging}/{path}");
            actions.push(FileAction {
                table: f.table.to_string(),
                partition: f.partition,
                path,
                staged_path: staged_path.clone(),
                rows: f.rows,
                bytes: f.data.len() as u64,
            });
            let lake = &self.lake;
            async move { lake.put(&staged_path, f.data).await }
        });
        let puts: Vec<_> = puts.collect();
        try_join_all(puts).await?;
        let mut entry = CommitEntry {
            version: 0,
            stream: self.stream.clone(),
            source: self.source.clone(),
            positions: batch.positions,
            files: actions,
            counts: batch.counts,
            committed_at: format_rfc3339_millis(now_micros()),
            writer: format!("txpipe {}", env!("CARGO_PKG_VERSION")),
        };
        self.log.append(&mut entry).await?;
        self.publish(&entry).await?;
        Ok(entry)
    }
}
