//! Sources of raw messages: JSON-lines files (and stdin); Kafka plugs in beside them.

pub mod file;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::sink::SourcePosition;

/// Where one message sits inside a [`RawBatch`]'s buffer and in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageSpan {
    /// Start of the payload in [`RawBatch::data`].
    pub start: usize,
    /// End (exclusive) of the payload in [`RawBatch::data`].
    pub end: usize,
    /// Source partition (0 for files).
    pub partition: i32,
    /// Offset in the partition (line number for files, from 0).
    pub offset: i64,
}

/// A micro-batch of raw messages, with the positions to resume after it.
#[derive(Debug, Clone, Default)]
pub struct RawBatch {
    /// Payloads, back to back (see [`push_run`](Self::push_run) for the
    /// bytes that may lie between them).
    pub data: Vec<u8>,
    /// One span per message, in source order.
    pub spans: Vec<MessageSpan>,
    /// Position per partition this batch continues from (see
    /// [`EncodedBatch::start_offsets`](crate::sink::EncodedBatch::start_offsets)).
    pub start_offsets: BTreeMap<i32, i64>,
    /// Next position per partition once this batch is committed.
    pub positions: BTreeMap<i32, SourcePosition>,
    /// When the batch's first message arrived (for the batch latency metric).
    pub opened_at: Option<Instant>,
    /// Kafka: each message's produce timestamp, ms since the epoch (for the
    /// end-to-end latency metric); empty for files.
    pub produced_ms: Vec<i64>,
}

impl RawBatch {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Payload of message `i`.
    pub fn payload(&self, i: usize) -> &[u8] {
        let s = &self.spans[i];
        &self.data[s.start..s.end]
    }

    /// Appends the messages at `spans` of `data` (ascending, not
    /// overlapping), the first at `offset` and the next ones after it, in
    /// one copy of the bytes from the first message's start to the last's
    /// end (what lies between them, e.g. line ends, is kept but is in no
    /// span).
    pub fn push_run(&mut self, data: &[u8], spans: &[(usize, usize)], partition: i32, offset: i64) {
        let (Some(first), Some(last)) = (spans.first(), spans.last()) else {
            return;
        };
        let shift = self.data.len() as isize - first.0 as isize;
        self.data.extend_from_slice(&data[first.0..last.1]);
        self.spans.extend(
            spans
                .iter()
                .zip(offset..)
                .map(|(&(s, e), offset)| MessageSpan {
                    start: (s as isize + shift) as usize,
                    end: (e as isize + shift) as usize,
                    partition,
                    offset,
                }),
        );
    }

    /// Appends one message.
    pub fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.spans.push(MessageSpan {
            start,
            end: self.data.len(),
            partition,
            offset,
        });
    }
}

/// A stable 64-bit FNV-1a hash, used for stream keys (the same on every build).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
