//! Exactly-once publishing of micro-batches as Delta commits.
//!
//! The protocol, per micro-batch (as kafka-delta-ingest does it, with a
//! chaining check of our own):
//! 1. the batch must continue exactly from the stream's committed positions,
//!    read from the fact table's `txn` actions (`appId =
//!    txpipe-<stream>-<partition>`, `version` = next offset): a batch that
//!    would overlap, or leave a gap after, what the lake holds is refused with
//!    [`Error::CommitConflict`], so a zombie group member or a second ingest of
//!    the same file never duplicates rows;
//! 2. its Parquet files are written into the table folders (readers of the
//!    Delta log do not see them yet);
//! 3. one Delta commit on `fact_transaction` adds them together with the new
//!    `txn` versions — the atomic commit point. Delta's optimistic concurrency
//!    refuses it when another writer committed the same app id meanwhile;
//! 4. one Delta commit on `quarantine` adds the batch's quarantine files with
//!    the same `txn` versions (also when there are none), so the quarantine
//!    table records how far it has caught up.
//!
//! A crash between 3 and 4 leaves the quarantine one batch behind;
//! [`LakeWriter::recover`] finds the batch's quarantine files in the fact
//! commit's `commitInfo` and commits them (roll forward). Files of batches
//! that never committed are in no snapshot; `txpipe vacuum` removes them. So
//! a crash at any point leaves either the whole batch or none of it, and the
//! source resumes from the committed positions ([`LakeWriter::positions`]).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitConflictError, TransactionError};
use deltalake_core::kernel::{Action, Transaction};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableError};
use futures::future::try_join_all;

use super::commit::{BatchCounts, CommitEntry, FileAction, SourcePosition};
use super::delta::{
    add_action, commit_properties, delta_error, open, open_or_create, TableSpec,
    DEFAULT_CHECKPOINT_INTERVAL,
};
use super::legacy::refuse_legacy_lake;
use crate::decode::timestamp::format_rfc3339_millis;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::{
    EVENT_DATE, FACT_SCHEMA, FACT_TABLE, QUARANTINE_SCHEMA, QUARANTINE_TABLE, RECEIVED_DATE,
};

/// Key of txpipe's record in a commit's `commitInfo`.
pub const COMMIT_INFO_KEY: &str = "txpipe";

/// How far back [`LakeWriter::recover`] looks for the fact commit whose
/// quarantine part is missing.
const ROLL_FORWARD_SEARCH: u64 = 10_000;

/// One encoded file waiting to be committed.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    /// Table folder (`fact_transaction`, `quarantine`).
    pub table: &'static str,
    /// Hive partition folder, e.g. `event_date=2026-11-20`.
    pub partition: String,
    /// Rows in the file.
    pub rows: u64,
    /// Delta statistics of the file's rows ([`delta_stats`](super::file_stats::delta_stats)).
    pub stats: String,
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

impl EncodedBatch {
    /// Appends the next batch of the same stream (it continues where this
    /// one ends), so both land in one commit.
    pub fn absorb(&mut self, next: EncodedBatch) {
        self.files.extend(next.files);
        self.counts.add(&next.counts);
        for (p, start) in next.start_offsets {
            // A partition this batch did not touch starts where `next` starts.
            self.start_offsets.entry(p).or_insert(start);
        }
        self.positions.extend(next.positions);
        self.input_bytes += next.input_bytes;
        self.opened_at = match (self.opened_at, next.opened_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.produced_ms.extend(next.produced_ms);
    }

    /// Rows read from the source.
    pub fn rows(&self) -> u64 {
        self.counts.rows_in
    }
}

/// Publishes micro-batches of one stream into a lake, exactly once.
#[derive(Debug)]
pub struct LakeWriter {
    lake: Lake,
    stream: String,
    source: String,
    writer_id: String,
    checkpoint_interval: u64,
    /// Whether the source has byte positions (files do, Kafka does not).
    byte_positions: bool,
    fact: Option<DeltaTable>,
    quarantine: Option<DeltaTable>,
    /// Source partitions whose positions are read from the log.
    tracked: BTreeSet<i32>,
    /// Fact table version `positions` were read at.
    read_at: Option<(u64, usize)>,
    /// Committed positions of the stream as of `read_at`.
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

fn is_txn_conflict(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction)
        }
    )
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
fn transactions(stream: &str, positions: &BTreeMap<i32, SourcePosition>) -> Vec<Transaction> {
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
fn add_of(f: &FileAction) -> Action {
    let inner = f
        .path
        .strip_prefix(&format!("{}/", f.table))
        .unwrap_or(&f.path)
        .to_string();
    let partition = f.partition.split_once('=');
    Action::Add(add_action(inner, partition, f.bytes, f.stats.clone()))
}

fn append(partition: &str) -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(vec![partition.to_string()]),
        predicate: None,
    }
}

/// Reads a table's committed `txn` versions of `stream` for `partitions`.
async fn read_positions(
    table: &DeltaTable,
    name: &str,
    stream: &str,
    partitions: &BTreeSet<i32>,
    with_bytes: bool,
) -> Result<BTreeMap<i32, SourcePosition>> {
    let snapshot = table.snapshot().map_err(|e| delta_error(name, e))?;
    let store = table.log_store();
    let mut out = BTreeMap::new();
    for p in partitions {
        let next = snapshot
            .transaction_version(store.as_ref(), app_id(stream, *p))
            .await
            .map_err(|e| delta_error(name, e))?;
        let Some(next_offset) = next else { continue };
        let next_byte = if with_bytes {
            snapshot
                .transaction_version(store.as_ref(), byte_app_id(stream, *p))
                .await
                .map_err(|e| delta_error(name, e))?
                .map(|b| b as u64)
        } else {
            None
        };
        out.insert(
            *p,
            SourcePosition {
                next_offset,
                next_byte,
            },
        );
    }
    Ok(out)
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
            tracked: BTreeSet::new(),
            read_at: None,
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
        let before = self.tracked.len();
        self.tracked.extend(partitions);
        if self.tracked.len() != before {
            self.read_at = None;
        }
    }

    /// The committed position of every tracked source partition the stream
    /// has committed, as of the last log version this writer read.
    pub fn positions(&self) -> &BTreeMap<i32, SourcePosition> {
        &self.positions
    }

    /// Opens the tables, creating them when `create` (a reader never does).
    async fn tables(&mut self, create: bool) -> Result<()> {
        if self.fact.is_none() {
            refuse_legacy_lake(&self.lake).await?;
            self.fact = if create {
                let spec = fact_spec(self.checkpoint_interval);
                Some(open_or_create(&self.lake, FACT_TABLE, &spec).await?)
            } else {
                open(&self.lake, FACT_TABLE).await?
            };
        }
        if self.quarantine.is_none() && create {
            let spec = quarantine_spec(self.checkpoint_interval);
            self.quarantine = Some(open_or_create(&self.lake, QUARANTINE_TABLE, &spec).await?);
        }
        Ok(())
    }

    fn fact(&self) -> Result<&DeltaTable> {
        self.fact
            .as_ref()
            .ok_or_else(|| Error::CommitLog("fact table not opened".into()))
    }

    fn fact_mut(&mut self) -> Result<&mut DeltaTable> {
        self.fact
            .as_mut()
            .ok_or_else(|| Error::CommitLog("fact table not opened".into()))
    }

    fn quarantine_mut(&mut self) -> Result<&mut DeltaTable> {
        self.quarantine
            .as_mut()
            .ok_or_else(|| Error::CommitLog("quarantine table not opened".into()))
    }

    fn watched(&self) -> BTreeSet<i32> {
        let mut parts = self.tracked.clone();
        parts.extend(self.positions.keys().copied());
        parts.insert(0);
        parts
    }

    /// Re-reads the fact table's log and returns the stream's committed positions.
    ///
    /// # Errors
    /// The log is unreadable or the store failed.
    pub async fn refresh(&mut self) -> Result<&BTreeMap<i32, SourcePosition>> {
        self.tables(false).await?;
        if self.fact.is_none() {
            // Nothing was ever committed to this lake.
            self.positions.clear();
            return Ok(&self.positions);
        }
        self.fact_mut()?
            .update_incremental(None)
            .await
            .map_err(|e| delta_error(FACT_TABLE, e))?;
        let fact = self.fact()?;
        let version = fact.version().unwrap_or_default();
        let watched = self.watched();
        if self.read_at != Some((version, watched.len())) {
            let fresh = read_positions(
                fact,
                FACT_TABLE,
                &self.stream,
                &watched,
                self.byte_positions,
            )
            .await?;
            self.positions = fresh;
            self.read_at = Some((version, watched.len()));
        }
        Ok(&self.positions)
    }

    /// Opens (or creates) the tables, completes a batch whose quarantine
    /// commit a crash cut off, and returns the stream's committed positions.
    ///
    /// # Errors
    /// The lake is in txpipe's pre-Delta format, a log is unreadable, or the
    /// store failed.
    pub async fn recover(&mut self) -> Result<BTreeMap<i32, SourcePosition>> {
        self.refresh().await?;
        let target: BTreeMap<i32, i64> = self
            .positions
            .iter()
            .map(|(p, x)| (*p, x.next_offset))
            .collect();
        self.roll_forward_quarantine_to(&target).await?;
        Ok(self.positions.clone())
    }

    /// Commits the quarantine parts of the stream's fact commits that the
    /// quarantine table is missing (a crash between a batch's two commits),
    /// up to `target` (per partition, the fact position to reach).
    async fn roll_forward_quarantine_to(&mut self, target: &BTreeMap<i32, i64>) -> Result<()> {
        if target.is_empty() {
            return Ok(());
        }
        self.tables(true).await?;
        let stream = self.stream.clone();
        let parts: BTreeSet<i32> = target.keys().copied().collect();
        let q = self.quarantine_mut()?;
        q.update_incremental(None)
            .await
            .map_err(|e| delta_error(QUARANTINE_TABLE, e))?;
        let q_at: BTreeMap<i32, i64> = read_positions(q, QUARANTINE_TABLE, &stream, &parts, false)
            .await?
            .into_iter()
            .map(|(p, pos)| (p, pos.next_offset))
            .collect();
        let behind: BTreeMap<i32, (Option<i64>, i64)> = target
            .iter()
            .filter(|(p, t)| q_at.get(p).is_none_or(|q| q < *t))
            .map(|(p, t)| (*p, (q_at.get(p).copied(), *t)))
            .collect();
        if behind.is_empty() {
            return Ok(());
        }
        // Walk the fact log back, collecting this stream's commits whose end
        // lies in (quarantine position, target] for a lagging partition,
        // until every lagging partition reaches a commit the quarantine has.
        let fact = self.fact()?;
        let store = fact.log_store();
        let latest = fact.version().unwrap_or_default();
        let oldest = latest.saturating_sub(ROLL_FORWARD_SEARCH);
        let mut open: BTreeSet<i32> = behind.keys().copied().collect();
        let mut entries: Vec<CommitEntry> = Vec::new();
        let mut v = latest;
        while !open.is_empty() {
            let bytes = store
                .read_commit_entry(v)
                .await
                .map_err(|e| delta_error(FACT_TABLE, e))?;
            if let Some(e) = bytes.and_then(|b| commit_entry_of(&b, v)) {
                if e.stream == self.stream {
                    let mut missing = false;
                    for (p, (q, t)) in &behind {
                        let Some(end) = e.positions.get(p).map(|x| x.next_offset) else {
                            continue;
                        };
                        if q.is_some_and(|q| end <= q) {
                            open.remove(p);
                        } else if end <= *t {
                            missing = true;
                        }
                    }
                    if missing {
                        entries.push(e);
                    }
                }
            }
            if v == oldest || v == 0 {
                break;
            }
            v -= 1;
        }
        for e in entries.into_iter().rev() {
            let files: Vec<FileAction> = e
                .files
                .iter()
                .filter(|f| f.table == QUARANTINE_TABLE)
                .cloned()
                .collect();
            self.commit_quarantine(&files, &e.positions).await?;
        }
        Ok(())
    }

    /// Commits quarantine files with the batch's positions, unless the
    /// quarantine table already holds them (a roll forward raced us).
    async fn commit_quarantine(
        &mut self,
        files: &[FileAction],
        positions: &BTreeMap<i32, SourcePosition>,
    ) -> Result<()> {
        let stream = self.stream.clone();
        let parts: BTreeSet<i32> = positions.keys().copied().collect();
        for attempt in 0..2 {
            let q = self.quarantine_mut()?;
            q.update_incremental(None)
                .await
                .map_err(|e| delta_error(QUARANTINE_TABLE, e))?;
            let at = read_positions(q, QUARANTINE_TABLE, &stream, &parts, false).await?;
            // Partitions the quarantine already holds past this batch keep
            // their (later) position; the files are still this batch's.
            let advancing: BTreeMap<i32, SourcePosition> = positions
                .iter()
                .filter(|(p, pos)| at.get(p).is_none_or(|x| x.next_offset < pos.next_offset))
                .map(|(p, pos)| (*p, *pos))
                .collect();
            if advancing.is_empty() {
                return Ok(());
            }
            let snapshot = q.snapshot().map_err(|e| delta_error(QUARANTINE_TABLE, e))?;
            let props = commit_properties(q)
                .with_application_transactions(transactions(&stream, &advancing));
            let result = CommitBuilder::from(props)
                .with_actions(files.iter().map(add_of).collect())
                .build(Some(snapshot), q.log_store(), append(RECEIVED_DATE))
                .await;
            match result {
                Ok(done) => {
                    q.state = Some(done.snapshot());
                    return Ok(());
                }
                Err(e) if is_txn_conflict(&e) && attempt == 0 => continue,
                Err(e) => return Err(delta_error(QUARANTINE_TABLE, e)),
            }
        }
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

    /// Writes, commits and returns one batch.
    ///
    /// # Errors
    /// [`Error::CommitConflict`] when another writer already committed part of
    /// the batch's source range (nothing is committed and the batch's files
    /// are deleted); otherwise the log or the store failed.
    pub async fn commit(&mut self, batch: EncodedBatch) -> Result<CommitEntry> {
        self.tables(true).await?;
        self.track(batch.positions.keys().copied());
        if self.read_at.is_none() || !self.conflicts(&batch.start_offsets).is_empty() {
            // Our view of the log may be stale: re-read it before deciding.
            self.refresh().await?;
        }
        let conflicts = self.conflicts(&batch.start_offsets);
        if !conflicts.is_empty() {
            return Err(self.conflict(conflicts));
        }
        let start_offsets = batch.start_offsets.clone();
        let mut files = Vec::with_capacity(batch.files.len());
        let mut puts = Vec::with_capacity(batch.files.len());
        for f in batch.files {
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
        let mut entry = CommitEntry {
            version: 0,
            stream: self.stream.clone(),
            source: self.source.clone(),
            positions: batch.positions,
            files,
            counts: batch.counts,
            committed_at: format_rfc3339_millis(now_micros()),
            writer: format!("txpipe {}", env!("CARGO_PKG_VERSION")),
            writer_id: self.writer_id.clone(),
            batch_latency_ms: batch.opened_at.map(|t| t.elapsed().as_millis() as u64),
        };
        let info = serde_json::to_value(&entry)?;
        let fact_adds: Vec<Action> = entry
            .files
            .iter()
            .filter(|f| f.table == FACT_TABLE)
            .map(add_of)
            .collect();
        let stream = self.stream.clone();
        let fact = self.fact_mut()?;
        let snapshot = fact.snapshot().map_err(|e| delta_error(FACT_TABLE, e))?;
        let based_on = snapshot.version();
        let props = commit_properties(fact)
            .with_application_transactions(transactions(&stream, &entry.positions))
            .with_metadata([(COMMIT_INFO_KEY.to_string(), info)]);
        let result = CommitBuilder::from(props)
            .with_actions(fact_adds)
            .build(Some(snapshot), fact.log_store(), append(EVENT_DATE))
            .await;
        match result {
            Ok(done) => {
                entry.version = done.version();
                fact.state = Some(done.snapshot());
            }
            Err(e) if is_txn_conflict(&e) => {
                self.delete_files(&entry.files).await;
                self.refresh().await?;
                let parts = entry.positions.keys().copied().collect();
                return Err(self.conflict(parts));
            }
            Err(e) => {
                // The commit may or may not have landed (an I/O error after
                // the put): keep the files, the next start reads the log.
                return Err(delta_error(FACT_TABLE, e));
            }
        }
        self.positions
            .extend(entry.positions.iter().map(|(p, pos)| (*p, *pos)));
        // delta-rs checks app ids only against commits after the snapshot we
        // committed on: positions stay trusted only when nobody else committed
        // in between; otherwise the next batch re-reads them first.
        self.read_at = if entry.version == based_on + 1 {
            Some((entry.version, self.watched().len()))
        } else {
            None
        };
        let quarantine: Vec<FileAction> = entry
            .files
            .iter()
            .filter(|f| f.table == QUARANTINE_TABLE)
            .cloned()
            .collect();
        // A crashed member's batch may sit between the quarantine's position
        // and this batch: commit its quarantine part first.
        self.roll_forward_quarantine_to(&start_offsets).await?;
        self.commit_quarantine(&quarantine, &entry.positions)
            .await?;
        Ok(entry)
    }
}
