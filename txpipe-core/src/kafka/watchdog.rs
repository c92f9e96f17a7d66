//! Detects partitions nobody consumes and forces the group to rebalance.
//!
//! A consumer group relies on the broker to expire a member that died without
//! leaving (kill -9, power loss) and to hand its partitions to the survivors.
//! Some Kafka-protocol brokers get this wrong: Tansu 0.6 drops an expired member
//! on a heartbeat but keeps the old assignment, so the dead member's partitions
//! stay owned by nobody and the group never rebalances again.
//!
//! Every member can see this from the lake alone: a partition it does not own
//! whose broker high watermark is ahead of the lake's committed position, and
//! whose lake position has not moved for a while, has no live consumer. The
//! member then leaves and rejoins the group, which makes any broker run a fresh
//! assignment over the members that are really there. A slow but live owner is
//! not disturbed because its lake position keeps moving; a spurious rejoin costs
//! one rebalance, never a duplicate (the lake refuses batches that do not
//! continue from its positions).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// How a partition looked at the last check.
#[derive(Debug, Clone, Copy)]
struct Seen {
    lake_offset: i64,
    stalled_since: Instant,
}

/// What one check concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every partition is owned here or makes progress elsewhere.
    Healthy,
    /// These partitions have had pending messages and no lake progress for
    /// longer than the stall limit while owned by no live member.
    Orphaned(Vec<i32>),
}

/// Tracks lake progress of the partitions this member does not own.
#[derive(Debug)]
pub struct OrphanWatch {
    stall_limit: Duration,
    seen: HashMap<i32, Seen>,
}

impl OrphanWatch {
    /// A watch that declares a partition orphaned after `stall_limit` without progress.
    pub fn new(stall_limit: Duration) -> Self {
        OrphanWatch {
            stall_limit,
            seen: HashMap::new(),
        }
    }

    /// Forgets all observations (after an assignment change).
    pub fn reset(&mut self) {
        self.seen.clear();
    }

    /// Records one observation.
    ///
    /// `partitions` maps every partition of the topic to its broker
    /// `(low, high)` watermarks; `owned` are this member's partitions; `lake`
    /// maps partitions to the next offset the lake expects.
    pub fn observe(
        &mut self,
        now: Instant,
        partitions: &BTreeMap<i32, (i64, i64)>,
        owned: &[i32],
        lake: &BTreeMap<i32, i64>,
    ) -> Verdict {
        let mut orphaned = Vec::new();
        self.seen
            .retain(|p, _| partitions.contains_key(p) && !owned.contains(p));
        for (&p, &(low, high)) in partitions {
            if owned.contains(&p) {
                continue;
            }
            let lake_offset = super::admin::lake_offset(lake, p, low);
            if lake_offset >= high {
                self.seen.remove(&p);
                continue;
            }
            let entry = self.seen.entry(p).or_insert(Seen {
                lake_offset,
                stalled_since: now,
            });
            if entry.lake_offset != lake_offset {
                *entry = Seen {
                    lake_offset,
                    stalled_since: now,
                };
            } else if now.duration_since(entry.stalled_since) >= self.stall_limit {
                orphaned.push(p);
            }
        }
        if orphaned.is_empty() {
            Verdict::Healthy
        } else {
            Verdict::Orphaned(orphaned)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(v: &[(i32, i64, i64)]) -> BTreeMap<i32, (i64, i64)> {
        v.iter().map(|&(p, l, h)| (p, (l, h))).collect()
    }

    #[test]
    fn stalled_unowned_partition_is_orphaned_only_after_the_limit() {
        let mut w = OrphanWatch::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let topic = parts(&[(0, 0, 100), (1, 0, 100)]);
        let lake: BTreeMap<i32, i64> = [(0, 100), (1, 40)].into();
        assert_eq!(w.observe(t0, &topic, &[0], &lake), Verdict::Healthy);
        let t1 = t0 + Duration::from_secs(9);
        assert_eq!(w.observe(t1, &topic, &[0], &lake), Verdict::Healthy);
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(
            w.observe(t2, &topic, &[0], &lake),
            Verdict::Orphaned(vec![1])
        );
    }

    #[test]
    fn progress_caught_up_or_owned_partitions_are_healthy() {
        let mut w = OrphanWatch::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let topic = parts(&[(0, 0, 100), (1, 0, 100), (2, 50, 50), (3, 0, 10)]);
        let mut lake: BTreeMap<i32, i64> = [(1, 10)].into();
        // 0: owned here; 1: moving; 2: empty (low == high); 3: owned here.
        for i in 0..10 {
            lake.insert(1, 10 + i);
            let t = t0 + Duration::from_secs(5 * i as u64);
            assert_eq!(w.observe(t, &topic, &[0, 3], &lake), Verdict::Healthy);
        }
        // Caught up: nothing pending even though the position never moves.
        lake.insert(1, 100);
        for i in 10..20 {
            let t = t0 + Duration::from_secs(5 * i as u64);
            assert_eq!(w.observe(t, &topic, &[0, 3], &lake), Verdict::Healthy);
        }
    }

    #[test]
    fn a_partition_the_lake_never_saw_counts_from_the_low_watermark() {
        let mut w = OrphanWatch::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let lake = BTreeMap::new();
        let retained_empty = parts(&[(0, 70, 70)]);
        assert_eq!(w.observe(t0, &retained_empty, &[], &lake), Verdict::Healthy);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(w.observe(t1, &retained_empty, &[], &lake), Verdict::Healthy);
        let pending = parts(&[(0, 70, 71)]);
        assert_eq!(w.observe(t1, &pending, &[], &lake), Verdict::Healthy);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(
            w.observe(t2, &pending, &[], &lake),
            Verdict::Orphaned(vec![0])
        );
    }

    #[test]
    fn reset_restarts_the_clock() {
        let mut w = OrphanWatch::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let topic = parts(&[(0, 0, 100)]);
        let lake = BTreeMap::new();
        w.observe(t0, &topic, &[], &lake);
        w.reset();
        let t1 = t0 + Duration::from_secs(6);
        assert_eq!(w.observe(t1, &topic, &[], &lake), Verdict::Healthy);
    }
}
