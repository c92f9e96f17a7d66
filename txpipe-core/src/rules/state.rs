//! Per-key history for the window calls, and their evaluation on a batch.
//!
//! The state keeps *features' inputs*, not rule results: for every landed row
//! it stores, under the row's key, the row's `transaction_ts` and the values
//! the window calls read (their arguments and `FILTER` conditions). A rule's
//! threshold can change between runs without losing anything, and a restart
//! rebuilds the state by reading the recent rows back from the lake
//! ([`WindowState::reset_partition`]).
//!
//! ## Exact semantics
//! A row at `ts` in source partition `p` sees, for each window call, the
//! earlier rows of `p` (source order) with the same key whose
//! `transaction_ts` lies in `(ts − PRECEDING, ts + FOLLOWING]` **and** after
//! the retention floor `W − horizon`, where `W` is the largest
//! `transaction_ts` of the earlier rows of `p` and `horizon` is the longest
//! `PRECEDING` plus the rules file's `lateness`. The floor only matters for
//! rows that arrive more than `lateness` behind the partition's newest row;
//! it is what bounds the state. Everything here depends only on the rows and
//! their order, never on how they were cut into batches.

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, TimestampMicrosecondType};
use datafusion::physical_expr::PhysicalExpr;

use super::window::{WindowCall, WindowFunc};
use crate::error::{Error, Result};

mod aggregate;
mod groups;
mod key;
mod value;

pub(crate) use aggregate::output_type;
use aggregate::{Acc, Output, Total};
use groups::KeyGroups;
use key::KeyState;
pub(crate) use value::ValKind;
use value::{Column, Key, Val};

/// One earlier row of a key (its stored values are in [`KeyState::vals`]).
#[derive(Debug, Clone, Copy)]
struct Event {
    ts: i64,
    /// Smallest `ts` of this and every later row of the key: a scan from the
    /// front stops once it is above the frame.
    suffix_min: i64,
    /// At least the largest `ts` of this and every earlier row: a scan from
    /// the back stops once it is below the frame.
    prefix_max: i64,
    /// Bit `i`: FILTER condition `i` of the key space held on this row.
    bits: u64,
}

/// An input expression the state stores per row.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) sql: String,
    pub(crate) expr: Arc<dyn PhysicalExpr>,
    /// `None` for a FILTER condition (a bit).
    pub(crate) kind: Option<ValKind>,
}

/// A window call, planned: where its inputs are stored.
#[derive(Debug)]
pub(crate) struct PlannedCall {
    pub(crate) call: WindowCall,
    pub(crate) space: usize,
    /// Index into the space's values, `None` for `count(*)`.
    pub(crate) arg: Option<usize>,
    pub(crate) arg_kind: Option<ValKind>,
    /// Bit of the FILTER condition in the space's bits.
    pub(crate) filter: Option<u32>,
    pub(crate) output: DataType,
}

impl PlannedCall {
    /// Kept as running totals per key (count, exact sum, count per value),
    /// corrected by the few rows outside the frame, instead of scanning a
    /// frame that holds most of the key's history.
    fn by_totals(&self) -> bool {
        let invertible = match self.call.func {
            WindowFunc::Count | WindowFunc::CountEqual => true,
            WindowFunc::Sum | WindowFunc::Avg => matches!(self.arg_kind, Some(ValKind::Fixed(_))),
            _ => false,
        };
        invertible && self.call.preceding >= TOTALS_FROM
    }

    fn passes(&self, e: &Event) -> bool {
        self.filter.is_none_or(|b| e.bits & (1 << b) != 0)
    }

    /// The call's argument among a row's stored values.
    fn arg<'a>(&self, vals: &'a [Val]) -> Option<&'a Val> {
        self.arg.map(|i| &vals[i])
    }

    fn in_frame(&self, ts: i64, lo: i64, hi: i64) -> bool {
        ts > lo && ts <= hi
    }
}

/// Calls whose frame reaches this far back are kept as totals.
const TOTALS_FROM: i64 = 6 * 3_600_000_000;

/// The rows' history for one `PARTITION BY` column.
#[derive(Debug)]
pub(crate) struct Space {
    /// The key column's index in the transaction schema.
    pub(crate) key_index: usize,
    pub(crate) key: String,
    /// Values stored per row (arguments).
    pub(crate) vals: Vec<Input>,
    /// Conditions stored per row as bits (at most 64).
    pub(crate) bits: Vec<Input>,
}

/// Every window call of a rule set, with where their inputs live.
#[derive(Debug)]
pub struct WindowPlan {
    pub(crate) calls: Vec<PlannedCall>,
    pub(crate) spaces: Vec<Space>,
    /// Longest PRECEDING + lateness: how far behind the newest row state is kept.
    pub(crate) horizon: i64,
    /// Per space: calls evaluated by scanning their frame from the newest row.
    direct: Vec<Vec<usize>>,
    /// Per space: calls kept as running totals (their index in a key's totals
    /// is their position here).
    totals: Vec<Vec<usize>>,
}

/// Column positions in [`TRANSACTION_SCHEMA`](crate::schema::TRANSACTION_SCHEMA).
const TS: usize = 1;
const SOURCE_PARTITION: usize = 13;

/// A batch's inputs for one key space.
struct Inputs {
    keys: StringArray,
    /// The stored values' columns.
    columns: Vec<Column>,
    /// The FILTER bits per row.
    bits: Vec<u64>,
}

impl Inputs {
    /// The stored values of `rows`, row after row, so that the rows can then
    /// be read in that order from one place (filled column by column: one
    /// type dispatch per column, not per value).
    fn records(&self, rows: impl Iterator<Item = usize> + Clone) -> Vec<Val> {
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
    /// A plan over `calls` stored in `spaces`, keeping `horizon` µs of history.
    pub(crate) fn new(calls: Vec<PlannedCall>, spaces: Vec<Space>, horizon: i64) -> Self {
        let mut direct = vec![Vec::new(); spaces.len()];
        let mut totals = vec![Vec::new(); spaces.len()];
        for (i, c) in calls.iter().enumerate() {
            if c.by_totals() {
                totals[c.space].push(i);
            } else {
                direct[c.space].push(i);
            }
        }
        Self {
            calls,
            spaces,
            horizon,
            direct,
            totals,
        }
    }

    /// The longest look-back plus lateness, in microseconds.
    pub fn horizon_micros(&self) -> i64 {
        self.horizon
    }

    /// How many window calls (output columns) there are.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no rule reads state.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Per key space: the batch's keys, stored values and FILTER bits.
    fn inputs(&self, batch: &RecordBatch) -> Result<Vec<Inputs>> {
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
            let mut bits = vec![0u64; n];
            for (i, input) in space.bits.iter().enumerate() {
                let array = input.expr.evaluate(batch)?.into_array(n)?;
                let mask = super::true_mask(&array, &input.sql, "FILTER ")?;
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

    /// A row's event; its stored values are moved from `record` to `vals`.
    fn event(
        record: &mut [Val],
        bits: u64,
        ts: i64,
        prev: Option<&Event>,
        vals: &mut Vec<Val>,
    ) -> Event {
        vals.clear();
        vals.extend(record.iter_mut().map(std::mem::take));
        Event {
            ts,
            suffix_min: ts,
            prefix_max: prev.map_or(ts, |p| p.prefix_max.max(ts)),
            bits,
        }
    }

    /// Evaluates every window call on `batch` ([`TRANSACTION_SCHEMA`] rows, in
    /// source order) against `state`, then adds the batch's rows to it.
    /// Returns one column per call. The same as [`prepare`](Self::prepare),
    /// [`run`](Self::run) and [`finish`](Self::finish) in a row.
    ///
    /// [`TRANSACTION_SCHEMA`]: crate::schema::TRANSACTION_SCHEMA
    ///
    /// # Errors
    /// An input expression failed to evaluate.
    pub fn evaluate(&self, batch: &RecordBatch, state: &mut WindowState) -> Result<Vec<ArrayRef>> {
        let prepared = self.prepare(batch, state.per_partition)?;
        let evaluated = self.run(prepared, state)?;
        self.finish(evaluated)
    }

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
                let back = groups.row_positions(&inputs.keys);
                PreparedSpace {
                    groups,
                    keys,
                    records,
                    rows,
                    back,
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

    /// The in-order part: evaluates a prepared batch against `state` and adds
    /// its rows to it. Only the retention floor crosses keys, and it is fixed
    /// per row up front from the partition's newest earlier row.
    ///
    /// # Errors
    /// The batch was prepared for the other kind of state.
    pub fn run(
        &self,
        prepared: PreparedWindows,
        state: &mut WindowState,
    ) -> Result<EvaluatedWindows> {
        if prepared.per_partition != state.per_partition {
            return Err(Error::Config(
                "window inputs were prepared for a state of the other kind".into(),
            ));
        }
        let n = prepared.n;
        let part_of = &prepared.part_of;
        let floors = self.floors(&prepared.ts, part_of, state);
        let mut scratch = Scratch {
            acc: vec![Acc::default(); self.calls.len()],
            active: Vec::new(),
            current: Vec::new(),
        };
        let mut spaces = Vec::with_capacity(prepared.spaces.len());
        for (s, space) in prepared.spaces.into_iter().enumerate() {
            let PreparedSpace {
                groups,
                keys,
                mut records,
                rows,
                back,
            } = space;
            let stride = self.spaces[s].vals.len();
            let calls: Vec<usize> = self.direct[s]
                .iter()
                .chain(&self.totals[s])
                .copied()
                .collect();
            let mut outs: Vec<Output> = calls
                .iter()
                .map(|&c| Output::new(&self.calls[c].output, n))
                .collect();
            let mut at = 0;
            for ((first, group), key) in groups.iter().zip(keys) {
                let ps = state
                    .partitions
                    .entry(part_of[first])
                    .or_insert_with(|| PartitionState::new(self));
                let ks = ps.spaces[s].entry(key).or_default();
                for &row in group {
                    let (t, bits) = rows[at];
                    let floor = floors[row as usize];
                    let record = &mut records[at * stride..(at + 1) * stride];
                    ks.pop_expired(self, s, floor);
                    let e = Self::event(record, bits, t, ks.events.back(), &mut scratch.current);
                    self.row(s, ks, e, floor, &mut scratch);
                    at += 1;
                    for (out, &c) in outs.iter_mut().zip(&calls) {
                        out.push(&self.calls[c], &scratch.acc[c]);
                    }
                }
            }
            // Rows without a key: an empty frame.
            for &c in &calls {
                scratch.acc[c].clear();
            }
            for _ in groups.order.len()..n {
                for (out, &c) in outs.iter_mut().zip(&calls) {
                    out.push(&self.calls[c], &scratch.acc[c]);
                }
            }
            spaces.push((calls, outs, back));
        }
        state.rows_since_sweep += n as u64;
        if state.rows_since_sweep >= SWEEP_EVERY {
            state.sweep(self);
        }
        Ok(EvaluatedWindows { spaces })
    }

    /// Builds the columns of an evaluated batch, one per call, in row order
    /// (no state needed: runs after the batch's turn).
    ///
    /// # Errors
    /// A call has no key space (a planning bug), or a column failed to build.
    pub fn finish(&self, evaluated: EvaluatedWindows) -> Result<Vec<ArrayRef>> {
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.calls.len()];
        for (calls, outs, back) in evaluated.spaces {
            for (out, c) in outs.into_iter().zip(calls) {
                columns[c] = Some(out.finish(&back)?);
            }
        }
        columns
            .into_iter()
            .enumerate()
            .map(|(c, column)| {
                column.ok_or_else(|| {
                    Error::Config(format!(
                        "window call {} has no key space",
                        self.calls[c].call.text
                    ))
                })
            })
            .collect()
    }

    /// Evaluates the calls of space `s` for row `e` of key `ks` (its stored
    /// values in `scratch.current`; rows behind `floor` already dropped) into
    /// `scratch.acc`, then adds the row to the key's history.
    fn row(&self, s: usize, ks: &mut KeyState, e: Event, floor: i64, scratch: &mut Scratch) {
        let Scratch {
            acc,
            active,
            current,
        } = scratch;
        let t = e.ts;
        for &c in self.direct[s].iter().chain(&self.totals[s]) {
            acc[c].clear();
        }
        let stride = self.spaces[s].vals.len();
        // Calls over short frames: scan back from the newest row.
        active.clear();
        active.extend(self.direct[s].iter().copied());
        for (j, older) in ks.events.iter().enumerate().rev() {
            if active.is_empty() {
                break;
            }
            active.retain(|&c| {
                let pc = &self.calls[c];
                let lo = (t - pc.call.preceding).max(floor);
                if older.prefix_max <= lo {
                    return false;
                }
                if pc.in_frame(older.ts, lo, t + pc.call.following) && pc.passes(older) {
                    return acc[c].add(pc, ks.arg(pc, j, stride), current);
                }
                true
            });
        }
        // Calls over long frames: totals minus the rows outside the frame.
        let tcalls = &self.totals[s];
        if !tcalls.is_empty() {
            for (k, &c) in tcalls.iter().enumerate() {
                acc[c].start_at_total(&self.calls[c], ks.totals.get(k), current);
            }
            let lo_max = tcalls
                .iter()
                .map(|&c| (t - self.calls[c].call.preceding).max(floor))
                .max()
                .unwrap_or(floor);
            // (`oldest` is the front's `suffix_min`: most rows need not touch the front.)
            let front = if ks.oldest <= lo_max {
                ks.events.len()
            } else {
                0
            };
            for (j, older) in ks.events.iter().enumerate().take(front) {
                if older.suffix_min > lo_max {
                    break;
                }
                for &c in tcalls {
                    let pc = &self.calls[c];
                    if older.ts <= (t - pc.call.preceding).max(floor) && pc.passes(older) {
                        acc[c].remove(pc, ks.arg(pc, j, stride), current);
                    }
                }
            }
            let hi_min = tcalls
                .iter()
                .map(|&c| t + self.calls[c].call.following)
                .min()
                .unwrap_or(t);
            for (j, older) in ks.events.iter().enumerate().rev() {
                if older.prefix_max <= hi_min {
                    break;
                }
                for &c in tcalls {
                    let pc = &self.calls[c];
                    if older.ts > t + pc.call.following && pc.passes(older) {
                        acc[c].remove(pc, ks.arg(pc, j, stride), current);
                    }
                }
            }
        }
        ks.push(self, s, e, current);
    }

    /// Per row, its retention floor: the newest `transaction_ts` of its
    /// partition's earlier rows minus the horizon. Advances each partition's
    /// watermark past the batch.
    fn floors(
        &self,
        ts: &TimestampMicrosecondArray,
        part_of: &[i32],
        state: &mut WindowState,
    ) -> Vec<i64> {
        let mut floors = Vec::with_capacity(part_of.len());
        // (partition, running watermark) of the partitions met in this batch.
        let mut marks: Vec<(i32, i64)> = Vec::new();
        let mut at = 0;
        for (row, &p) in part_of.iter().enumerate() {
            if marks.get(at).is_none_or(|m| m.0 != p) {
                at = match marks.iter().position(|m| m.0 == p) {
                    Some(i) => i,
                    None => {
                        let ps = state
                            .partitions
                            .entry(p)
                            .or_insert_with(|| PartitionState::new(self));
                        marks.push((p, ps.watermark));
                        marks.len() - 1
                    }
                };
            }
            let mark = &mut marks[at].1;
            floors.push(mark.saturating_sub(self.horizon));
            *mark = (*mark).max(ts.value(row));
        }
        for (p, mark) in marks {
            if let Some(ps) = state.partitions.get_mut(&p) {
                ps.watermark = mark;
            }
        }
        floors
    }

    /// Adds rows that landed earlier to a partition's state without
    /// evaluating anything: how a restart rebuilds the state from the lake.
    fn absorb(&self, batch: &RecordBatch, ps: &mut PartitionState) -> Result<()> {
        let n = batch.num_rows();
        let inputs = self.inputs(batch)?;
        let mut records: Vec<Vec<Val>> = inputs.iter().map(|i| i.records(0..n)).collect();
        let ts = batch.column(TS).as_primitive::<TimestampMicrosecondType>();
        let mut vals = Vec::new();
        for row in 0..n {
            let t = ts.value(row);
            for (s, inputs) in inputs.iter().enumerate() {
                if inputs.keys.is_null(row) {
                    continue;
                }
                let stride = self.spaces[s].vals.len();
                let record = &mut records[s][row * stride..(row + 1) * stride];
                let ks = ps.spaces[s]
                    .entry(Key::of(inputs.keys.value(row)))
                    .or_default();
                let e = Self::event(record, inputs.bits[row], t, ks.events.back(), &mut vals);
                ks.push(self, s, e, &mut vals);
            }
            ps.watermark = ps.watermark.max(t);
        }
        Ok(())
    }
}

/// A batch's window inputs read and grouped by key, ready for its turn
/// ([`WindowPlan::prepare`]).
#[derive(Debug)]
pub struct PreparedWindows {
    n: usize,
    per_partition: bool,
    ts: TimestampMicrosecondArray,
    /// Per row: its state partition.
    part_of: Vec<i32>,
    spaces: Vec<PreparedSpace>,
}

/// One key space of a [`PreparedWindows`].
#[derive(Debug)]
struct PreparedSpace {
    groups: KeyGroups,
    /// Per group: its key.
    keys: Vec<Key>,
    /// The stored values of the rows with a key, row after row, in group order.
    records: Vec<Val>,
    /// `transaction_ts` and FILTER bits of those rows, in the same order.
    rows: Vec<(i64, u64)>,
    /// Per row: its place among the outputs (see [`KeyGroups::row_positions`]).
    back: UInt32Array,
}

/// A batch's window values in group order, before [`WindowPlan::finish`].
pub struct EvaluatedWindows {
    /// Per key space: its calls, their outputs and each row's place in them.
    spaces: Vec<(Vec<usize>, Vec<Output>, UInt32Array)>,
}

impl std::fmt::Debug for EvaluatedWindows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluatedWindows")
            .field("spaces", &self.spaces.len())
            .finish()
    }
}

/// Buffers reused from row to row.
struct Scratch {
    acc: Vec<Acc>,
    active: Vec<usize>,
    current: Vec<Val>,
}

/// Rows between two sweeps of expired keys.
const SWEEP_EVERY: u64 = 200_000;

/// One source partition's history.
#[derive(Debug)]
struct PartitionState {
    /// Largest `transaction_ts` of the rows seen so far.
    watermark: i64,
    /// The offset the next batch must start at to continue this state.
    next_offset: Option<i64>,
    /// Per key space: key → the key's rows in source order.
    spaces: Vec<HashMap<Key, KeyState>>,
}

impl PartitionState {
    fn new(plan: &WindowPlan) -> Self {
        Self {
            watermark: i64::MIN,
            next_offset: None,
            spaces: plan.spaces.iter().map(|_| HashMap::new()).collect(),
        }
    }
}

/// The window calls' state for one ingest: per source partition (Kafka) or
/// one for the whole lake (files), per key, the recent rows.
#[derive(Debug, Default)]
pub struct WindowState {
    partitions: HashMap<i32, PartitionState>,
    per_partition: bool,
    rows_since_sweep: u64,
}

/// The state partition of a row from `source_partition`.
fn partition_of(per_partition: bool, source_partition: i32) -> i32 {
    if per_partition {
        source_partition
    } else {
        0
    }
}

/// Size of a [`WindowState`], for the metrics and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Keys (e.g. customers) with at least one row in the state.
    pub keys: u64,
    /// Rows held.
    pub rows: u64,
    /// Approximate heap bytes.
    pub bytes: u64,
}

impl WindowState {
    /// Empty state. `per_partition`: one history per source partition (a
    /// Kafka topic, whose producers key by customer) rather than one for
    /// everything (a file).
    pub fn new(per_partition: bool) -> Self {
        Self {
            per_partition,
            ..Default::default()
        }
    }

    fn partition_of(&self, source_partition: i32) -> i32 {
        partition_of(self.per_partition, source_partition)
    }

    /// Whether the state keeps one history per source partition.
    pub fn per_partition(&self) -> bool {
        self.per_partition
    }

    /// The offset a batch of `source_partition` must start at for the state
    /// to continue, or `None` when the state holds nothing of it yet.
    pub fn next_offset(&self, source_partition: i32) -> Option<i64> {
        self.partitions
            .get(&self.partition_of(source_partition))
            .and_then(|p| p.next_offset)
    }

    /// Records where the state of `source_partition` continues.
    pub fn set_next_offset(&mut self, plan: &WindowPlan, source_partition: i32, offset: i64) {
        let p = self.partition_of(source_partition);
        self.partitions
            .entry(p)
            .or_insert_with(|| PartitionState::new(plan))
            .next_offset = Some(offset);
    }

    /// Replaces the state of `source_partition` by `rows`: the rows that
    /// landed before the offset the next batch starts at, in source order
    /// (at least those within the plan's horizon of their newest).
    ///
    /// # Errors
    /// An input expression failed to evaluate on the rows.
    pub fn reset_partition(
        &mut self,
        plan: &WindowPlan,
        source_partition: i32,
        rows: &[RecordBatch],
    ) -> Result<()> {
        let p = self.partition_of(source_partition);
        let mut ps = PartitionState::new(plan);
        for batch in rows {
            plan.absorb(batch, &mut ps)?;
        }
        self.partitions.insert(p, ps);
        self.sweep(plan);
        Ok(())
    }

    /// Forgets everything (e.g. after the lake moved under this member).
    pub fn clear(&mut self) {
        self.partitions.clear();
    }

    /// Drops rows behind the retention floor and keys left without rows.
    fn sweep(&mut self, plan: &WindowPlan) {
        self.rows_since_sweep = 0;
        for ps in self.partitions.values_mut() {
            let floor = ps.watermark.saturating_sub(plan.horizon);
            for (s, space) in ps.spaces.iter_mut().enumerate() {
                space.retain(|_, ks| ks.retain_after(plan, s, floor));
            }
        }
    }

    /// Keys, rows and approximate bytes held.
    pub fn size(&self) -> StateSize {
        let mut s = StateSize::default();
        for ps in self.partitions.values() {
            for space in &ps.spaces {
                s.bytes += (space.capacity() * (std::mem::size_of::<(Key, KeyState)>() + 1)) as u64;
                for (key, ks) in space {
                    let events = &ks.events;
                    s.keys += 1;
                    s.rows += events.len() as u64;
                    if let Key::Text(t) = key {
                        s.bytes += t.len() as u64;
                    }
                    s.bytes += (events.capacity() * std::mem::size_of::<Event>()) as u64;
                    s.bytes += (ks.vals.capacity() * std::mem::size_of::<Val>()) as u64;
                    s.bytes += (ks.totals.len() * std::mem::size_of::<Total>()) as u64;
                    // Text that is not inline (shared text counted once per sharer).
                    for v in &ks.vals {
                        if let Val::Text(t) = v {
                            s.bytes += ((t.len() + 16) / Arc::strong_count(t)) as u64;
                        }
                    }
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_types() {
        assert_eq!(output_type(WindowFunc::Count, None), Ok(DataType::Int64));
        assert_eq!(
            output_type(WindowFunc::Avg, Some(ValKind::Num)),
            Ok(DataType::Float64)
        );
        assert!(output_type(WindowFunc::Avg, Some(ValKind::Text)).is_err());
        assert_eq!(
            output_type(WindowFunc::LastValue, Some(ValKind::Text)),
            Ok(DataType::Utf8)
        );
    }
}
