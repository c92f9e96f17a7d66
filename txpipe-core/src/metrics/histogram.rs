//! A fixed-bucket histogram that many threads can observe into.

use std::sync::Mutex;

/// Bucket upper bounds in seconds for batch and end-to-end latencies.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];

/// Bucket upper bounds in seconds for the duration of one lake commit.
pub const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts of observations per bucket, plus their sum.
#[derive(Debug)]
pub struct Histogram {
    inner: Mutex<HistogramSnapshot>,
}

/// A copy of a histogram's state.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the buckets (inclusive), ascending.
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative); one more entry than `bounds`
    /// for values above the last bound.
    pub counts: Vec<u64>,
    /// Sum of all observed values.
    pub sum: f64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Estimates the `q` quantile (0..=1) by linear interpolation inside its
    /// bucket, as Prometheus' `histogram_quantile` does. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let Some(&upper) = self.bounds.get(i) else {
                    return Some(lower); // overflow bucket: the last bound is all we know
                };
                let within = (rank - seen as f64) / n as f64;
                return Some(lower + (upper - lower) * within.clamp(0.0, 1.0));
            }
            seen += n;
        }
        self.bounds.last().copied()
    }
}

impl Histogram {
    /// A histogram over `bounds` (ascending upper bounds).
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            inner: Mutex::new(HistogramSnapshot {
                bounds: bounds.to_vec(),
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            }),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        self.observe_many(std::iter::once(v));
    }

    /// Records many values under one lock.
    pub fn observe_many(&self, values: impl IntoIterator<Item = f64>) {
        if let Ok(mut h) = self.inner.lock() {
            for v in values {
                let i = h.bounds.partition_point(|b| *b < v);
                h.counts[i] += 1;
                h.sum += v;
            }
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> HistogramSnapshot {
        self.inner
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_overflow_is_kept() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe_many([0.5, 1.0, 1.5, 2.0, 7.0]);
        let s = h.snapshot();
        assert_eq!(s.counts, vec![2, 2, 1]);
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum, 12.0);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = Histogram::new(&[1.0, 2.0, 4.0]);
        assert_eq!(h.snapshot().quantile(0.5), None);
        h.observe_many([1.5; 10]);
        assert_eq!(h.snapshot().quantile(0.5), Some(1.5));
        assert_eq!(h.snapshot().quantile(1.0), Some(2.0));
        h.observe_many([3.0; 10]);
        assert_eq!(h.snapshot().quantile(0.75), Some(3.0));
    }
}
