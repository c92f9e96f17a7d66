//! Exactly-once publishing of micro-batches: stage, commit, publish, recover.
//!
//! The protocol, per micro-batch:
//! 1. every file is written under `_txpipe/staging/<stream>/<writer run>/…`
//!    (invisible to readers of the table folders);
//! 2. one commit log entry is created at the next free version with a
//!    create-if-absent put, listing the files and the source positions the batch
//!    ends at — this is the atomic commit point. Before claiming a version the
//!    writer checks that the batch continues exactly from the stream's committed
//!    positions (optimistic concurrency, as in Delta Lake): a batch that would
//!    overlap, or leave a gap after, what the lake already holds is refused with
//!    [`Error::CommitConflict`], so a zombie group member or a second ingest of
//!    the same file can never duplicate rows;
//! 3. the staged files are moved to their table folders.
//!
//! On start, [`LakeWriter::recover`] finishes step 3 for the last entry of every
//! earlier run of the stream (roll forward) and deletes files left in staging by
//! batches that never committed. A crash at any point therefore leaves either
//! the whole batch or none of it, and the source resumes from the committed
//! positions ([`LakeWriter::positions`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures::future::try_join_all;

use super::commit_log::{
    run_staging_dir, staging_dir, BatchCounts, CommitEntry, CommitLog, FileAction, SourcePosition,
};
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

/// A processed micro-batch: its files, counts and the source range it covers.
#[derive(Debug, Clone, Default)]
pub struct EncodedBatch {
    /// Files to publish.
    pub files: Vec<EncodedFile>,
    /// What happened to the batch's rows.
    pub counts: BatchCounts,
    /// Position per source partition this batch continues from: the previous
    /// batch's end as the reader saw it (for a partition the lake has never
    /// seen, the first offset read). The commit is refused unless it equals
    /// the lake's committed position, so batches chain without gap or overlap.
    pub start_offsets: BTreeMap<i32, i64>,
    /// Next position per source partition once this batch is committed.
    pub positions: BTreeMap<i32, SourcePosition>,
    /// Raw input bytes of the batch.
    pub input_bytes: u64,
    /// When the batch's first message arrived (metrics only).
    pub opened_at: Option<std::time::Instant>,
    /// Kafka produce timestamps of the batch's messages, ms (metrics only).
    pub produced_ms: Vec<i64>,
}

/// Publishes micro-batches of one stream into a lake, exactly once.
#[derive(Debug)]
pub struct LakeWriter {
    lake: Lake,
    log: CommitLog,
    stream: String,
    source: String,
    writer_id: String,
    /// Newest log version this writer has read.
    known_version: Option<u64>,
    /// Committed positions of the stream as of `known_version`.
    positions: BTreeMap<i32, SourcePosition>,
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
    ///
    /// Call [`recover`](Self::recover) before the first commit.
    pub fn new(lake: Lake, stream: impl Into<String>, source: impl Into<String>) -> Self {
        let log = CommitLog::new(lake.clone());
        Self {
            lake,
            log,
            stream: stream.into(),
            source: source.into(),
            writer_id: uuid::Uuid::new_v4().simple().to_string(),
            known_version: None,
            positions: BTreeMap::new(),
        }
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The committed position of every source partition the stream has seen,
    /// as of the last log version this writer read.
    pub fn positions(&self) -> &BTreeMap<i32, SourcePosition> {
        &self.positions
    }

    /// Reads log entries newer than the ones already seen; returns the stream's.
    async fn catch_up(&mut self) -> Result<Vec<CommitEntry>> {
        let known = self.known_version;
        let versions = self.log.versions().await?;
        let mut mine = Vec::new();
        for v in versions
            .into_iter()
            .filter(|v| known.is_none_or(|k| *v > k))
        {
            let e = self.log.read(v).await?;
            self.known_version = Some(v);
            if e.stream == self.stream {
                self.positions
                    .extend(e.positions.iter().map(|(p, pos)| (*p, *pos)));
                mine.push(e);
            }
        }
        Ok(mine)
    }

    /// Re-reads the log and returns the stream's current committed positions.
    ///
    /// # Errors
    /// The store failed.
    pub async fn refresh(&mut self) -> Result<&BTreeMap<i32, SourcePosition>> {
        self.catch_up().await?;
        Ok(&self.positions)
    }

    /// Completes earlier runs' last commits and removes uncommitted staged files.
    ///
    /// Staging folders of earlier runs of this stream are removed when their
    /// files are older than `orphan_grace` (use zero when this is the only
    /// writer of the stream, as for a file; a grace period when group members
    /// share the stream, so a live member's in-flight batch is left alone).
    /// Returns the stream's committed positions.
    ///
    /// # Errors
    /// A committed file is neither published nor staged (the lake was damaged),
    /// or the store failed.
    pub async fn recover(
        &mut self,
        orphan_grace: Duration,
    ) -> Result<BTreeMap<i32, SourcePosition>> {
        let entries = self.catch_up().await?;
        let mut last_per_run: HashMap<&str, &CommitEntry> = HashMap::new();
        for e in &entries {
            last_per_run.insert(e.writer_id.as_str(), e);
        }
        for e in last_per_run.values() {
            self.publish(e).await?;
        }
        let cutoff =
            chrono::Utc::now() - chrono::Duration::from_std(orphan_grace).unwrap_or_default();
        let staged = self.lake.list(&staging_dir(&self.stream)).await?;
        let mut newest_per_run: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
        let prefix = format!("{}/", staging_dir(&self.stream));
        for m in &staged {
            let rel = self.lake.relative(&m.location);
            let run = rel
                .strip_prefix(&prefix)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default()
                .to_string();
            let t = newest_per_run.entry(run).or_insert(m.last_modified);
            *t = (*t).max(m.last_modified);
        }
        for m in staged {
            let rel = self.lake.relative(&m.location);
            let run = rel
                .strip_prefix(&prefix)
                .and_then(|r| r.split('/').next())
                .unwrap_or_default();
            if newest_per_run.get(run).is_some_and(|t| *t <= cutoff) {
                self.lake.delete(&rel).await?;
            }
        }
        self.remove_local_leftovers(cutoff.into())?;
        Ok(self.positions.clone())
    }

    /// On a local disk, a put interrupted by kill -9 leaves its temporary
    /// `file#N`, which the object store never lists: remove the folders of
    /// expired runs (all older than `cutoff`, not this run's) as a whole.
    fn remove_local_leftovers(&self, cutoff: std::time::SystemTime) -> Result<()> {
        let Some(root) = self.lake.local_root() else {
            return Ok(());
        };
        let dir = root.join(staging_dir(&self.stream));
        let Ok(runs) = std::fs::read_dir(&dir) else {
            return Ok(()); // nothing was ever staged
        };
        for run in runs.flatten() {
            if run.file_name().to_string_lossy() == self.writer_id {
                continue;
            }
            let path = run.path();
            if newest_mtime(&path).is_some_and(|t| t <= cutoff) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("removing orphan staging", path, e)),
                }
            }
        }
        Ok(())
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

    fn conflicts(&self, start: &BTreeMap<i32, i64>) -> Vec<i32> {
        start
            .iter()
            .filter(|(p, s)| {
                self.positions
                    .get(p)
                    .is_some_and(|pos| **s != pos.next_offset)
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Stages, commits and publishes one batch; returns its commit entry.
    ///
    /// # Errors
    /// [`Error::CommitConflict`] when another writer already committed part of
    /// the batch's source range (nothing is committed and the staged files are
    /// removed); otherwise the store failed. Files staged before a failure are
    /// cleaned up by the next [`recover`](Self::recover).
    pub async fn commit(&mut self, batch: EncodedBatch) -> Result<CommitEntry> {
        let staging = run_staging_dir(&self.stream, &self.writer_id);
        let mut actions = Vec::with_capacity(batch.files.len());
        let mut puts = Vec::with_capacity(batch.files.len());
        for f in batch.files {
            let path = format!(
                "{}/{}/part-{}.parquet",
                f.table,
                f.partition,
                uuid::Uuid::new_v4()
            );
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
            puts.push(async move { lake.put(&staged_path, f.data).await });
        }
        try_join_all(puts).await?;
        let mut entry = CommitEntry {
            version: 0,
            stream: self.stream.clone(),
            source: self.source.clone(),
            positions: batch.positions,
            files: actions,
            counts: batch.counts,
            committed_at: String::new(),
            writer: format!("txpipe {}", env!("CARGO_PKG_VERSION")),
            writer_id: self.writer_id.clone(),
            batch_latency_ms: None,
        };
        let mut fresh = false;
        loop {
            let conflicts = self.conflicts(&batch.start_offsets);
            if !conflicts.is_empty() && !fresh {
                // Our view of the log may be stale: re-read it before deciding.
                self.catch_up().await?;
                fresh = true;
                continue;
            }
            if !conflicts.is_empty() {
                for f in &entry.files {
                    self.lake.delete(&f.staged_path).await?;
                }
                return Err(Error::CommitConflict {
                    source_name: self.source.clone(),
                    partitions: conflicts,
                    reason:
                        "another writer already committed these positions; the batch was dropped"
                            .into(),
                });
            }
            entry.version = self.known_version.map_or(0, |v| v + 1);
            entry.committed_at = format_rfc3339_millis(now_micros());
            entry.batch_latency_ms = batch.opened_at.map(|t| t.elapsed().as_millis() as u64);
            if self.log.try_create(&entry).await? {
                self.known_version = Some(entry.version);
                self.positions
                    .extend(entry.positions.iter().map(|(p, pos)| (*p, *pos)));
                break;
            }
            // Someone else took that version: read what they committed, re-check.
            self.catch_up().await?;
            fresh = true;
        }
        self.publish(&entry).await?;
        Ok(entry)
    }
}

/// Newest modification time of a file or of anything under a folder.
fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_mtime(&e.path()))
        .chain(own)
        .max()
}
