//! A customer's newest transactions without a scan: an index of the fact
//! table kept per committed Delta version.
//!
//! For every customer the index holds where its [`DEPTH`] newest rows are
//! (data file, row number, `transaction_ts`), newest first, and the Parquet
//! footer (with page index) of every data file. A lookup of the `n` newest
//! rows of one customer then reads those rows only, through a row selection
//! on the files that hold them, instead of opening every day-file of the
//! table the way a filtered scan must.
//!
//! The index follows the table's snapshot: files added by a commit (an
//! ingest) are read and merged in; a commit that removes files (compaction)
//! makes the next lookup rebuild it from the snapshot's files. Memory is
//! bounded by customers × [`DEPTH`] × 16 bytes plus one footer per file, and
//! refused beyond [`MAX_ENTRIES`] (lookups then go through DataFusion).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, Date32Array, RecordBatch, RecordBatchOptions,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, interleave, interleave_record_batch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use futures::{StreamExt, TryStreamExt};

use super::column_cache::ColumnCache;
use super::data_file::{conform, DataFile};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::EVENT_DATE;

/// Newest rows kept per customer: a lookup of up to this many rows (and of
/// all rows of a customer who has no more) is answered from the index.
pub const DEPTH: usize = 256;

/// Most row locations the index holds (16 bytes each, ~1 GiB); a table
/// that needs more is not indexed.
pub const MAX_ENTRIES: usize = 64 << 20;

/// Files whose footers are read at once while (re)building.
const READ_AHEAD: usize = 8;

/// Where one row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    ts: i64,
    file: u32,
    row: u32,
}

/// One customer's newest rows, newest first.
#[derive(Debug, Default)]
struct Entry {
    locs: Vec<Loc>,
    /// Older rows exist that are not in `locs`.
    truncated: bool,
    /// Rows were added and not yet put in order.
    dirty: bool,
}

/// The index of one snapshot version of the fact table.
#[derive(Debug, Default)]
pub struct CustomerIndex {
    version: Option<u64>,
    files: Vec<Arc<DataFile>>,
    by_path: HashMap<String, u32>,
    customers: HashMap<Box<str>, Entry>,
    entries: usize,
    /// The table needed more than [`MAX_ENTRIES`]: not indexed again (until
    /// a restart), every lookup is DataFusion's.
    too_large: bool,
}

/// The rows a lookup must read: per file, its row numbers; and the order
/// they are returned in.
#[derive(Debug)]
pub struct Picked {
    files: Vec<(Arc<DataFile>, Vec<u32>)>,
    /// (index into `files`, index into that file's rows), newest first.
    order: Vec<(usize, usize)>,
}

impl CustomerIndex {
    /// The version indexed, if any.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Brings the index to `version`, whose data files are `files`
    /// (table-relative path, size): new files are read in; when a file was
    /// removed, the index is rebuilt.
    ///
    /// # Errors
    /// A file could not be read, or the table is too large to index.
    pub async fn update(
        &mut self,
        lake: &Lake,
        version: u64,
        files: Vec<(String, u64)>,
    ) -> Result<()> {
        if self.too_large {
            return Err(too_large());
        }
        if self.version == Some(version) {
            return Ok(());
        }
        let outcome = self.apply(lake, version, files).await;
        if outcome.is_err() {
            // A half-applied update (a file that could not be read) leaves
            // rows out of order: start again at the next lookup.
            *self = CustomerIndex {
                too_large: self.too_large,
                ..CustomerIndex::default()
            };
        }
        outcome
    }

    async fn apply(&mut self, lake: &Lake, version: u64, files: Vec<(String, u64)>) -> Result<()> {
        let current: HashSet<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        // Files kept from the index being replaced: their footers need no
        // second read, and their blocks stay in the cache (same file id).
        let mut opened: HashMap<String, Arc<DataFile>> = HashMap::new();
        if self.by_path.keys().any(|p| !current.contains(p.as_str())) {
            let old = std::mem::take(self);
            opened = old
                .files
                .into_iter()
                .filter(|f| current.contains(f.path.as_str()))
                .map(|f| (f.path.clone(), f))
                .collect();
        }
        let added: Vec<(String, u64)> = files
            .into_iter()
            .filter(|(p, _)| !self.by_path.contains_key(p))
            .collect();
        let mut read = futures::stream::iter(added.into_iter().map(|(path, size)| {
            let known = opened.remove(&path);
            read_keys(lake, path, size, known)
        }))
        .buffered(READ_AHEAD);
        // Customers given rows by this update: their rows are put in order
        // (newest first, at most DEPTH) once all files are in.
        let mut touched: Vec<Box<str>> = Vec::new();
        while let Some((file, keys)) = read.try_next().await? {
            let id = u32::try_from(self.files.len())
                .map_err(|_| Error::Config("too many files to index".into()))?;
            self.by_path.insert(file.path.clone(), id);
            self.files.push(file);
            for row in 0..keys.customers.len() {
                let customer = keys.customers.value(row);
                let loc = Loc {
                    ts: keys.ts.value(row),
                    file: id,
                    row: row as u32,
                };
                self.entries += 1;
                match self.customers.get_mut(customer) {
                    Some(entry) => {
                        if !entry.dirty {
                            entry.dirty = true;
                            touched.push(customer.into());
                        }
                        if entry.locs.len() == 2 * DEPTH {
                            self.entries -= trim(entry);
                        }
                        entry.locs.push(loc);
                    }
                    None => {
                        let key: Box<str> = customer.into();
                        touched.push(key.clone());
                        let entry = Entry {
                            locs: vec![loc],
                            truncated: false,
                            dirty: true,
                        };
                        self.customers.insert(key, entry);
                    }
                }
            }
        }
        for key in touched {
            if let Some(entry) = self.customers.get_mut(&key) {
                entry.dirty = false;
                self.entries -= trim(entry);
            }
        }
        if self.entries > MAX_ENTRIES {
            self.too_large = true;
            return Err(too_large());
        }
        self.version = Some(version);
        Ok(())
    }

    /// The `n` newest rows of `customer` (all of them when `n` is `None`),
    /// or `None` when the index cannot say (more rows than it keeps).
    pub fn pick(&self, customer: &str, n: Option<usize>) -> Option<Picked> {
        let locs: &[Loc] = match self.customers.get(customer) {
            Some(entry) => {
                let wanted = match n {
                    Some(n) if n <= entry.locs.len() => n,
                    _ if entry.truncated => return None,
                    _ => entry.locs.len(),
                };
                &entry.locs[..wanted]
            }
            None => &[],
        };
        let mut files: Vec<(Arc<DataFile>, Vec<u32>)> = Vec::new();
        let mut slot: HashMap<u32, usize> = HashMap::new();
        // (file slot, row, place in the result): each file is read in row order.
        let mut rows: Vec<(usize, u32, usize)> = Vec::with_capacity(locs.len());
        for (place, loc) in locs.iter().enumerate() {
            let f = *slot.entry(loc.file).or_insert_with(|| {
                files.push((Arc::clone(&self.files[loc.file as usize]), Vec::new()));
                files.len() - 1
            });
            rows.push((f, loc.row, place));
        }
        rows.sort_unstable();
        let mut order = vec![(0, 0); locs.len()];
        for (f, row, place) in rows {
            let list = &mut files[f].1;
            order[place] = (f, list.len());
            list.push(row);
        }
        Some(Picked { files, order })
    }
}

fn too_large() -> Error {
    Error::Config(format!(
        "the fact table needs more than {MAX_ENTRIES} index entries; lookups scan it"
    ))
}

/// Keeps an entry's [`DEPTH`] newest rows; returns how many it dropped.
fn trim(entry: &mut Entry) -> usize {
    entry.locs.sort_unstable_by(|a, b| {
        b.ts.cmp(&a.ts)
            .then(b.file.cmp(&a.file))
            .then(b.row.cmp(&a.row))
    });
    if entry.locs.len() <= DEPTH {
        return 0;
    }
    let dropped = entry.locs.len() - DEPTH;
    entry.locs.truncate(DEPTH);
    entry.truncated = true;
    dropped
}

/// Opens one file (unless `known` already is) and reads its `customer_id`
/// and `transaction_ts`.
async fn read_keys(
    lake: &Lake,
    path: String,
    size: u64,
    known: Option<Arc<DataFile>>,
) -> Result<(Arc<DataFile>, Keys)> {
    let file = match known {
        Some(f) => f,
        None => Arc::new(DataFile::open(lake, path, size).await?),
    };
    let batch = file
        .read(lake, ["customer_id", "transaction_ts"], |b| {
            b.with_batch_size(64 * 1024)
        })
        .await?;
    let (Some(customers), Some(ts)) = (
        batch.column_by_name("customer_id"),
        batch.column_by_name("transaction_ts"),
    ) else {
        return Err(Error::Config(format!(
            "indexing {}: no customer_id or transaction_ts column",
            file.path
        )));
    };
    let customers = cast(customers, &DataType::Utf8)?;
    let customers = customers.as_string::<i32>();
    let ts = ts
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| {
            Error::Config(format!("indexing {}: transaction_ts is not µs", file.path))
        })?;
    Ok((
        file,
        Keys {
            customers: customers.clone(),
            ts: ts.clone(),
        },
    ))
}

/// A file's `customer_id` and `transaction_ts`, row by row.
struct Keys {
    customers: StringArray,
    ts: TimestampMicrosecondArray,
}

impl Picked {
    /// The picked rows as columns of `stored`, read from their pages.
    async fn read_pages(&self, lake: &Lake, stored: &SchemaRef) -> Result<RecordBatch> {
        let mut per_file = Vec::with_capacity(self.files.len());
        for (file, rows) in &self.files {
            let columns = file.rows_from_pages(lake, rows, stored).await?;
            per_file.push(conform(&file.path, columns, stored, rows.len())?);
        }
        let batches: Vec<&RecordBatch> = per_file.iter().collect();
        Ok(match batches.is_empty() {
            true => RecordBatch::new_empty(Arc::clone(stored)),
            false => interleave_record_batch(&batches, &self.order)?,
        })
    }

    /// The picked rows as columns of `stored`, taken from the decoded
    /// blocks in `cache`: one interleave per column over all files' blocks.
    async fn read_blocks(
        &self,
        lake: &Lake,
        stored: &SchemaRef,
        cache: &ColumnCache,
    ) -> Result<RecordBatch> {
        let mut per_file = Vec::with_capacity(self.files.len());
        for (file, rows) in &self.files {
            per_file.push(file.blocks(lake, rows, stored, cache).await?);
        }
        let mut columns = Vec::with_capacity(stored.fields().len());
        for (at, field) in stored.fields().iter().enumerate() {
            // Every file's blocks of this column one after another (a file
            // without the column: one NULL), and where each file's start.
            let mut arrays: Vec<ArrayRef> = Vec::new();
            let mut base = Vec::with_capacity(per_file.len());
            for blocks in &per_file {
                base.push(arrays.len());
                match &blocks.columns[at] {
                    Some(list) => arrays.extend(list.iter().cloned()),
                    None => arrays.push(new_null_array(field.data_type(), 1)),
                }
            }
            let indices: Vec<(usize, usize)> = self
                .order
                .iter()
                .map(|&(f, i)| match per_file[f].columns[at] {
                    Some(_) => {
                        let (block, row) = per_file[f].picks[i];
                        (base[f] + block, row)
                    }
                    None => (base[f], 0),
                })
                .collect();
            columns.push(match arrays.is_empty() {
                true => new_null_array(field.data_type(), 0),
                false => {
                    let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
                    interleave(&refs, &indices)?
                }
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.order.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(stored),
            columns,
            &options,
        )?)
    }

    /// Reads the picked rows from their files, in the picked order, as
    /// columns of `schema` (each taken from the files by name and cast to
    /// the schema's type; `event_date` from the files' partition folder).
    /// With a `cache` budget, decoded blocks of the files' rows are kept
    /// there and the rows taken from them; without, only the pages around
    /// the rows are read.
    ///
    /// # Errors
    /// A file could not be read, or a column is not in it.
    pub async fn read(
        &self,
        lake: &Lake,
        schema: &SchemaRef,
        cache: &ColumnCache,
    ) -> Result<RecordBatch> {
        // The columns kept in the files (all but the partition column), as
        // the result types them: every file's rows are brought to these.
        let stored = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| f.name() != EVENT_DATE)
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let picked = match cache.budget() {
            0 => self.read_pages(lake, &stored).await?,
            _ => self.read_blocks(lake, &stored, cache).await?,
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column: ArrayRef = if field.name() == EVENT_DATE {
                let days: Date32Array = self
                    .order
                    .iter()
                    .map(|&(f, _)| Some(self.files[f].0.day))
                    .collect();
                cast(&(Arc::new(days) as ArrayRef), field.data_type())?
            } else {
                picked
                    .column_by_name(field.name())
                    .cloned()
                    .ok_or_else(|| Error::Config(format!("no column {}", field.name())))?
            };
            columns.push(column);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(self.order.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &options,
        )?)
    }
}
