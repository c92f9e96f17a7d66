//! One data file of the fact table as point lookups read it: its footer
//! (with page index) loaded once, and given rows of it read either from the
//! pages that hold them or from decoded blocks of rows kept in a
//! [`ColumnCache`].

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::file::metadata::PageIndexPolicy;

use super::column_cache::ColumnCache;
use crate::decode::timestamp::parse_date;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::schema::{EVENT_DATE, FACT_TABLE};

/// Rows per cached block: aligned runs of this many rows of a file are what
/// the [`ColumnCache`] keeps. The page size of Z-ordered files (`txpipe
/// compact --zorder-by`), so that there a block is one page of each column.
pub const BLOCK_ROWS: usize = 4096;

/// The decoded blocks of one file that hold a lookup's rows.
#[derive(Debug)]
pub struct Blocks {
    /// Per column of the lookup's stored schema, in its types: the blocks'
    /// arrays, or `None` when the file does not have the column.
    pub columns: Vec<Option<Vec<ArrayRef>>>,
    /// Each row asked for: (its block's place in the lists, its row within
    /// the block).
    pub picks: Vec<(usize, usize)>,
}

/// A committed data file of the fact table.
#[derive(Debug)]
pub struct DataFile {
    /// Table-relative path, e.g. `event_date=2026-11-01/part-….parquet`.
    pub path: String,
    /// A number no other file opened by this process has (the
    /// [`ColumnCache`]'s key).
    pub id: u64,
    size: u64,
    meta: ArrowReaderMetadata,
    /// Days since the epoch of the file's `event_date` partition.
    pub day: i32,
}

/// A stream builder over one file, before its projection and selection.
type Builder = ParquetRecordBatchStreamBuilder<Box<dyn AsyncFileReader>>;

impl DataFile {
    /// Loads the footer and page index of the file at table-relative `path`
    /// (`size` bytes).
    ///
    /// # Errors
    /// The file could not be read, or its folder names no `event_date`.
    pub async fn open(lake: &Lake, path: String, size: u64) -> Result<DataFile> {
        let day = partition_day(&path)?;
        let mut reader = file_reader(lake, &path, size)?;
        let meta = ArrowReaderMetadata::load_async(
            &mut reader,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .await
        .map_err(|e| Error::Config(format!("reading {path}: {e}")))?;
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(DataFile {
            path,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            size,
            meta,
            day,
        })
    }

    /// The columns `names` that the file has (others are left out), as one
    /// batch, with `configure` choosing batch size, row groups and rows.
    ///
    /// # Errors
    /// The file could not be read.
    pub async fn read<'a>(
        &self,
        lake: &Lake,
        names: impl IntoIterator<Item = &'a str>,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> Result<RecordBatch> {
        let (schema, batches) = self.read_batches(lake, names, configure).await?;
        Ok(concat_batches(&schema, &batches)?)
    }

    /// [`DataFile::read`] as the reader's batches.
    async fn read_batches<'a>(
        &self,
        lake: &Lake,
        names: impl IntoIterator<Item = &'a str>,
        configure: impl FnOnce(Builder) -> Builder,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let fail =
            |e: parquet::errors::ParquetError| Error::Config(format!("reading {}: {e}", self.path));
        let reader = file_reader(lake, &self.path, self.size)?;
        let mask =
            ProjectionMask::columns(self.meta.metadata().file_metadata().schema_descr(), names);
        let builder = Builder::new_with_metadata(reader, self.meta.clone()).with_projection(mask);
        let stream = configure(builder).build().map_err(fail)?;
        let schema = stream.schema().clone();
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(fail)?;
        Ok((schema, batches))
    }

    /// The rows `rows` (ascending) in the file's columns that `stored`
    /// names, read from the pages that hold them. Columns the file lacks are
    /// absent.
    ///
    /// # Errors
    /// The file could not be read.
    pub async fn rows_from_pages(
        &self,
        lake: &Lake,
        rows: &[u32],
        stored: &SchemaRef,
    ) -> Result<HashMap<String, ArrayRef>> {
        let ranges: Vec<Range<usize>> = rows.iter().map(|&r| r as usize..r as usize + 1).collect();
        let (groups, selection) = self.select(&ranges);
        let names = stored.fields().iter().map(|f| f.name().as_str());
        let batch = self
            .read(lake, names, |b| {
                b.with_row_groups(groups).with_row_selection(selection)
            })
            .await?;
        Ok(batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| (f.name().clone(), Arc::clone(c)))
            .collect())
    }

    /// The decoded blocks of [`BLOCK_ROWS`] rows that hold the rows `rows`
    /// (ascending), in the file's columns that `stored` names, from `cache`:
    /// the blocks missing there are read (only the pages holding them),
    /// brought to their types in `stored` and put there first.
    ///
    /// # Errors
    /// The file could not be read, or a row is past its end.
    pub async fn blocks(
        &self,
        lake: &Lake,
        rows: &[u32],
        stored: &SchemaRef,
        cache: &ColumnCache,
    ) -> Result<Blocks> {
        let file_rows =
            usize::try_from(self.meta.metadata().file_metadata().num_rows()).unwrap_or(0);
        if rows.iter().any(|&r| r as usize >= file_rows) {
            return Err(Error::Config(format!(
                "{}: an indexed row is past the end of the file",
                self.path
            )));
        }
        // (name, place in `stored`, place in the file) of the columns the
        // file has.
        let here = self.meta.schema();
        let names: Vec<(&str, usize, usize)> = stored
            .fields()
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((f.name().as_str(), i, here.index_of(f.name()).ok()?)))
            .collect();
        let mut blocks: Vec<usize> = rows.iter().map(|&r| r as usize / BLOCK_ROWS).collect();
        blocks.dedup();
        // What the cache has, and which blocks and columns are to be read.
        let mut have: HashMap<(usize, usize), ArrayRef> = HashMap::new();
        let mut read_blocks = Vec::new();
        let mut read_names = BTreeSet::new();
        for &b in &blocks {
            for &(name, at, column) in &names {
                match cache.get(self.id, b, column) {
                    Some(a) => {
                        // Kept in the type another statement's result had.
                        have.insert((b, column), typed(a, stored.field(at).data_type())?);
                    }
                    None => {
                        if read_blocks.last() != Some(&b) {
                            read_blocks.push(b);
                        }
                        read_names.insert(name);
                    }
                }
            }
        }
        if !read_blocks.is_empty() {
            let ranges: Vec<Range<usize>> = read_blocks
                .iter()
                .map(|&b| b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(file_rows))
                .collect();
            let (groups, selection) = self.select(&ranges);
            let (schema, batches) = self
                .read_batches(lake, read_names.iter().copied(), |b| {
                    b.with_row_groups(groups)
                        .with_row_selection(selection)
                        .with_batch_size(BLOCK_ROWS)
                })
                .await?;
            let lens = ranges.iter().map(|r| r.len());
            let parts = cut(&self.path, &schema, batches, lens)?;
            for (&b, part) in read_blocks.iter().zip(parts) {
                for (field, column) in part.schema().fields().iter().zip(part.columns()) {
                    let Some(&(_, at, place)) = names.iter().find(|n| n.0 == field.name().as_str())
                    else {
                        continue;
                    };
                    let column = typed(Arc::clone(column), stored.field(at).data_type())?;
                    cache.put(self.id, b, place, Arc::clone(&column));
                    have.insert((b, place), column);
                }
            }
        }
        // Each row: (its block's place in `blocks`, its row in the block).
        let mut picks = Vec::with_capacity(rows.len());
        let mut place = 0;
        for &r in rows {
            let r = r as usize;
            while blocks[place] != r / BLOCK_ROWS {
                place += 1;
            }
            picks.push((place, r % BLOCK_ROWS));
        }
        let mut columns = vec![None; stored.fields().len()];
        for (name, at, place) in names {
            let arrays = blocks
                .iter()
                .map(|&b| {
                    have.remove(&(b, place)).ok_or_else(|| {
                        Error::Config(format!("{}: block {b} of {name} was not read", self.path))
                    })
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            columns[at] = Some(arrays);
        }
        Ok(Blocks { columns, picks })
    }

    /// The row groups holding the file-level row `ranges` (ascending, not
    /// overlapping) and the selection of those rows within the groups.
    fn select(&self, ranges: &[Range<usize>]) -> (Vec<usize>, RowSelection) {
        let mut groups = Vec::new();
        let mut selected = Vec::new();
        let mut start = 0usize;
        let mut offset = 0usize;
        for (g, group) in self.meta.metadata().row_groups().iter().enumerate() {
            let end = start + usize::try_from(group.num_rows()).unwrap_or(0);
            let first = selected.len();
            for r in ranges {
                let (from, to) = (r.start.max(start), r.end.min(end));
                if from < to {
                    selected.push(offset + from - start..offset + to - start);
                }
            }
            if selected.len() > first {
                groups.push(g);
                offset += end - start;
            }
            start = end;
        }
        (
            groups,
            RowSelection::from_consecutive_ranges(selected.into_iter(), offset),
        )
    }
}

/// One file's rows as columns of `stored`: each found by name and cast to
/// its type; a column the file does not have (written before the column
/// was added) is NULL, as in any Delta reader.
///
/// # Errors
/// A column has another number of rows than `rows`, or cannot be cast.
pub fn conform(
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
            Some(c) => typed(Arc::clone(c), field.data_type())?,
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

/// `array` as `want`: itself when it has that type, else cast.
fn typed(array: ArrayRef, want: &DataType) -> Result<ArrayRef> {
    Ok(match array.data_type() == want {
        true => array,
        false => cast(&array, want)?,
    })
}

/// The reader's `batches` (of `path`) cut into consecutive parts of `lens`
/// rows. They are the parts already when they line up (pages of
/// [`BLOCK_ROWS`] rows, row groups a multiple of it); otherwise a part is
/// copied together from pieces.
fn cut(
    path: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    lens: impl Iterator<Item = usize>,
) -> Result<Vec<RecordBatch>> {
    let mut batches = batches.into_iter();
    let mut rest: Option<RecordBatch> = None;
    let mut parts = Vec::new();
    for len in lens {
        let mut pieces = Vec::new();
        let mut got = 0;
        while got < len {
            let next = rest
                .take()
                .or_else(|| batches.next())
                .ok_or_else(|| Error::Config(format!("{path}: fewer rows read than asked")))?;
            let take = (len - got).min(next.num_rows());
            if take < next.num_rows() {
                rest = Some(next.slice(take, next.num_rows() - take));
            }
            pieces.push(next.slice(0, take));
            got += take;
        }
        parts.push(match pieces.as_slice() {
            [one] => one.clone(),
            _ => concat_batches(schema, &pieces)?,
        });
    }
    Ok(parts)
}

/// A Parquet reader of the fact table's file at `path` (`size` bytes),
/// through DataFusion's reader (ranged `GET`s of the lake's store).
fn file_reader(lake: &Lake, path: &str, size: u64) -> Result<Box<dyn AsyncFileReader>> {
    let location = lake.path(&format!("{FACT_TABLE}/{path}"));
    let file = PartitionedFile::new(location.to_string(), size);
    let reader = DefaultParquetFileReaderFactory::new(Arc::clone(lake.store())).create_reader(
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

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema};

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
            batch.column(1).as_primitive::<Int64Type>().values(),
            &[1, 2]
        );
        // Fewer rows than indexed is an error, not a short answer.
        assert!(conform("f.parquet", columns, &stored, 3).is_err());
    }

    #[test]
    fn batches_are_cut_into_parts_whether_or_not_they_line_up() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)]));
        let batch = |from: i32, to: i32| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int32Array::from_iter_values(from..to))],
            )
            .unwrap()
        };
        let values = |b: &RecordBatch| b.column(0).as_primitive::<Int32Type>().values().to_vec();
        // Lined up: the batches themselves.
        let parts = cut(
            "f",
            &schema,
            vec![batch(0, 3), batch(3, 5)],
            [3, 2].into_iter(),
        )
        .unwrap();
        assert_eq!(
            parts.iter().map(values).collect::<Vec<_>>(),
            [vec![0, 1, 2], vec![3, 4]]
        );
        // Not lined up: parts taken across and within batches, in order.
        let parts = cut(
            "f",
            &schema,
            vec![batch(0, 2), batch(2, 7)],
            [4, 1, 2].into_iter(),
        )
        .unwrap();
        assert_eq!(
            parts.iter().map(values).collect::<Vec<_>>(),
            [vec![0, 1, 2, 3], vec![4], vec![5, 6]]
        );
        // Fewer rows than asked is an error.
        assert!(cut("f", &schema, vec![batch(0, 2)], [3].into_iter()).is_err());
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
