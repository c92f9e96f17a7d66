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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, prep_null_mask_filter};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int32Type, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;

use super::window::{WindowCall, WindowFunc};
use crate::error::{Error, Result};

/// How a stored value is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ValKind {
    /// Any number (decimals included) as `f64`.
    Num,
    /// A timestamp, microseconds since the epoch (UTC).
    Time,
    /// Text.
    Text,
}

impl ValKind {
    pub(crate) fn of(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _) => Self::Num,
            DataType::Timestamp(_, _) => Self::Time,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            _ => return None,
        })
    }

    fn cast_to(self) -> DataType {
        match self {
            Self::Num => DataType::Float64,
            Self::Time => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Text => DataType::Utf8,
        }
    }
}

/// One stored value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Num(f64),
    Time(i64),
    Text(Arc<str>),
}

/// One earlier row of a key.
#[derive(Debug)]
struct Event {
    ts: i64,
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
    /// Bit of the FILTER condition in the space's bits.
    pub(crate) filter: Option<u32>,
    pub(crate) output: DataType,
}

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
}

/// Column positions in [`TRANSACTION_SCHEMA`](crate::schema::TRANSACTION_SCHEMA).
const TS: usize = 1;
const SOURCE_PARTITION: usize = 13;

struct Inputs {
    keys: Vec<StringArray>,
    vals: Vec<Vec<ArrayRef>>,
    bits: Vec<Vec<BooleanArray>>,
}

impl WindowPlan {
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
                let mask = array
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| Error::Rule {
                        rule: input.sql.clone(),
                        reason: format!("FILTER evaluated to {}, not boolean", array.data_type()),
                    })?;
                b.push(if mask.null_count() > 0 {
                    prep_null_mask_filter(mask)
                } else {
                    mask.clone()
                });
            }
            bits.push(b);
        }
        Ok(Inputs { keys, vals, bits })
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
        let ts = batch.column(TS).as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        let parts = batch.column(SOURCE_PARTITION).as_primitive::<Int32Type>();
        let mut outs: Vec<Output> = self.calls.iter().map(|c| Output::new(&c.output, n)).collect();
        let mut acc: Vec<Acc> = vec![Acc::default(); self.calls.len()];
        let space_calls: Vec<Vec<usize>> = (0..self.spaces.len())
            .map(|s| (0..self.calls.len()).filter(|&c| self.calls[c].space == s).collect())
            .collect();
        for row in 0..n {
            let t = ts.value(row);
            let p = state.partition_of(parts.value(row));
            let ps = state.partitions.entry(p).or_insert_with(|| PartitionState::new(self));
            let floor = ps.watermark.saturating_sub(self.horizon);
            for (s, space) in self.spaces.iter().enumerate() {
                let keys = &inputs.keys[s];
                let current: Vec<Val> = (0..space.vals.len())
                    .map(|i| read_val(&inputs.vals[s][i], row))
                    .collect();
                let mut bits = 0u64;
                for (i, b) in inputs.bits[s].iter().enumerate() {
                    if b.value(row) {
                        bits |= 1 << i;
                    }
                }
                let calls = &space_calls[s];
                for &c in calls {
                    acc[c] = Acc::default();
                }
                if keys.is_null(row) {
                    for &c in calls {
                        outs[c].push(&self.calls[c], &acc[c]);
                    }
                    continue;
                }
                let key = keys.value(row);
                let events = match ps.spaces[s].get_mut(key) {
                    Some(e) => e,
                    None => ps.spaces[s].entry(Arc::from(key)).or_default(),
                };
                while events.front().is_some_and(|e| e.ts <= floor) {
                    events.pop_front();
                }
                for e in events.iter() {
                    if e.ts <= floor {
                        continue;
                    }
                    for &c in calls {
                        let pc = &self.calls[c];
                        if e.ts <= t - pc.call.preceding || e.ts > t + pc.call.following {
                            continue;
                        }
                        if let Some(bit) = pc.filter {
                            if e.bits & (1 << bit) == 0 {
                                continue;
                            }
                        }
                        acc[c].add(pc, e, &current);
                    }
                }
                for &c in calls {
                    outs[c].push(&self.calls[c], &acc[c]);
                }
                let vals = share_text(current, events.back());
                events.push_back(Event {
                    ts: t,
                    bits,
                    vals: vals.into_boxed_slice(),
                });
            }
            ps.watermark = ps.watermark.max(t);
        }
        state.rows_since_sweep += n as u64;
        if state.rows_since_sweep >= SWEEP_EVERY {
            state.sweep(self.horizon);
        }
        outs.into_iter().map(Output::finish).collect()
    }

    /// Adds rows that landed earlier to `state` without evaluating anything:
    /// how a restart rebuilds the state from the lake.
    fn absorb(&self, batch: &RecordBatch, ps: &mut PartitionState) -> Result<()> {
        let inputs = self.inputs(batch)?;
        let ts = batch.column(TS).as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let t = ts.value(row);
            for (s, space) in self.spaces.iter().enumerate() {
                let keys = &inputs.keys[s];
                if keys.is_null(row) {
                    continue;
                }
                let current: Vec<Val> = (0..space.vals.len())
                    .map(|i| read_val(&inputs.vals[s][i], row))
                    .collect();
                let mut bits = 0u64;
                for (i, b) in inputs.bits[s].iter().enumerate() {
                    if b.value(row) {
                        bits |= 1 << i;
                    }
                }
                let key = keys.value(row);
                let events = match ps.spaces[s].get_mut(key) {
                    Some(e) => e,
                    None => ps.spaces[s].entry(Arc::from(key)).or_default(),
                };
                let vals = share_text(current, events.back());
                events.push_back(Event {
                    ts: t,
                    bits,
                    vals: vals.into_boxed_slice(),
                });
            }
            ps.watermark = ps.watermark.max(t);
        }
        Ok(())
    }
}

/// Reuses the previous row's text (same device, same merchant) instead of a new copy.
fn share_text(mut vals: Vec<Val>, previous: Option<&Event>) -> Vec<Val> {
    if let Some(prev) = previous {
        for (v, p) in vals.iter_mut().zip(prev.vals.iter()) {
            if let (Val::Text(a), Val::Text(b)) = (&*v, p) {
                if a == b {
                    *v = Val::Text(b.clone());
                }
            }
        }
    }
    vals
}

fn read_val(array: &ArrayRef, row: usize) -> Val {
    if array.is_null(row) {
        return Val::Null;
    }
    match array.data_type() {
        DataType::Float64 => Val::Num(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(_, _) => Val::Time(
            array
                .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .value(row),
        ),
        _ => Val::Text(Arc::from(array.as_string::<i32>().value(row))),
    }
}

/// Rows between two sweeps of expired keys.
const SWEEP_EVERY: u64 = 200_000;

/// A running aggregate for one call and one row.
#[derive(Debug, Clone, Default)]
struct Acc {
    count: i64,
    sum: f64,
    min: Option<Val>,
    max: Option<Val>,
    last: Option<Val>,
}

impl Acc {
    fn add(&mut self, pc: &PlannedCall, e: &Event, current: &[Val]) {
        let v = pc.arg.map(|i| &e.vals[i]);
        match pc.call.func {
            WindowFunc::Count => {
                if !matches!(v, Some(Val::Null)) {
                    self.count += 1;
                }
            }
            WindowFunc::CountEqual => {
                if let (Some(v), Some(i)) = (v, pc.arg) {
                    if *v != Val::Null && *v == current[i] {
                        self.count += 1;
                    }
                }
            }
            WindowFunc::Sum | WindowFunc::Avg => {
                if let Some(Val::Num(x)) = v {
                    self.sum += x;
                    self.count += 1;
                }
            }
            WindowFunc::Min | WindowFunc::Max => {
                let Some(v) = v.filter(|v| **v != Val::Null) else {
                    return;
                };
                let slot = if pc.call.func == WindowFunc::Min {
                    &mut self.min
                } else {
                    &mut self.max
                };
                let replace = match (&*slot, v) {
                    (None, _) => true,
                    (Some(Val::Num(a)), Val::Num(b)) => {
                        (pc.call.func == WindowFunc::Min) == (b < a) && b != a
                    }
                    (Some(Val::Time(a)), Val::Time(b)) => {
                        (pc.call.func == WindowFunc::Min) == (b < a) && b != a
                    }
                    (Some(Val::Text(a)), Val::Text(b)) => {
                        (pc.call.func == WindowFunc::Min) == (b < a) && b != a
                    }
                    _ => false,
                };
                if replace {
                    *slot = Some(v.clone());
                }
            }
            WindowFunc::LastValue => {
                if let Some(v) = v {
                    self.last = Some(v.clone());
                }
            }
        }
    }
}

/// Builds one call's output column.
enum Output {
    Int(Vec<i64>),
    Float(Vec<Option<f64>>),
    Time(Vec<Option<i64>>),
    Text(StringBuilder),
}

impl Output {
    fn new(data_type: &DataType, n: usize) -> Self {
        match data_type {
            DataType::Int64 => Self::Int(Vec::with_capacity(n)),
            DataType::Timestamp(_, _) => Self::Time(Vec::with_capacity(n)),
            DataType::Utf8 => Self::Text(StringBuilder::with_capacity(n, n * 16)),
            _ => Self::Float(Vec::with_capacity(n)),
        }
    }

    fn push(&mut self, pc: &PlannedCall, acc: &Acc) {
        let value: Option<&Val> = match pc.call.func {
            WindowFunc::Count | WindowFunc::CountEqual => {
                if let Self::Int(v) = self {
                    v.push(acc.count);
                }
                return;
            }
            WindowFunc::Sum | WindowFunc::Avg => {
                if let Self::Float(v) = self {
                    v.push(match (acc.count, pc.call.func) {
                        (0, _) => None,
                        (_, WindowFunc::Sum) => Some(acc.sum),
                        (c, _) => Some(acc.sum / c as f64),
                    });
                }
                return;
            }
            WindowFunc::Min => acc.min.as_ref(),
            WindowFunc::Max => acc.max.as_ref(),
            WindowFunc::LastValue => acc.last.as_ref(),
        };
        match (self, value) {
            (Self::Float(v), Some(Val::Num(x))) => v.push(Some(*x)),
            (Self::Float(v), _) => v.push(None),
            (Self::Time(v), Some(Val::Time(x))) => v.push(Some(*x)),
            (Self::Time(v), _) => v.push(None),
            (Self::Text(b), Some(Val::Text(s))) => b.append_value(s),
            (Self::Text(b), _) => b.append_null(),
            (Self::Int(v), _) => v.push(0),
        }
    }

    fn finish(self) -> Result<ArrayRef> {
        Ok(match self {
            Self::Int(v) => Arc::new(Int64Array::from(v)),
            Self::Float(v) => Arc::new(Float64Array::from(v)),
            Self::Time(v) => Arc::new(TimestampMicrosecondArray::from(v).with_timezone("UTC")),
            Self::Text(mut b) => Arc::new(b.finish()),
        })
    }
}

/// The output type of a call with an argument of `kind`.
pub(crate) fn output_type(func: WindowFunc, kind: Option<ValKind>) -> std::result::Result<DataType, String> {
    Ok(match (func, kind) {
        (WindowFunc::Count | WindowFunc::CountEqual, _) => DataType::Int64,
        (WindowFunc::Sum | WindowFunc::Avg, Some(ValKind::Num)) => DataType::Float64,
        (WindowFunc::Sum | WindowFunc::Avg, _) => {
            return Err("sum and avg take a number".into())
        }
        (_, Some(k)) => k.cast_to(),
        (_, None) => return Err("needs an argument".into()),
    })
}

/// One source partition's history.
#[derive(Debug)]
struct PartitionState {
    /// Largest `transaction_ts` of the rows seen so far.
    watermark: i64,
    /// The offset the next batch must start at to continue this state.
    next_offset: Option<i64>,
    /// Per key space: key → the key's rows in source order.
    spaces: Vec<HashMap<Arc<str>, VecDeque<Event>>>,
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
        self.sweep(plan.horizon);
        Ok(())
    }

    /// Forgets everything (e.g. after the lake moved under this member).
    pub fn clear(&mut self) {
        self.partitions.clear();
    }

    /// Drops rows behind the retention floor and keys left without rows.
    fn sweep(&mut self, horizon: i64) {
        self.rows_since_sweep = 0;
        for ps in self.partitions.values_mut() {
            let floor = ps.watermark.saturating_sub(horizon);
            for space in &mut ps.spaces {
                space.retain(|_, events| {
                    events.retain(|e| e.ts > floor);
                    if events.capacity() > 4 * events.len().max(4) {
                        events.shrink_to_fit();
                    }
                    !events.is_empty()
                });
            }
        }
    }

    /// Keys, rows and approximate bytes held.
    pub fn size(&self) -> StateSize {
        let mut s = StateSize::default();
        for ps in self.partitions.values() {
            for space in &ps.spaces {
                s.bytes += (space.capacity() * (std::mem::size_of::<Arc<str>>() + 40)) as u64;
                for (key, events) in space {
                    s.keys += 1;
                    s.rows += events.len() as u64;
                    s.bytes += key.len() as u64 + 16;
                    s.bytes += (events.capacity() * std::mem::size_of::<Event>()) as u64;
                    for e in events {
                        s.bytes += (e.vals.len() * std::mem::size_of::<Val>()) as u64;
                        for v in e.vals.iter() {
                            if let Val::Text(t) = v {
                                s.bytes += (t.len() as u64 + 16) / Arc::strong_count(t) as u64;
                            }
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
        assert_eq!(output_type(WindowFunc::Avg, Some(ValKind::Num)), Ok(DataType::Float64));
        assert!(output_type(WindowFunc::Avg, Some(ValKind::Text)).is_err());
        assert_eq!(output_type(WindowFunc::LastValue, Some(ValKind::Text)), Ok(DataType::Utf8));
    }
}
