//! The window calls' state itself: per source partition, per key, the
//! recent rows ([`WindowState`]), and its size for the metrics.

use datafusion::arrow::array::RecordBatch;
use datafusion::common::HashMap;

use super::key::KeyState;
use super::value::Key;
use super::WindowPlan;
use crate::error::Result;

/// Rows between two sweeps of expired keys.
pub(super) const SWEEP_EVERY: u64 = 200_000;

/// One source partition's history.
#[derive(Debug)]
pub(super) struct PartitionState {
    /// Largest `transaction_ts` of the rows seen so far.
    pub(super) watermark: i64,
    /// The offset the next batch must start at to continue this state.
    pub(super) next_offset: Option<i64>,
    /// Per key space: key → the key's rows in source order.
    pub(super) spaces: Vec<HashMap<Key, KeyState>>,
}

impl PartitionState {
    pub(super) fn new(plan: &WindowPlan) -> Self {
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
    pub(super) partitions: HashMap<i32, PartitionState>,
    pub(super) per_partition: bool,
    pub(super) rows_since_sweep: u64,
}

/// The state partition of a row from `source_partition`.
pub(super) fn partition_of(per_partition: bool, source_partition: i32) -> i32 {
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
    pub(super) fn sweep(&mut self, plan: &WindowPlan) {
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
                    s.keys += 1;
                    s.rows += ks.events.len() as u64;
                    if let Key::Text(t) = key {
                        s.bytes += t.len() as u64;
                    }
                    s.bytes += ks.heap_bytes();
                }
            }
        }
        s
    }
}
