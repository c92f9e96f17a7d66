//! The part of a batch's window evaluation that does not depend on the
//! state: the input expressions, each row's stored values and the rows
//! grouped by key. It runs before the batch's turn, beside another batch's.

use datafusion::arrow::array::{AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, TimestampMicrosecondType};

use super::groups::KeyGroups;
use super::value::{Column, Key, Val, ValKind};
use super::{partition_of, WindowPlan, SOURCE_PARTITION, TS};
use crate::error::Result;

/// A batch's inputs for one key space.
pub(super) struct Inputs {
    pub(super) keys: StringArray,
    /// The stored values' columns.
    columns: Vec<Column>,
    /// The FILTER bits per row.
    pub(super) bits: Vec<u32>,
}

impl Inputs {
    /// The stored values of `rows`, row after row, so that the rows can then
    /// be read in that order from one place (filled column by column: one
    /// type dispatch per column, not per value).
    pub(super) fn records(&self, rows: impl Iterator<Item = usize> + Clone) -> Vec<Val> {
        let stride = self.columns.len();
        let mut vals = vec![Val::Null; rows.clone().count() * stride];
        for (c, column) in self.columns.iter().enumerate() {
            // (No slot to fill when there are no rows.)
            if let Some(out) = vals.get_mut(c..) {
                column.fill(rows.clone(), out, stride);
            }
        }
        vals
    }
}

impl WindowPlan {
    /// The part of the evaluation that does not depend on the state, so that
    /// it can run before the batch's turn, beside another batch's: the input
    /// expressions, each row's stored values and the rows grouped by key.
    /// `per_partition` must be the state's (see [`WindowState::new`]).
    ///
    /// Keys are independent of each other, so the rows are taken key by key
    /// (each key's rows still in source order): a key's history is then
    /// looked up once per batch and stays in cache while its rows are
    /// evaluated, instead of being fetched from memory for every row.
    ///
    /// # Errors
    /// An input expression failed to evaluate.
    pub fn prepare(&self, batch: &RecordBatch, per_partition: bool) -> Result<PreparedWindows> {
        let inputs = self.inputs(batch)?;
        let ts = batch.column(TS).as_primitive::<TimestampMicrosecondType>();
        let parts = batch.column(SOURCE_PARTITION).as_primitive::<Int32Type>();
        let part_of: Vec<i32> = (0..batch.num_rows())
            .map(|row| partition_of(per_partition, parts.value(row)))
            .collect();
        let spaces = inputs
            .iter()
            .map(|inputs| {
                let groups = KeyGroups::of(&inputs.keys, &part_of);
                let records = inputs.records(groups.order.iter().map(|&r| r as usize));
                let rows = groups
                    .order
                    .iter()
                    .map(|&r| (ts.value(r as usize), inputs.bits[r as usize]))
                    .collect();
                let keys = groups
                    .iter()
                    .map(|(first, _)| Key::of(inputs.keys.value(first)))
                    .collect();
                PreparedSpace {
                    groups,
                    keys,
                    records,
                    rows,
                }
            })
            .collect();
        Ok(PreparedWindows {
            n: batch.num_rows(),
            per_partition,
            ts: ts.clone(),
            part_of,
            spaces,
        })
    }

    /// Per key space: the batch's keys, stored values and FILTER bits.
    pub(super) fn inputs(&self, batch: &RecordBatch) -> Result<Vec<Inputs>> {
        let n = batch.num_rows();
        let mut out = Vec::with_capacity(self.spaces.len());
        for space in &self.spaces {
            let key = cast(batch.column(space.key_index), &DataType::Utf8)?;
            let mut columns = Vec::with_capacity(space.vals.len());
            for input in &space.vals {
                let kind = input.kind.unwrap_or(ValKind::Num);
                let array = input.expr.evaluate(batch)?.into_array(n)?;
                columns.push(Column::new(&cast(&array, &kind.cast_to())?));
            }
            let mut bits = vec![0u32; n];
            for (i, input) in space.bits.iter().enumerate() {
                let array = input.expr.evaluate(batch)?.into_array(n)?;
                let mask = crate::rules::true_mask(&array, &input.sql, "FILTER ")?;
                for (row, b) in bits.iter_mut().enumerate() {
                    if mask.value(row) {
                        *b |= 1 << i;
                    }
                }
            }
            out.push(Inputs {
                keys: key.as_string::<i32>().clone(),
                columns,
                bits,
            });
        }
        Ok(out)
    }
}

/// A batch's window inputs read and grouped by key, ready for its turn
/// ([`WindowPlan::prepare`]).
#[derive(Debug)]
pub struct PreparedWindows {
    pub(super) n: usize,
    pub(super) per_partition: bool,
    pub(super) ts: TimestampMicrosecondArray,
    /// Per row: its state partition.
    pub(super) part_of: Vec<i32>,
    pub(super) spaces: Vec<PreparedSpace>,
}

/// One key space of a [`PreparedWindows`].
#[derive(Debug)]
pub(super) struct PreparedSpace {
    pub(super) groups: KeyGroups,
    /// Per group: its key.
    pub(super) keys: Vec<Key>,
    /// The stored values of the rows with a key, row after row, in group order.
    pub(super) records: Vec<Val>,
    /// `transaction_ts` and FILTER bits of those rows, in the same order.
    pub(super) rows: Vec<(i64, u32)>,
}
