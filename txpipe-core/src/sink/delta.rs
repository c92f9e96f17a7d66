//! The lake's tables are Delta Lake tables, kept through delta-rs.
//!
//! Every table folder (`fact_transaction`, `quarantine`, `dim_*`, `fx_rate`,
//! `marts/<model>`) holds its Parquet files in hive partition folders and a
//! `_delta_log/` whose commits say which files are the table. Readers that
//! speak Delta (DuckDB `delta_scan`, Python `deltalake`, polars, Spark, Trino)
//! see exactly the committed files; txpipe itself reads through delta-rs'
//! DataFusion table provider.
//!
//! This module opens and creates tables on the lake's own object store and
//! replaces small tables (dimensions, marts) atomically. The streaming
//! commits of the fact and quarantine tables live in
//! [`LakeWriter`](super::LakeWriter).

use std::collections::HashMap;
use std::sync::{Arc, Once};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake_core::kernel::{new_metadata, Action, Add, StructType};
use deltalake_core::logstore::{
    default_logstore, logstore_factories, LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig,
};
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::table::config::TablePropertiesExt as _;
use deltalake_core::{DeltaResult, DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use url::Url;

use super::file_stats::delta_stats;
use super::parquet::{decode, encode, writer_properties};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Commits between two Delta checkpoints, unless a table says otherwise.
///
/// Opening a table reads its newest checkpoint and at most this many commit
/// files after it, however old the table is.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 100;

/// How long commit files are kept after a newer checkpoint covers them
/// (Delta's default; the log is cleaned up when a checkpoint is written).
pub const LOG_RETENTION: &str = "interval 30 days";

/// Schemes whose lakes are opened on our own object store with delta-rs'
/// default log store (conditional puts: `If-None-Match: *` on S3).
const REMOTE_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure"];

/// A log store factory that wraps the object store the lake already built.
#[derive(Debug, Default)]
struct LakeLogStores;

impl LogStoreFactory for LakeLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// Lets delta-rs open tables on object store URLs (it knows only `file://`
/// and `memory://` by itself). Idempotent.
fn register_schemes() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let registry = logstore_factories();
        for scheme in REMOTE_SCHEMES {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                registry.insert(url, Arc::new(LakeLogStores));
            }
        }
    });
}

/// Wraps a delta-rs error with the table it concerns.
pub fn delta_error(table: &str, e: DeltaTableError) -> Error {
    Error::Delta {
        table: table.to_string(),
        source: Box::new(e),
    }
}

/// Wraps a delta-rs error with where the table is (its folder, or its URL on
/// an object store): delta-rs' own message does not always name a file, e.g.
/// when the disk is full.
pub fn delta_error_at(lake: &Lake, rel: &str, e: DeltaTableError) -> Error {
    delta_error(&table_location(lake, rel), e)
}

/// Where the table at `rel` is, for messages: a local folder or a URL
/// (without credentials), ending in `/`.
pub fn table_location(lake: &Lake, rel: &str) -> String {
    format!("{}/", lake.describe(rel))
}

/// URL of a table folder (`rel` relative to the lake root), ending in `/`.
///
/// # Errors
/// `rel` does not make a valid URL under the lake.
pub fn table_url(lake: &Lake, rel: &str) -> Result<Url> {
    let rel = rel.trim_matches('/');
    lake.url()
        .join(&format!("{rel}/"))
        .map_err(|e| Error::Config(format!("table {rel} under {}: {e}", lake.url())))
}

/// An unloaded handle on the table at `rel` (its log store works; nothing is read).
pub fn handle(lake: &Lake, rel: &str) -> Result<DeltaTable> {
    register_schemes();
    let url = table_url(lake, rel)?;
    DeltaTableBuilder::from_url(url.clone())
        .and_then(|b| b.with_storage_backend(lake.store().clone(), url).build())
        .map_err(|e| delta_error_at(lake, rel, e))
}

/// Opens the Delta table at `rel` at its newest version; `None` when the
/// folder holds no Delta table (no `_delta_log`).
///
/// # Errors
/// The log is unreadable (a missing or corrupt commit or checkpoint file:
/// the error names it) or the store failed.
pub async fn open(lake: &Lake, rel: &str) -> Result<Option<DeltaTable>> {
    if let Some(root) = lake.local_root() {
        // delta-rs refuses a local table folder that does not exist.
        if !root.join(rel.trim_matches('/')).join("_delta_log").is_dir() {
            return Ok(None);
        }
    }
    let mut table = handle(lake, rel)?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(DeltaTableError::NotATable(_)) => Ok(None),
        Err(e) => Err(match diagnose_log(lake, rel).await {
            Some(what) => Error::CommitLog(format!("table {rel}: {what} (delta-rs: {e})")),
            None => delta_error_at(lake, rel, e),
        }),
    }
}

/// Finds what is wrong with a table's log when delta-rs cannot load it: a
/// commit file missing from the sequence, or one that is not JSON lines.
async fn diagnose_log(lake: &Lake, rel: &str) -> Option<String> {
    let dir = format!("{}/_delta_log", rel.trim_matches('/'));
    let listed = lake.list(&dir).await.ok()?;
    let mut commits: Vec<u64> = Vec::new();
    let mut checkpoint = None::<u64>;
    for m in &listed {
        let name = m.location.filename()?;
        let version = name.get(..20).and_then(|v| v.parse::<u64>().ok());
        match version {
            Some(v) if name.len() == 25 && name.ends_with(".json") => commits.push(v),
            Some(v) if name.contains(".checkpoint") => {
                checkpoint = Some(checkpoint.map_or(v, |c| c.max(v)));
            }
            _ => {}
        }
    }
    commits.sort_unstable();
    let start = checkpoint.map_or(0, |c| c + 1);
    let mut expected = start;
    for v in commits.iter().copied().filter(|v| *v >= start) {
        if v != expected {
            return Some(format!("{dir}/{expected:020}.json is missing"));
        }
        expected += 1;
    }
    for v in commits.iter().copied().filter(|v| *v >= start) {
        let path = format!("{dir}/{v:020}.json");
        let bytes = lake.get(&path).await.ok()??;
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(line) {
                return Some(format!("{path} is corrupt: line {}: {e}", i + 1));
            }
        }
    }
    None
}

/// How a new table is laid out.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Data columns, as in the Parquet files.
    pub schema: SchemaRef,
    /// Hive partition column (a `date`, not in the files), if any.
    pub partition: Option<String>,
    /// Commits between checkpoints.
    pub checkpoint_interval: u64,
}

impl TableSpec {
    /// An unpartitioned table with the default checkpoint interval.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            partition: None,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }

    /// Partitioned by the date column `column`.
    pub fn partitioned_by(mut self, column: &str) -> Self {
        self.partition = Some(column.to_string());
        self
    }

    /// Checkpoint every `n` commits (at least 1).
    pub fn checkpoint_every(mut self, n: u64) -> Self {
        self.checkpoint_interval = n.max(1);
        self
    }

    /// The table's columns as Delta sees them: data columns, then the partition column.
    pub fn table_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if let Some(p) = &self.partition {
            fields.push(Field::new(p, DataType::Date32, false));
        }
        Arc::new(Schema::new(fields))
    }

    pub(crate) fn kernel_schema(&self, rel: &str) -> Result<StructType> {
        self.table_schema().as_ref().try_into_kernel().map_err(|e| {
            Error::Config(format!(
                "table {rel}: schema not representable in Delta: {e}"
            ))
        })
    }

    pub(crate) fn configuration(&self) -> Vec<(String, String)> {
        vec![
            (
                TableProperty::CheckpointInterval.as_ref().to_string(),
                self.checkpoint_interval.to_string(),
            ),
            (
                TableProperty::LogRetentionDuration.as_ref().to_string(),
                LOG_RETENTION.to_string(),
            ),
        ]
    }
}

/// Opens the table at `rel`, creating it as `spec` describes when it does not exist.
///
/// Two processes creating the same table at once both end with one table.
///
/// # Errors
/// See [`open`]; creating failed.
pub async fn open_or_create(lake: &Lake, rel: &str, spec: &TableSpec) -> Result<DeltaTable> {
    if let Some(t) = open(lake, rel).await? {
        return Ok(t);
    }
    if let Some(root) = lake.local_root() {
        let dir = root.join(rel.trim_matches('/'));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating table folder", dir, e))?;
    }
    let table = handle(lake, rel)?;
    let created = table
        .create()
        .with_columns(spec.kernel_schema(rel)?.fields().cloned())
        .with_partition_columns(spec.partition.clone())
        .with_configuration(spec.configuration().into_iter().map(|(k, v)| (k, Some(v))))
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Lost a race with another creator: the table is there now.
        Err(e) => match open(lake, rel).await? {
            Some(t) => Ok(t),
            None => Err(delta_error_at(lake, rel, e)),
        },
    }
}

/// Adds the columns of `spec` that the table at `rel` lacks, as nullable
/// columns, in one commit (rows written before read them as NULL): how a lake
/// written by an older txpipe gains the new fact columns. Returns the names
/// added (none when the table is missing or complete).
///
/// # Errors
/// A missing column is not nullable, a column changed type, or the commit failed.
pub async fn add_missing_columns(lake: &Lake, rel: &str, spec: &TableSpec) -> Result<Vec<String>> {
    let want = spec.kernel_schema(rel)?;
    for attempt in 0..3 {
        let Some(table) = open(lake, rel).await? else {
            return Ok(Vec::new());
        };
        let have = table
            .snapshot()
            .map_err(|e| delta_error_at(lake, rel, e))?
            .schema();
        let mut missing = Vec::new();
        for f in want.fields() {
            match have.field(f.name()) {
                Some(h) if h.data_type() != f.data_type() => {
                    return Err(Error::Config(format!(
                        "table {rel}: column {} is {:?} in the lake but txpipe writes {:?}",
                        f.name(),
                        h.data_type(),
                        f.data_type()
                    )))
                }
                Some(_) => {}
                None if !f.is_nullable() => {
                    return Err(Error::Config(format!(
                        "table {rel}: the lake lacks the required column {}",
                        f.name()
                    )))
                }
                None => missing.push(f.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let names = missing.iter().map(|f| f.name().to_string()).collect();
        let props = commit_properties(&table);
        match table
            .add_columns()
            .with_fields(missing)
            .with_commit_properties(props)
            .await
        {
            Ok(_) => return Ok(names),
            // Someone else changed the table meanwhile (perhaps adding the
            // same columns): look again.
            Err(_) if attempt < 2 => continue,
            Err(e) => return Err(delta_error_at(lake, rel, e)),
        }
    }
    Ok(Vec::new())
}

/// An `Add` action for a data file written at `path` (relative to the table).
pub fn add_action(path: String, partition: Option<(&str, &str)>, size: u64, stats: String) -> Add {
    Add {
        path,
        partition_values: partition
            .map(|(k, v)| HashMap::from([(k.to_string(), Some(v.to_string()))]))
            .unwrap_or_default(),
        size: size as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats),
        ..Default::default()
    }
}

/// Commit properties of every txpipe commit: checkpoints as the table says,
/// and the log cleanup only when a checkpoint is due (it lists the log).
pub fn commit_properties(table: &DeltaTable) -> CommitProperties {
    let due = table.snapshot().is_ok_and(|s| {
        let every = s.table_config().checkpoint_interval().get();
        (s.version() + 2).is_multiple_of(every)
    });
    CommitProperties::default()
        .with_create_checkpoint(true)
        .with_cleanup_expired_logs(Some(due))
}

/// Replaces the whole content of the small table at `rel` with `batches`,
/// in one Delta commit (created as `spec` when missing; its schema follows
/// `spec` when it changed). The replaced files are deleted right away, so a
/// plain glob of `rel/*.parquet` also reads exactly the new content.
///
/// # Errors
/// Encoding, the commit or the store failed.
pub async fn replace_table(
    lake: &Lake,
    rel: &str,
    spec: &TableSpec,
    batches: &[RecordBatch],
) -> Result<u64> {
    let data = encode(&spec.schema, batches, &writer_properties())?;
    let name = format!("part-{}.parquet", uuid::Uuid::new_v4());
    let size = data.len() as u64;
    lake.put(&format!("{rel}/{name}"), Bytes::from(data))
        .await?;
    replace_with_file(lake, rel, spec, name, size, delta_stats(batches)).await
}

/// Like [`replace_table`] for a file already written at `rel/<name>`.
///
/// # Errors
/// The commit or the store failed.
pub async fn replace_with_file(
    lake: &Lake,
    rel: &str,
    spec: &TableSpec,
    name: String,
    size: u64,
    stats: String,
) -> Result<u64> {
    let mut table = open_or_create(lake, rel, spec).await?;
    let snapshot = table.snapshot().map_err(|e| delta_error_at(lake, rel, e))?;
    let mut actions: Vec<Action> = snapshot
        .log_data()
        .iter()
        .map(|f| Action::Remove(f.remove_action(true)))
        .collect();
    let schema = spec.kernel_schema(rel)?;
    let partitioning: Vec<String> = spec.partition.iter().cloned().collect();
    if snapshot.schema().as_ref() != &schema
        || snapshot.metadata().partition_columns() != &partitioning
    {
        let cfg = spec.configuration();
        let metadata = new_metadata(&schema, spec.partition.iter(), cfg).map_err(|e| {
            Error::Config(format!(
                "table {rel}: new schema not representable in Delta: {e}"
            ))
        })?;
        actions.push(Action::Metadata(metadata));
    }
    actions.push(Action::Add(add_action(name.clone(), None, size, stats)));
    let done = CommitBuilder::from(commit_properties(&table))
        .with_actions(actions)
        .build(
            Some(snapshot),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Overwrite,
                partition_by: spec.partition.clone().map(|p| vec![p]),
                predicate: None,
            },
        )
        .await
        .map_err(|e| delta_error_at(lake, rel, e))?;
    let version = done.version();
    table.state = Some(done.snapshot());
    // Everything in the folder but the new file and the log is gone now.
    for o in lake.list(rel).await? {
        let path = lake.relative(&o.location);
        let inner = path.strip_prefix(&format!("{rel}/")).unwrap_or(&path);
        if inner != name && !inner.starts_with("_delta_log/") {
            lake.delete(&path).await?;
        }
    }
    Ok(version)
}

/// Reads every row of the small table at `rel` (its committed files);
/// empty when the table does not exist.
///
/// # Errors
/// The log or a file is unreadable.
pub async fn read_table(lake: &Lake, rel: &str) -> Result<Vec<RecordBatch>> {
    let Some(table) = open(lake, rel).await? else {
        return Ok(Vec::new());
    };
    let snapshot = table.snapshot().map_err(|e| delta_error_at(lake, rel, e))?;
    let mut out = Vec::new();
    for f in snapshot.log_data().iter() {
        let path = format!("{}/{}", rel.trim_matches('/'), f.path());
        match lake.get(&path).await? {
            Some(bytes) => out.extend(decode(bytes)?),
            None => {
                return Err(Error::CommitLog(format!(
                    "table {rel}: committed file {path} is missing"
                )))
            }
        }
    }
    Ok(out)
}

/// Lake-relative paths of the data files in the current snapshot of the
/// table at `rel` (empty when there is no table).
///
/// # Errors
/// The log is unreadable.
pub async fn committed_files(lake: &Lake, rel: &str) -> Result<Vec<String>> {
    let Some(table) = open(lake, rel).await? else {
        return Ok(Vec::new());
    };
    snapshot_files(&table, rel)
}

/// Lake-relative paths of the data files in `table`'s loaded snapshot (the
/// table at `rel`).
///
/// # Errors
/// The table has no loaded snapshot.
pub fn snapshot_files(table: &DeltaTable, rel: &str) -> Result<Vec<String>> {
    let snapshot = table.snapshot().map_err(|e| delta_error(rel, e))?;
    let rel = rel.trim_matches('/');
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| format!("{rel}/{}", f.path()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// delta-rs' message does not always name a file (a full disk did not):
    /// the error names where the table is, whatever delta-rs said.
    #[test]
    fn delta_errors_name_the_table_location() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(&dir.path().display().to_string()).expect("lake");
        let root = std::fs::canonicalize(dir.path()).expect("canonical path");
        let said = DeltaTableError::Generic("No space left on device (os error 28)".into());
        let text = delta_error_at(&lake, "/quarantine/", said).to_string();
        let expected = format!("delta table {}/quarantine/: ", root.display());
        assert!(text.starts_with(&expected), "{text}");
        assert!(
            text.ends_with("No space left on device (os error 28)"),
            "{text}"
        );

        let memory = Lake::open("memory://").expect("lake");
        let said = DeltaTableError::Generic("gone".into());
        let text = delta_error_at(&memory, "fact_transaction", said).to_string();
        let url = table_url(&memory, "fact_transaction").expect("url");
        assert!(text.starts_with(&format!("delta table {url}: ")), "{text}");
        assert!(url.as_str().ends_with("/fact_transaction/"), "{url}");
    }
}
