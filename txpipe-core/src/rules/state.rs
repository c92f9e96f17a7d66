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

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::physical_expr::PhysicalExpr;

use super::window::{WindowCall, WindowFunc};
use crate::error::{Error, Result};

mod aggregate;
mod groups;
mod key;
mod prepare;
mod store;
mod value;

pub(crate) use aggregate::output_type;
use aggregate::{Acc, Output};
use key::{KeyState, Layout};
use prepare::PreparedSpace;
pub use prepare::PreparedWindows;
use store::{partition_of, PartitionState, SWEEP_EVERY};
pub use store::{StateSize, WindowState};
pub(crate) use value::ValKind;
use value::{Key, Val};

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
    bits: u32,
    /// Two bits per word of the row's stored values: what the word holds
    /// (see [`key::Layout`]).
    tags: u32,
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
    /// Conditions stored per row as bits (at most 32).
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
    /// Per space: how a key's history lays out a row's stored values.
    layouts: Vec<Layout>,
}

/// Column positions in [`TRANSACTION_SCHEMA`](crate::schema::TRANSACTION_SCHEMA).
const TS: usize = 1;
const SOURCE_PARTITION: usize = 13;

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
        let layouts = spaces.iter().map(|s| Layout::of(&s.vals)).collect();
        Self {
            calls,
            spaces,
            horizon,
            direct,
            totals,
            layouts,
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

    /// A row's event; its stored values are moved from `record` to `vals`.
    fn event(
        record: &mut [Val],
        bits: u32,
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
            tags: 0,
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
                groups: key_groups,
                keys,
                mut records,
                rows,
            } = space;
            let stride = self.spaces[s].vals.len();
            let calls: Vec<usize> = self.direct[s]
                .iter()
                .chain(&self.totals[s])
                .copied()
                .collect();
            let mut outs: Vec<Output> = calls
                .iter()
                .map(|&c| Output::new(&self.calls[c], key_groups.order.len()))
                .collect();
            // Gathered in evaluation order in one pass (independent reads)
            // rather than read one by one between the state's reads.
            let floor_at: Vec<i64> = key_groups
                .order
                .iter()
                .map(|&r| floors[r as usize])
                .collect();
            let mut at = 0;
            let mut keys = keys.into_iter().peekable();
            let mut groups = key_groups.iter().peekable();
            while let (Some((first, group)), Some(key)) = (groups.next(), keys.next()) {
                let ps = state
                    .partitions
                    .entry(part_of[first])
                    .or_insert_with(|| PartitionState::new(self));
                // The next key's history is fetched while this key's rows run
                // (one more hash lookup per key: measured cheaper than the
                // misses it hides).
                let next = groups
                    .peek()
                    .zip(keys.peek())
                    .filter(|((next_first, _), _)| part_of[*next_first] == part_of[first])
                    .and_then(|(_, next_key)| ps.spaces[s].get(next_key));
                if let Some(next) = next {
                    next.prefetch();
                }
                let ks = ps.spaces[s].entry(key).or_default();
                for _ in group {
                    let (t, bits) = rows[at];
                    let floor = floor_at[at];
                    let record = &mut records[at * stride..(at + 1) * stride];
                    ks.pop_expired(self, s, floor);
                    let e = Self::event(record, bits, t, ks.events.back(), &mut scratch.current);
                    self.row(s, ks, e, floor, &mut scratch);
                    for (out, &c) in outs.iter_mut().zip(&calls) {
                        out.set(at, &mut scratch.acc[c]);
                    }
                    at += 1;
                }
            }
            drop(groups);
            // (Rows without a key keep the empty frame's values.)
            spaces.push((calls, outs, key_groups.order));
        }
        state.rows_since_sweep += n as u64;
        if state.rows_since_sweep >= SWEEP_EVERY {
            state.sweep(self);
        }
        Ok(EvaluatedWindows { n, spaces })
    }

    /// Builds the columns of an evaluated batch, one per call, in row order
    /// (no state needed: runs after the batch's turn).
    ///
    /// # Errors
    /// A call has no key space (a planning bug).
    pub fn finish(&self, evaluated: EvaluatedWindows) -> Result<Vec<ArrayRef>> {
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.calls.len()];
        let n = evaluated.n;
        for (calls, outs, rows) in evaluated.spaces {
            for (out, c) in outs.into_iter().zip(calls) {
                columns[c] = Some(out.finish(&rows, n));
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
        let layout = &self.layouts[s];
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
                    return ks.with_arg(layout, pc, j, older, |v| acc[c].add(pc, v, current));
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
                        ks.with_arg(layout, pc, j, older, |v| acc[c].remove(pc, v, current));
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
                        ks.with_arg(layout, pc, j, older, |v| acc[c].remove(pc, v, current));
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

/// A batch's window values in evaluation (key) order, before
/// [`WindowPlan::finish`] puts them in row order.
pub struct EvaluatedWindows {
    /// Rows of the batch.
    n: usize,
    /// Per key space: its calls, their outputs in evaluation order and the
    /// row each evaluated row is.
    spaces: Vec<(Vec<usize>, Vec<Output>, Vec<u32>)>,
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
