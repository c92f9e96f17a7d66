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

use std::collections::VecDeque;

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int32Type, TimestampMicrosecondType};
use datafusion::physical_expr::PhysicalExpr;

use super::window::{WindowCall, WindowFunc};
use crate::error::Result;

mod aggregate;
mod value;

pub(crate) use aggregate::output_type;
use aggregate::{Acc, Output, Total};
pub(crate) use value::ValKind;
use value::{read_val, Key, Val};

/// One earlier row of a key.
#[derive(Debug)]
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
    vals: Box<[Val]>,
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

struct Inputs {
    keys: Vec<StringArray>,
    vals: Vec<Vec<ArrayRef>>,
    bits: Vec<Vec<BooleanArray>>,
}

/// One key's rows, in source order, and the running totals of its calls.
#[derive(Debug)]
struct KeyState {
    events: VecDeque<Event>,
    totals: Vec<Total>,
    /// Smallest `ts` held (checked per row without touching the rows).
    oldest: i64,
}

impl Default for KeyState {
    fn default() -> Self {
        Self {
            events: VecDeque::new(),
            totals: Vec::new(),
            oldest: i64::MAX,
        }
    }
}

impl KeyState {
    fn push(&mut self, plan: &WindowPlan, space: usize, e: Event) {
        if self.totals.is_empty() && !plan.totals[space].is_empty() {
            self.totals = plan.totals[space]
                .iter()
                .map(|&c| Total::new(&plan.calls[c]))
                .collect();
        }
        for (t, &c) in self.totals.iter_mut().zip(&plan.totals[space]) {
            t.apply(&plan.calls[c], &e, 1);
        }
        for older in self.events.iter_mut().rev() {
            if older.suffix_min <= e.ts {
                break;
            }
            older.suffix_min = e.ts;
        }
        self.oldest = self.oldest.min(e.ts);
        self.events.push_back(e);
    }

    fn pop_expired(&mut self, plan: &WindowPlan, space: usize, floor: i64) {
        if self.oldest > floor {
            return;
        }
        while self.events.front().is_some_and(|e| e.ts <= floor) {
            if let Some(e) = self.events.pop_front() {
                for (t, &c) in self.totals.iter_mut().zip(&plan.totals[space]) {
                    t.apply(&plan.calls[c], &e, -1);
                }
            }
        }
        self.oldest = self.events.front().map_or(i64::MAX, |e| e.suffix_min);
    }

    /// Drops every row at or below `floor` (wherever it is) and rebuilds the
    /// totals and scan bounds; false when nothing is left.
    fn retain_after(&mut self, plan: &WindowPlan, space: usize, floor: i64) -> bool {
        self.pop_expired(plan, space, floor);
        if self.events.iter().any(|e| e.ts <= floor) {
            let kept: Vec<Event> = std::mem::take(&mut self.events)
                .into_iter()
                .filter(|e| e.ts > floor)
                .collect();
            self.totals.clear();
            self.oldest = i64::MAX;
            for mut e in kept {
                e.prefix_max = self.events.back().map_or(e.ts, |b| b.prefix_max.max(e.ts));
                e.suffix_min = e.ts;
                self.push(plan, space, e);
            }
        }
        if self.events.capacity() > 4 * self.events.len().max(4) {
            self.events.shrink_to_fit();
        }
        !self.events.is_empty()
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

    fn inputs(&self, batch: &RecordBatch) -> Result<Inputs> {
        let n = batch.num_rows();
        let mut keys = Vec::with_capacity(self.spaces.len());
        let mut vals = Vec::with_capacity(self.spaces.len());
        let mut bits = Vec::with_capacity(self.spaces.len());
        for space in &self.spaces {
            let key = cast(batch.column(space.key_index), &DataType::Utf8)?;
            keys.push(key.as_string::<i32>().clone());
            let mut v = Vec::with_capacity(space.vals.len());
            for input in &space.vals {
                let kind = input.kind.unwrap_or(ValKind::Num);
                let array = input.expr.evaluate(batch)?.into_array(n)?;
                v.push(cast(&array, &kind.cast_to())?);
            }
            vals.push(v);
            let mut b = Vec::with_capacity(space.bits.len());
            for input in &space.bits {
                let array = input.expr.evaluate(batch)?.into_array(n)?;
                b.push(super::true_mask(&array, &input.sql, "FILTER ")?);
            }
            bits.push(b);
        }
        Ok(Inputs { keys, vals, bits })
    }

    /// The row's event for space `s` (its stored values and filter bits).
    fn event(&self, inputs: &Inputs, s: usize, row: usize, ts: i64, prev: Option<&Event>) -> Event {
        let vals: Vec<Val> = inputs.vals[s].iter().map(|a| read_val(a, row)).collect();
        let mut bits = 0u64;
        for (i, b) in inputs.bits[s].iter().enumerate() {
            if b.value(row) {
                bits |= 1 << i;
            }
        }
        Event {
            ts,
            suffix_min: ts,
            prefix_max: prev.map_or(ts, |p| p.prefix_max.max(ts)),
            bits,
            vals: vals.into_boxed_slice(),
        }
    }

    /// Evaluates every window call on `batch` ([`TRANSACTION_SCHEMA`] rows, in
    /// source order) against `state`, then adds the batch's rows to it.
    /// Returns one column per call.
    ///
    /// [`TRANSACTION_SCHEMA`]: crate::schema::TRANSACTION_SCHEMA
    ///
    /// # Errors
    /// An input expression failed to evaluate.
    pub fn evaluate(&self, batch: &RecordBatch, state: &mut WindowState) -> Result<Vec<ArrayRef>> {
        let n = batch.num_rows();
        let inputs = self.inputs(batch)?;
        let ts = batch.column(TS).as_primitive::<TimestampMicrosecondType>();
        let parts = batch.column(SOURCE_PARTITION).as_primitive::<Int32Type>();
        let mut outs: Vec<Output> = self
            .calls
            .iter()
            .map(|c| Output::new(&c.output, n))
            .collect();
        let mut acc: Vec<Acc> = vec![Acc::default(); self.calls.len()];
        let mut active: Vec<usize> = Vec::new();
        for row in 0..n {
            let t = ts.value(row);
            let p = state.partition_of(parts.value(row));
            let ps = state
                .partitions
                .entry(p)
                .or_insert_with(|| PartitionState::new(self));
            let floor = ps.watermark.saturating_sub(self.horizon);
            for s in 0..self.spaces.len() {
                let keys = &inputs.keys[s];
                for &c in self.direct[s].iter().chain(&self.totals[s]) {
                    acc[c].clear();
                }
                if keys.is_null(row) {
                    for &c in self.direct[s].iter().chain(&self.totals[s]) {
                        outs[c].push(&self.calls[c], &acc[c]);
                    }
                    continue;
                }
                let ks = ps.spaces[s].entry(Key::of(keys.value(row))).or_default();
                ks.pop_expired(self, s, floor);
                let current = self.event(&inputs, s, row, t, ks.events.back());
                // Calls over short frames: scan back from the newest row.
                active.clear();
                active.extend(self.direct[s].iter().copied());
                for e in ks.events.iter().rev() {
                    if active.is_empty() {
                        break;
                    }
                    active.retain(|&c| {
                        let pc = &self.calls[c];
                        let lo = (t - pc.call.preceding).max(floor);
                        if e.prefix_max <= lo {
                            return false;
                        }
                        if pc.in_frame(e.ts, lo, t + pc.call.following) && pc.passes(e) {
                            return acc[c].add(pc, e, &current.vals);
                        }
                        true
                    });
                }
                // Calls over long frames: totals minus the rows outside the frame.
                let tcalls = &self.totals[s];
                if !tcalls.is_empty() {
                    for (k, &c) in tcalls.iter().enumerate() {
                        acc[c].start_at_total(&self.calls[c], ks.totals.get(k), &current.vals);
                    }
                    let lo_max = tcalls
                        .iter()
                        .map(|&c| (t - self.calls[c].call.preceding).max(floor))
                        .max()
                        .unwrap_or(floor);
                    for e in ks.events.iter() {
                        if e.suffix_min > lo_max {
                            break;
                        }
                        for &c in tcalls {
                            let pc = &self.calls[c];
                            if e.ts <= (t - pc.call.preceding).max(floor) {
                                acc[c].remove(pc, e, &current.vals);
                            }
                        }
                    }
                    let hi_min = tcalls
                        .iter()
                        .map(|&c| t + self.calls[c].call.following)
                        .min()
                        .unwrap_or(t);
                    for e in ks.events.iter().rev() {
                        if e.prefix_max <= hi_min {
                            break;
                        }
                        for &c in tcalls {
                            let pc = &self.calls[c];
                            if e.ts > t + pc.call.following {
                                acc[c].remove(pc, e, &current.vals);
                            }
                        }
                    }
                }
                for &c in self.direct[s].iter().chain(&self.totals[s]) {
                    outs[c].push(&self.calls[c], &acc[c]);
                }
                ks.push(self, s, current);
            }
            ps.watermark = ps.watermark.max(t);
        }
        state.rows_since_sweep += n as u64;
        if state.rows_since_sweep >= SWEEP_EVERY {
            state.sweep(self);
        }
        outs.into_iter().map(Output::finish).collect()
    }

    /// Adds rows that landed earlier to a partition's state without
    /// evaluating anything: how a restart rebuilds the state from the lake.
    fn absorb(&self, batch: &RecordBatch, ps: &mut PartitionState) -> Result<()> {
        let inputs = self.inputs(batch)?;
        let ts = batch.column(TS).as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let t = ts.value(row);
            for s in 0..self.spaces.len() {
                let keys = &inputs.keys[s];
                if keys.is_null(row) {
                    continue;
                }
                let ks = ps.spaces[s].entry(Key::of(keys.value(row))).or_default();
                let e = self.event(&inputs, s, row, t, ks.events.back());
                ks.push(self, s, e);
            }
            ps.watermark = ps.watermark.max(t);
        }
        Ok(())
    }
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
        if self.per_partition {
            source_partition
        } else {
            0
        }
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
                    s.bytes += (ks.totals.len() * std::mem::size_of::<Total>()) as u64;
                    // Per row: its values, and its text as the newest row's
                    // (shared text counted once per sharer).
                    if let Some(e) = events.back() {
                        let mut per_row = e.vals.len() * std::mem::size_of::<Val>() + 16;
                        for v in e.vals.iter() {
                            if let Val::Text(t) = v {
                                per_row += (t.len() + 16) / Arc::strong_count(t);
                            }
                        }
                        s.bytes += (per_row * events.len()) as u64;
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
