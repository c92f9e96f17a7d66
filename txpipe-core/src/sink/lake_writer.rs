//! Exactly-once publishing of micro-batches as Delta commits.
//!
//! The protocol, per micro-batch (as kafka-delta-ingest does it, with a
//! chaining check of our own):
//! 1. the batch must continue exactly from the stream's committed positions,
//!    the fact table's `txn` actions (`appId = txpipe-<stream>-<partition>`,
//!    `version` = next offset): a batch that would overlap, or leave a gap
//!    after, what the lake holds is refused with [`Error::CommitConflict`],
//!    so a zombie group member or a second ingest of the same file never
//!    duplicates rows;
//! 2. its Parquet files are written into the table folders (readers of the
//!    Delta log do not see them yet);
//! 3. one Delta commit on `fact_transaction` adds them together with the new
//!    `txn` versions — the atomic commit point. It is written with
//!    put-if-absent ([`AppendLog`]); when another writer took the version,
//!    the commits in between are read and step 1 is checked again;
//! 4. one Delta commit on `quarantine` adds the batch's quarantine files with
//!    the same `txn` versions (also when there are none), so the quarantine
//!    table records how far it has caught up.
//!
//! A crash between 3 and 4 leaves the quarantine one batch behind; the
//! [roll forward](super::roll_forward) finds the batch's quarantine files in
//! the fact commit's `commitInfo` and commits them. Files of batches that
//! never committed are in no snapshot; `txpipe vacuum` removes them. So a
//! crash at any point leaves either the whole batch or none of it, and the
//! source resumes from the committed positions ([`LakeWriter::positions`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deltalake_core::kernel::{Action, Transaction};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use futures::future::try_join_all;

use super::append_log::AppendLog;
use super::commit::{CommitEntry, FileAction, SourcePosition};
use super::delta::{add_action, TableSpec, DEFAULT_CHECKPOINT_INTERVAL};
use super::encoded::EncodedBatch;
use super::legacy::refuse_legacy_lake;
use crate::decode::timestamp::format_rfc3339_millis;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::{
    EVENT_DATE, FACT_SCHEMA, FACT_TABLE, QUARANTINE_SCHEMA, QUARANTINE_TABLE, RECEIVED_DATE,
};

/// Key of txpipe's record in a commit's `commitInfo`.
pub const COMMIT_INFO_KEY: &str = "txpipe";

/// Publishes micro-batches of one stream into a lake, exactly once.
#[derive(Debug)]
pub struct LakeWriter {
    pub(super) lake: Lake,
    pub(super) stream: String,
    source: String,
    writer_id: String,
    checkpoint_interval: u64,
    /// Whether the source has byte positions (files do, Kafka does not).
    byte_positions: bool,
    pub(super) fact: Option<AppendLog>,
    pub(super) quarantine: Option<AppendLog>,
    /// Source partitions whose positions are read from the log.
    tracked: BTreeSet<i32>,
    /// Committed positions of the stream as of the fact log's version.
    positions: BTreeMap<i32, SourcePosition>,
}

/// Current time in microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// The Delta `txn` app id of a stream's source partition.
pub fn app_id(stream: &str, partition: i32) -> String {
    format!("txpipe-{stream}-{partition}")
}

/// The app id holding a file stream's byte position.
fn byte_app_id(stream: &str, partition: i32) -> String {
    format!("txpipe-{stream}-{partition}-byte")
}

/// The prefix of every app id of `stream`.
fn app_prefix(stream: &str) -> String {
    format!("txpipe-{stream}-")
}

fn fact_spec(interval: u64) -> TableSpec {
    TableSpec::new(FACT_SCHEMA.clone())
        .partitioned_by(EVENT_DATE)
        .checkpoint_every(interval)
}

fn quarantine_spec(interval: u64) -> TableSpec {
    TableSpec::new(QUARANTINE_SCHEMA.clone())
        .partitioned_by(RECEIVED_DATE)
        .checkpoint_every(interval)
}

/// The `txn` actions that record `positions` for `stream`.
pub(super) fn transactions(
    stream: &str,
    positions: &BTreeMap<i32, SourcePosition>,
) -> Vec<Transaction> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut out = Vec::new();
    for (p, pos) in positions {
        out.push(Transaction::new_with_last_update(
            app_id(stream, *p),
            pos.next_offset,
            Some(now),
        ));
        if let Some(b) = pos.next_byte {
            out.push(Transaction::new_with_last_update(
                byte_app_id(stream, *p),
                b as i64,
                Some(now),
            ));
        }
    }
    out
}

/// The Delta `Add` of a committed file (`path` is lake-relative).
pub(super) fn add_of(f: &FileAction) -> Action {
    let inner = f
        .path
        .strip_prefix(&format!("{}/", f.table))
        .unwrap_or(&f.path)
        .to_string();
    let partition = f.partition.split_once('=');
    Action::Add(add_action(inner, partition, f.bytes, f.stats.clone()))
}

/// The operation recorded in an append commit's `commitInfo`.
pub(super) fn append(partition: &str) -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(vec![partition.to_string()]),
        predicate: None,
    }
}

/// The txpipe record of a commit file's `commitInfo`, if it has one.
pub fn commit_entry_of(commit: &[u8], version: u64) -> Option<CommitEntry> {
    for line in commit.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(info) = v.get("commitInfo") {
            let mut e: CommitEntry =
                serde_json::from_value(info.get(COMMIT_INFO_KEY)?.clone()).ok()?;
            e.version = version;
            return Some(e);
        }
    }
    None
}

/// Partitions of `start` whose committed position in `log` is not the
/// batch's start (another writer committed them meanwhile).
fn conflicts(log: &AppendLog, stream: &str, start: &BTreeMap<i32, i64>) -> Vec<i32> {
    start
        .iter()
        .filter(|(p, s)| log.txn(&app_id(stream, **p)).is_some_and(|at| at != **s))
        .map(|(p, _)| *p)
        .collect()
}

impl LakeWriter {
    /// A writer for `stream` (a stable key of the source) described as `source`.
    ///
    /// Call [`recover`](Self::recover) before the first commit.
    pub fn new(lake: Lake, stream: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            lake,
            stream: stream.into(),
            source: source.into(),
            writer_id: uuid::Uuid::new_v4().simple().to_string(),
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            byte_positions: true,
            fact: None,
            quarantine: None,
            tracked: BTreeSet::from([0]),
            positions: BTreeMap::new(),
        }
    }

    /// Tables this writer creates get a Delta checkpoint every `n` commits.
    pub fn with_checkpoint_interval(mut self, n: u64) -> Self {
        self.checkpoint_interval = n.max(1);
        self
    }

    /// The source has no byte positions (Kafka): [`positions`](Self::positions)
    /// then never reads them.
    pub fn without_byte_positions(mut self) -> Self {
        self.byte_positions = false;
        self
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Reads the positions of these source partitions too (a Kafka topic's
    /// partitions; a file has partition 0, which is always read).
    pub fn track(&mut self, partitions: impl IntoIterator<Item = i32>) {
        self.tracked.extend(partitions);
    }

    /// The committed position of every tracked source partition the stream
    /// has committed, as of the last log version this writer read.
    pub fn positions(&self) -> &BTreeMap<i32, SourcePosition> {
        &self.positions
    }

    /// Opens the tables, creating them when `create` (a reader never does).
    pub(super) async fn tables(&mut self, create: bool) -> Result<()> {
        let prefix = app_prefix(&self.stream);
        if self.fact.is_none() {
            refuse_legacy_lake(&self.lake).await?;
            self.fact = if create {
                let spec = fact_spec(self.checkpoint_interval);
                Some(AppendLog::open(&self.lake, FACT_TABLE, &spec, &prefix).await?)
            } else {
                AppendLog::open_existing(&self.lake, FACT_TABLE, &prefix).await?
            };
        } else if create && self.quarantine.is_none() {
            // Opened to read positions; before the first write, make sure it
            // has every column this txpipe writes.
            if let Some(fact) = self.fact.as_mut() {
                fact.ensure_columns(&self.lake, &fact_spec(self.checkpoint_interval))
                    .await?;
            }
        }
        if self.quarantine.is_none() && create {
            let spec = quarantine_spec(self.checkpoint_interval);
            let log = AppendLog::open(&self.lake, QUARANTINE_TABLE, &spec, &prefix).await?;
            self.quarantine = Some(log);
        }
        Ok(())
    }

    pub(super) fn fact_log(&mut self) -> Result<&mut AppendLog> {
        self.fact
            .as_mut()
            .ok_or_else(|| Error::CommitLog("fact table not opened".into()))
    }

    pub(super) fn quarantine_log(&mut self) -> Result<&mut AppendLog> {
        self.quarantine
            .as_mut()
            .ok_or_else(|| Error::CommitLog("quarantine table not opened".into()))
    }

    /// App ids of the tracked partitions (and their byte positions).
    fn tracked_apps(&self) -> Vec<String> {
        let mut apps = Vec::new();
        for p in &self.tracked {
            apps.push(app_id(&self.stream, *p));
            if self.byte_positions {
                apps.push(byte_app_id(&self.stream, *p));
            }
        }
        apps
    }

    /// Rebuilds [`positions`](Self::positions) from the fact log's `txn`s.
    async fn sync_positions(&mut self) -> Result<()> {
        let apps = self.tracked_apps();
        let stream = self.stream.clone();
        let tracked = self.tracked.clone();
        let with_bytes = self.byte_positions;
        let Some(fact) = self.fact.as_mut() else {
            self.positions.clear();
            return Ok(());
        };
        fact.load(&apps).await?;
        let mut positions = BTreeMap::new();
        for p in tracked {
            let Some(next_offset) = fact.txn(&app_id(&stream, p)) else {
                continue;
            };
            let next_byte = if with_bytes {
                fact.txn(&byte_app_id(&stream, p)).map(|b| b as u64)
            } else {
                None
            };
            positions.insert(
                p,
                SourcePosition {
                    next_offset,
                    next_byte,
                },
            );
        }
        self.positions = positions;
        Ok(())
    }

    /// Reads the fact table's new commits and returns the stream's committed
    /// positions.
    ///
    /// # Errors
    /// The log is unreadable or the store failed.
    pub async fn refresh(&mut self) -> Result<&BTreeMap<i32, SourcePosition>> {
        self.tables(false).await?;
        if let Some(fact) = self.fact.as_mut() {
            fact.refresh().await?;
        }
        self.sync_positions().await?;
        Ok(&self.positions)
    }

    /// Opens the tables (if there are any), completes a batch whose quarantine
    /// commit a crash cut off, and returns the stream's committed positions.
    ///
    /// # Errors
    /// The lake is in txpipe's pre-Delta format, a log is unreadable, or the
    /// store failed.
    pub async fn recover(&mut self) -> Result<BTreeMap<i32, SourcePosition>> {
        // Nothing is created before the first commit: a run that fails
        // early (no broker, no topic) leaves the lake as it was.
        self.refresh().await?;
        let target: BTreeMap<i32, i64> = self
            .positions
            .iter()
            .map(|(p, x)| (*p, x.next_offset))
            .collect();
        self.roll_forward_quarantine_to(&target).await?;
        Ok(self.positions.clone())
    }

    fn conflict(&self, partitions: Vec<i32>) -> Error {
        Error::CommitConflict {
            source_name: self.source.clone(),
            partitions,
            reason: "another writer already committed these positions; the batch was dropped"
                .into(),
        }
    }

    async fn delete_files(&self, files: &[FileAction]) {
        for f in files {
            // Best effort: a leftover is in no snapshot, and vacuum removes it.
            let _ = self.lake.delete(&f.path).await;
        }
    }

    /// Writes the batch's files; returns what the commit will add.
    async fn put_files(&self, batch: EncodedBatch) -> Result<(Vec<FileAction>, EncodedBatch)> {
        let mut batch = batch;
        let mut files = Vec::with_capacity(batch.files.len());
        let mut puts = Vec::with_capacity(batch.files.len());
        for f in std::mem::take(&mut batch.files) {
            let path = format!(
                "{}/{}/part-{}.parquet",
                f.table,
                f.partition,
                uuid::Uuid::new_v4()
            );
            files.push(FileAction {
                table: f.table.to_string(),
                partition: f.partition,
                path: path.clone(),
                rows: f.rows,
                bytes: f.data.len() as u64,
                stats: f.stats,
            });
            let lake = &self.lake;
            puts.push(async move { lake.put(&path, f.data).await });
        }
        if let Err(e) = try_join_all(puts).await {
            self.delete_files(&files).await;
            return Err(e);
        }
        Ok((files, batch))
    }

    /// Writes, commits and returns one batch.
    ///
    /// # Errors
    /// [`Error::CommitConflict`] when another writer already committed part of
    /// the batch's source range (nothing is committed and the batch's files
    /// are deleted); otherwise the log or the store failed.
    pub async fn commit(&mut self, batch: EncodedBatch) -> Result<CommitEntry> {
        self.tables(true).await?;
        self.track(batch.positions.keys().copied());
        let stream = self.stream.clone();
        let apps: Vec<String> = batch
            .start_offsets
            .keys()
            .map(|p| app_id(&stream, *p))
            .collect();
        let fact = self.fact_log()?;
        fact.load(&apps).await?;
        if !conflicts(fact, &stream, &batch.start_offsets).is_empty() {
            // Our view of the log may be stale: read the new commits first.
            fact.refresh().await?;
        }
        let stale = conflicts(fact, &stream, &batch.start_offsets);
        if !stale.is_empty() {
            self.sync_positions().await?;
            return Err(self.conflict(stale));
        }
        let start_offsets = batch.start_offsets.clone();
        let opened_at = batch.opened_at;
        let (files, batch) = self.put_files(batch).await?;
        let mut entry = CommitEntry {
            version: 0,
            stream: stream.clone(),
            source: self.source.clone(),
            positions: batch.positions,
            files,
            counts: batch.counts,
            committed_at: format_rfc3339_millis(now_micros()),
            writer: format!("txpipe {}", env!("CARGO_PKG_VERSION")),
            writer_id: self.writer_id.clone(),
            batch_latency_ms: opened_at.map(|t| t.elapsed().as_millis() as u64),
        };
        let info = HashMap::from([(COMMIT_INFO_KEY.to_string(), serde_json::to_value(&entry)?)]);
        let adds: Vec<Action> = entry
            .files
            .iter()
            .filter(|f| f.table == FACT_TABLE)
            .map(add_of)
            .collect();
        let txns = transactions(&stream, &entry.positions);
        let mut refused = Vec::new();
        // Partitions the lake already had when the commit landed: a crashed
        // member's batch may sit between the quarantine's position and this
        // batch's start.
        let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
        let result = self
            .fact_log()?
            .append(adds, append(EVENT_DATE), info, |log| {
                refused = conflicts(log, &stream, &start_offsets);
                seen = start_offsets
                    .iter()
                    .filter(|(p, _)| log.txn(&app_id(&stream, **p)).is_some())
                    .map(|(p, s)| (*p, *s))
                    .collect();
                if refused.is_empty() {
                    Ok(Some(txns.clone()))
                } else {
                    Ok(None)
                }
            })
            .await;
        match result {
            Ok(Some(version)) => entry.version = version,
            Ok(None) => {
                self.delete_files(&entry.files).await;
                self.sync_positions().await?;
                return Err(self.conflict(refused));
            }
            // The commit may or may not have landed (an I/O error after the
            // put): keep the files, the next start reads the log.
            Err(e) => return Err(e),
        }
        self.sync_positions().await?;
        let quarantine: Vec<FileAction> = entry
            .files
            .iter()
            .filter(|f| f.table == QUARANTINE_TABLE)
            .cloned()
            .collect();
        self.roll_forward_quarantine_to(&seen).await?;
        self.commit_quarantine(&quarantine, &entry.positions)
            .await?;
        Ok(entry)
    }

    /// Commits quarantine files with the batch's positions, unless the
    /// quarantine table already holds them (a roll forward raced us).
    pub(super) async fn commit_quarantine(
        &mut self,
        files: &[FileAction],
        positions: &BTreeMap<i32, SourcePosition>,
    ) -> Result<()> {
        let stream = self.stream.clone();
        let apps: Vec<String> = positions.keys().map(|p| app_id(&stream, *p)).collect();
        let q = self.quarantine_log()?;
        q.load(&apps).await?;
        let adds: Vec<Action> = files.iter().map(add_of).collect();
        q.append(adds, append(RECEIVED_DATE), HashMap::new(), |log| {
            // Partitions the quarantine already holds past this batch keep
            // their (later) position; the files are still this batch's.
            let advancing: BTreeMap<i32, SourcePosition> = positions
                .iter()
                .filter(|(p, pos)| {
                    log.txn(&app_id(&stream, **p))
                        .is_none_or(|at| at < pos.next_offset)
                })
                .map(|(p, pos)| (*p, *pos))
                .collect();
            Ok((!advancing.is_empty()).then(|| transactions(&stream, &advancing)))
        })
        .await?;
        Ok(())
    }
}
