//! A processed micro-batch waiting to be committed: its encoded files, counts
//! and the source range it covers.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::commit::{BatchCounts, SourcePosition};

/// One encoded file waiting to be committed.
#[derive(Debug, Clone)]
pub struct EncodedFile {
    /// Table folder (`fact_transaction`, `quarantine`).
    pub table: &'static str,
    /// Hive partition folder, e.g. `event_date=2026-11-20`.
    pub partition: String,
    /// Rows in the file.
    pub rows: u64,
    /// Delta statistics of the file's rows ([`delta_stats`](super::file_stats::delta_stats)).
    pub stats: String,
    /// The Parquet bytes.
    pub data: Bytes,
}

/// A processed micro-batch: its files, counts and the source range it covers.
#[derive(Debug, Clone, Default)]
pub struct EncodedBatch {
    /// Files to publish.
    pub files: Vec<EncodedFile>,
    /// What happened to the batch's rows.
    pub counts: BatchCounts,
    /// Position per source partition this batch continues from: the previous
    /// batch's end as the reader saw it (for a partition the lake has never
    /// seen, the first offset read). The commit is refused unless it equals
    /// the lake's committed position, so batches chain without gap or overlap.
    pub start_offsets: BTreeMap<i32, i64>,
    /// Next position per source partition once this batch is committed.
    pub positions: BTreeMap<i32, SourcePosition>,
    /// Raw input bytes of the batch.
    pub input_bytes: u64,
    /// When the batch's first message arrived (metrics only).
    pub opened_at: Option<std::time::Instant>,
    /// Kafka produce timestamps of the batch's messages, ms (metrics only).
    pub produced_ms: Vec<i64>,
    /// The batch's fact rows with `is_fraud`, kept when alerts are published
    /// (see [`BatchProcessor::keeping_flagged`](crate::process::BatchProcessor::keeping_flagged)).
    pub flagged: Vec<datafusion::arrow::array::RecordBatch>,
}

impl EncodedBatch {
    /// Appends the next batch of the same stream (it continues where this
    /// one ends), so both land in one commit.
    pub fn absorb(&mut self, next: EncodedBatch) {
        self.files.extend(next.files);
        self.counts.add(&next.counts);
        for (p, start) in next.start_offsets {
            // A partition this batch did not touch starts where `next` starts.
            self.start_offsets.entry(p).or_insert(start);
        }
        self.positions.extend(next.positions);
        self.input_bytes += next.input_bytes;
        self.opened_at = match (self.opened_at, next.opened_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.produced_ms.extend(next.produced_ms);
        self.flagged.extend(next.flagged);
    }

    /// Rows read from the source.
    pub fn rows(&self) -> u64 {
        self.counts.rows_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(start: &[(i32, i64)], end: &[(i32, i64)], rows: u64) -> EncodedBatch {
        EncodedBatch {
            start_offsets: start.iter().copied().collect(),
            positions: end
                .iter()
                .map(|(p, o)| {
                    (
                        *p,
                        SourcePosition {
                            next_offset: *o,
                            next_byte: None,
                        },
                    )
                })
                .collect(),
            counts: BatchCounts {
                rows_in: rows,
                landed: rows,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn absorb_keeps_the_first_start_and_the_last_end() {
        let mut a = batch(&[(0, 0), (1, 10)], &[(0, 5), (1, 20)], 15);
        a.absorb(batch(&[(0, 5), (2, 7)], &[(0, 9), (2, 8)], 5));
        assert_eq!(a.start_offsets, BTreeMap::from([(0, 0), (1, 10), (2, 7)]));
        let ends: BTreeMap<i32, i64> = a
            .positions
            .iter()
            .map(|(p, x)| (*p, x.next_offset))
            .collect();
        assert_eq!(ends, BTreeMap::from([(0, 9), (1, 20), (2, 8)]));
        assert_eq!(a.rows(), 20);
    }
}
