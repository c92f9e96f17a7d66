//! One data file of the fact table as point lookups read it: its footer
//! (with page index) loaded once, and given rows of it read either from the
//! pages that hold them or from whole decoded columns kept in a
//! [`ColumnCache`].

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
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

/// A committed data file of the fact table.
#[derive(Debug)]
pub struct DataFile {
    /// Table-relative path, e.g. `event_date=2026-11-01/part-….parquet`.
    pub path: String,
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
        Ok(DataFile {
            path,
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
        let fail =
            |e: parquet::errors::ParquetError| Error::Config(format!("reading {}: {e}", self.path));
        let reader = file_reader(lake, &self.path, self.size)?;
        let mask =
            ProjectionMask::columns(self.meta.metadata().file_metadata().schema_descr(), names);
        let builder = Builder::new_with_metadata(reader, self.meta.clone()).with_projection(mask);
        let stream = configure(builder).build().map_err(fail)?;
        let schema = stream.schema().clone();
        let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(fail)?;
        Ok(concat_batches(&schema, &batches)?)
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
        // The row groups holding the rows, and the rows within them.
        let mut groups = Vec::new();
        let mut ranges = Vec::new();
        let mut start = 0usize;
        let mut next = 0usize;
        let mut offset = 0usize;
        for (g, group) in self.meta.metadata().row_groups().iter().enumerate() {
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

    /// The rows `rows` (ascending) in the file's columns that `stored`
    /// names, taken from whole columns kept in `cache`: those missing there
    /// are read, brought to their type in `stored` and put there first.
    /// Columns the file lacks are absent.
    ///
    /// # Errors
    /// The file could not be read, or a row is past its end.
    pub async fn rows_from_cache(
        &self,
        lake: &Lake,
        rows: &[u32],
        stored: &SchemaRef,
        cache: &ColumnCache,
    ) -> Result<HashMap<String, ArrayRef>> {
        let mut whole: HashMap<String, ArrayRef> = HashMap::new();
        let mut missing = Vec::new();
        for name in stored.fields().iter().map(|f| f.name()) {
            match cache.get(&self.path, name) {
                Some(column) => {
                    whole.insert(name.clone(), column);
                }
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            let file_rows = self.meta.metadata().file_metadata().num_rows().max(1) as usize;
            let read = self
                .read(lake, missing, |b| b.with_batch_size(file_rows))
                .await?;
            for (field, column) in read.schema().fields().iter().zip(read.columns()) {
                let column = match stored.field_with_name(field.name()) {
                    Ok(want) if want.data_type() != column.data_type() => {
                        cast(column, want.data_type())?
                    }
                    _ => Arc::clone(column),
                };
                cache.put(&self.path, field.name(), Arc::clone(&column));
                whole.insert(field.name().clone(), column);
            }
        }
        let indices = UInt32Array::from(rows.to_vec());
        let mut taken = HashMap::with_capacity(whole.len());
        for (name, column) in whole {
            if rows.iter().any(|&r| r as usize >= column.len()) {
                return Err(Error::Config(format!(
                    "{}: an indexed row is past the end of the file",
                    self.path
                )));
            }
            taken.insert(name, take(column.as_ref(), &indices, None)?);
        }
        Ok(taken)
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
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

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
    fn partition_days_come_from_the_folder() {
        assert_eq!(
            partition_day("event_date=1970-01-02/part-1.parquet").unwrap(),
            1
        );
        assert!(partition_day("part-1.parquet").is_err());
        assert!(partition_day("event_date=2026-13-01/part-1.parquet").is_err());
    }
}
