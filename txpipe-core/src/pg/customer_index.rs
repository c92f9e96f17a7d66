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
};
use datafusion::arrow::compute::{cast, concat_batches, interleave_record_batch, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;

use super::column_cache::ColumnCache;
use crate::decode::timestamp::parse_date;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::{EVENT_DATE, FACT_TABLE};

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

/// One data file of the indexed snapshot.
#[derive(Debug)]
struct File {
    /// Table-relative path, e.g. `event_date=2026-11-01/part-….parquet`.
    path: String,
    size: u64,
    meta: ArrowReaderMetadata,
    /// Days since the epoch of the file's `event_date` partition.
    day: i32,
}

/// The index of one snapshot version of the fact table.
#[derive(Debug, Default)]
pub struct CustomerIndex {
    version: Option<u64>,
    files: Vec<Arc<File>>,
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
    files: Vec<(Arc<File>, Vec<u32>)>,
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
        if self.by_path.keys().any(|p| !current.contains(p.as_str())) {
            *self = CustomerIndex::default();
        }
        let added: Vec<(String, u64)> = files
            .into_iter()
            .filter(|(p, _)| !self.by_path.contains_key(p))
            .collect();
        let store = Arc::clone(lake.store());
        let mut read = futures::stream::iter(added.into_iter().map(|(path, size)| {
            let store = Arc::clone(&store);
            let location = lake.path(&format!("{FACT_TABLE}/{path}"));
            async move { read_keys(store, location, path, size).await }
        }))
        .buffered(READ_AHEAD);
        // Customers given rows by this update: their rows are put in order
        // (newest first, at most DEPTH) once all files are in.
        let mut touched: Vec<Box<str>> = Vec::new();
        while let Some((file, keys)) = read.try_next().await? {
            let id = u32::try_from(self.files.len())
                .map_err(|_| Error::Config("too many files to index".into()))?;
            self.by_path.insert(file.path.clone(), id);
            self.files.push(Arc::new(file));
            for (row, (customer, ts)) in keys.into_iter().enumerate() {
                let loc = Loc {
                    ts,
                    file: id,
                    row: row as u32,
                };
                self.entries += 1;
                match self.customers.get_mut(customer.as_str()) {
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
        let mut files: Vec<(Arc<File>, Vec<u32>)> = Vec::new();
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

/// Reads one file's footer and its `customer_id` and `transaction_ts`.
async fn read_keys(
    store: Arc<dyn ObjectStore>,
    location: object_store::path::Path,
    path: String,
    size: u64,
) -> Result<(File, Vec<(String, i64)>)> {
    let fail = |e: parquet::errors::ParquetError| Error::Config(format!("indexing {path}: {e}"));
    let day = partition_day(&path)?;
    let mut reader = file_reader(&store, &location, size)?;
    let meta = ArrowReaderMetadata::load_async(
        &mut reader,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
    )
    .await
    .map_err(fail)?;
    let mask = ProjectionMask::columns(
        meta.metadata().file_metadata().schema_descr(),
        ["customer_id", "transaction_ts"],
    );
    let batches: Vec<RecordBatch> =
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone())
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(fail)?
            .try_collect()
            .await
            .map_err(fail)?;
    let mut keys = Vec::new();
    for batch in &batches {
        let (Some(customers), Some(ts)) = (
            batch.column_by_name("customer_id"),
            batch.column_by_name("transaction_ts"),
        ) else {
            return Err(Error::Config(format!(
                "indexing {path}: no customer_id or transaction_ts column"
            )));
        };
        let customers = cast(customers, &datafusion::arrow::datatypes::DataType::Utf8)?;
        let customers = customers.as_string::<i32>();
        let ts = ts
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| Error::Config(format!("indexing {path}: transaction_ts is not µs")))?;
        for i in 0..batch.num_rows() {
            keys.push((customers.value(i).to_string(), ts.value(i)));
        }
    }
    Ok((
        File {
            path,
            size,
            meta,
            day,
        },
        keys,
    ))
}

/// A Parquet reader of the object at `location` (`size` bytes), through
/// DataFusion's reader (ranged `GET`s of the store).
fn file_reader(
    store: &Arc<dyn ObjectStore>,
    location: &object_store::path::Path,
    size: u64,
) -> Result<Box<dyn AsyncFileReader>> {
    let file = PartitionedFile::new(location.to_string(), size);
    let reader = DefaultParquetFileReaderFactory::new(Arc::clone(store)).create_reader(
        0,
        file,
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    Ok(reader)
}

/// Days since the epoch of the `event_date=YYYY-MM-DD` folder in `path`.
fn partition_day(path: &str) -> Result<i32> {
    let prefix = format!("{EVENT_DATE}=");
    let value = path
        .split('/')
        .find_map(|part| part.strip_prefix(prefix.as_str()))
        .ok_or_else(|| Error::Config(format!("{path}: no {EVENT_DATE}= folder")))?;
    let day = parse_date(value)
        .and_then(|d| i32::try_from(d).ok())
        .ok_or_else(|| Error::Config(format!("{path}: bad {EVENT_DATE} '{value}'")))?;
    Ok(day)
}

impl Picked {
    /// Reads the picked rows from their files, in the picked order, as
    /// columns of `schema` (each taken from the files by name and cast to
    /// the schema's type; `event_date` from the files' partition folder).
    /// With a `cache` budget, whole decoded columns of the files are kept
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
        let store = Arc::clone(lake.store());
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
        let mut per_file = Vec::with_capacity(self.files.len());
        for (file, rows) in &self.files {
            let columns = if cache.budget() == 0 {
                read_rows(&store, lake, file, rows, &stored).await?
            } else {
                take_rows(&store, lake, file, rows, &stored, cache).await?
            };
            per_file.push(conform(&file.path, columns, &stored, rows.len())?);
        }
        let batches: Vec<&RecordBatch> = per_file.iter().collect();
        let picked = match batches.is_empty() {
            true => RecordBatch::new_empty(Arc::clone(&stored)),
            false => interleave_record_batch(&batches, &self.order)?,
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

/// One file's rows as columns of `stored`: each found by name and cast to
/// its type; a column the file does not have (written before the column
/// was added) is NULL, as in any Delta reader.
fn conform(
    path: &str,
    columns: HashMap<String, ArrayRef>,
    stored: &SchemaRef,
    rows: usize,
) -> Result<RecordBatch> {
    let mut out = Vec::with_capacity(stored.fields().len());
    for field in stored.fields() {
        let column = match columns.get(field.name()) {
            Some(c) if c.len() != rows => {
                return Err(Error::Config(format!(
                    "{path}: {} rows of {} read for {rows} indexed",
                    c.len(),
                    field.name()
                )))
            }
            Some(c) if c.data_type() == field.data_type() => Arc::clone(c),
            Some(c) => cast(c, field.data_type())?,
            None => new_null_array(field.data_type(), rows),
        };
        out.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(stored),
        out,
        &options,
    )?)
}

/// The rows `rows` (ascending) of one file, in the file's columns that
/// `stored` names, taken from whole columns kept in `cache` (those missing
/// there are read and put there first). Columns the file lacks are absent.
async fn take_rows(
    store: &Arc<dyn ObjectStore>,
    lake: &Lake,
    file: &File,
    rows: &[u32],
    stored: &SchemaRef,
    cache: &ColumnCache,
) -> Result<HashMap<String, ArrayRef>> {
    let mut whole: HashMap<String, ArrayRef> = HashMap::new();
    let mut missing = Vec::new();
    for name in stored.fields().iter().map(|f| f.name()) {
        match cache.get(&file.path, name) {
            Some(column) => {
                whole.insert(name.clone(), column);
            }
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        let read = read_columns(store, lake, file, &missing).await?;
        for (field, column) in read.schema().fields().iter().zip(read.columns()) {
            cache.put(&file.path, field.name(), Arc::clone(column));
            whole.insert(field.name().clone(), Arc::clone(column));
        }
    }
    let indices = datafusion::arrow::array::UInt32Array::from(rows.to_vec());
    let mut taken = HashMap::with_capacity(whole.len());
    for (name, column) in whole {
        if rows.iter().any(|&r| r as usize >= column.len()) {
            return Err(Error::Config(format!(
                "{}: an indexed row is past the end of the file",
                file.path
            )));
        }
        taken.insert(name, take(column.as_ref(), &indices, None)?);
    }
    Ok(taken)
}

/// Every row of the columns `names` of one file.
async fn read_columns(
    store: &Arc<dyn ObjectStore>,
    lake: &Lake,
    file: &File,
    names: &[&str],
) -> Result<RecordBatch> {
    let fail =
        |e: parquet::errors::ParquetError| Error::Config(format!("reading {}: {e}", file.path));
    let location = lake.path(&format!("{FACT_TABLE}/{}", file.path));
    let reader = file_reader(store, &location, file.size)?;
    let parquet_meta = file.meta.metadata();
    let rows = parquet_meta.file_metadata().num_rows().max(1) as usize;
    let mask = ProjectionMask::columns(
        parquet_meta.file_metadata().schema_descr(),
        names.iter().copied(),
    );
    let builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.meta.clone())
        .with_projection(mask)
        .with_batch_size(rows);
    let schema = Arc::clone(builder.schema());
    let batches: Vec<RecordBatch> = builder
        .build()
        .map_err(fail)?
        .try_collect()
        .await
        .map_err(fail)?;
    let projected = match batches.first() {
        Some(b) => b.schema(),
        None => schema,
    };
    Ok(concat_batches(&projected, &batches)?)
}

/// The rows `rows` (ascending) of one file, in the file's columns that
/// `stored` names, read from the pages that hold them. Columns the file
/// lacks are absent.
async fn read_rows(
    store: &Arc<dyn ObjectStore>,
    lake: &Lake,
    file: &File,
    rows: &[u32],
    stored: &SchemaRef,
) -> Result<HashMap<String, ArrayRef>> {
    let fail =
        |e: parquet::errors::ParquetError| Error::Config(format!("reading {}: {e}", file.path));
    let location = lake.path(&format!("{FACT_TABLE}/{}", file.path));
    let reader = file_reader(store, &location, file.size)?;
    let parquet_meta = file.meta.metadata();
    let names = stored.fields().iter().map(|f| f.name().as_str());
    let mask = ProjectionMask::columns(parquet_meta.file_metadata().schema_descr(), names);
    // The row groups holding the rows, and the rows within them.
    let mut groups = Vec::new();
    let mut ranges = Vec::new();
    let mut start = 0usize;
    let mut next = 0usize;
    let mut offset = 0usize;
    for (g, group) in parquet_meta.row_groups().iter().enumerate() {
        let len = group.num_rows() as usize;
        let end = start + len;
        let first = next;
        while next < rows.len() && (rows[next] as usize) < end {
            next += 1;
        }
        if next > first {
            groups.push(g);
            for &r in &rows[first..next] {
                let at = offset + r as usize - start;
                ranges.push(at..at + 1);
            }
            offset += len;
        }
        start = end;
    }
    let selection = RowSelection::from_consecutive_ranges(ranges.into_iter(), offset);
    let batches: Vec<RecordBatch> =
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.meta.clone())
            .with_projection(mask)
            .with_row_groups(groups)
            .with_row_selection(selection)
            .build()
            .map_err(fail)?
            .try_collect()
            .await
            .map_err(fail)?;
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => {
            return Err(Error::Config(format!(
                "{}: the indexed rows were not found",
                file.path
            )))
        }
    };
    let batch = concat_batches(&schema, &batches)?;
    Ok(batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| (f.name().clone(), Arc::clone(c)))
        .collect())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field};

    use super::*;

    #[test]
    fn a_file_without_a_later_column_gives_nulls_and_types_follow_the_result() {
        let stored = Arc::new(Schema::new(vec![
            Field::new("transaction_id", DataType::Utf8, true),
            Field::new("source_partition", DataType::Int64, true),
            Field::new("risk_score", DataType::Float64, true),
        ]));
        let mut columns: HashMap<String, ArrayRef> = HashMap::new();
        columns.insert(
            "transaction_id".into(),
            Arc::new(StringArray::from(vec!["a", "b"])),
        );
        columns.insert(
            "source_partition".into(),
            Arc::new(Int32Array::from(vec![1, 2])),
        );
        let batch = conform("f.parquet", columns.clone(), &stored, 2).unwrap();
        assert_eq!(batch.schema(), stored);
        assert_eq!(batch.column(2).null_count(), 2);
        assert_eq!(
            batch
                .column(1)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values(),
            &[1, 2]
        );
        // Fewer rows than indexed is an error, not a short answer.
        assert!(conform("f.parquet", columns, &stored, 3).is_err());
    }

    #[test]
    fn partition_days_come_from_the_folder() {
        assert_eq!(
            partition_day("event_date=1970-01-02/part-1.parquet").unwrap(),
            1
        );
        assert!(partition_day("part-1.parquet").is_err());
        assert!(partition_day("event_date=2026-13-01/part-1.parquet").is_err());
    }
}
