//! One micro-batch through the CPU-bound stages: decode → rules → Parquet.
//!
//! [`BatchProcessor::process`] is thread-safe, so the pipeline runs it on
//! several worker threads at once while the committer publishes earlier
//! batches. The one step that must see the batches in source order — the
//! window calls of stateful rules, which read and extend each key's history —
//! runs under a turnstile ([`StatefulStage`]): decode and Parquet encoding
//! stay parallel, the state is updated by one batch at a time, in order.
//! [`BatchProcessor::prepare`] and [`BatchProcessor::process_prepared`] split
//! a batch at the turnstile, so that a worker whose batch waits for its turn
//! can prepare its next one meanwhile.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;

use crate::decode::timestamp::{day_of_micros, format_date};
use crate::decode::{DecodedBatch, TransactionDecoder};
use crate::error::Error;
use crate::error::Result;
use crate::fx::FxTable;
use crate::rules::state::{PreparedWindows, WindowState};
use crate::rules::RuleSet;
use crate::schema::{
    EVENT_DATE, FACT_SCHEMA, FACT_TABLE, QUARANTINE_SCHEMA, QUARANTINE_TABLE, RECEIVED_DATE,
};
use crate::sink::file_stats::{delta_stats, delta_stats_from_parquet};
use crate::sink::lake_writer::now_micros;
use crate::sink::parquet::{encode, encode_with_metadata, shared_writer_properties, split_by_day};
use crate::sink::{BatchCounts, EncodedBatch, EncodedFile};
use crate::source::RawBatch;

/// Reads back the rows a stateful rule set's history is rebuilt from.
pub trait StateLoader: Send + Sync + std::fmt::Debug {
    /// The landed rows of `partition` (all the lake's rows for a file
    /// ingest) before offset `before`, whose `transaction_ts` is within
    /// `horizon` microseconds of the newest of them, in source order, as
    /// [`TRANSACTION_SCHEMA`](crate::schema::TRANSACTION_SCHEMA) batches.
    ///
    /// # Errors
    /// The lake could not be read.
    fn load(&self, partition: i32, before: i64, horizon: i64) -> Result<Vec<RecordBatch>>;
}

/// The in-order part of processing: the window state and whose turn it is.
#[derive(Debug)]
pub struct StatefulStage {
    turn: Mutex<Turn>,
    ready: Condvar,
    loader: Arc<dyn StateLoader>,
    per_partition: bool,
}

#[derive(Debug)]
struct Turn {
    next: u64,
    failed: bool,
    state: WindowState,
}

impl StatefulStage {
    /// A stage whose state is rebuilt through `loader`; `per_partition` as in
    /// [`WindowState::new`].
    pub fn new(loader: Arc<dyn StateLoader>, per_partition: bool) -> Self {
        Self {
            turn: Mutex::new(Turn {
                next: 0,
                failed: false,
                state: WindowState::new(per_partition),
            }),
            ready: Condvar::new(),
            loader,
            per_partition,
        }
    }

    /// Keys, rows and bytes the state holds now.
    pub fn size(&self) -> crate::rules::state::StateSize {
        self.turn.lock().map(|t| t.state.size()).unwrap_or_default()
    }

    /// Waits for batch `seq`'s turn, runs `f` on the state, passes the turn on.
    /// When the lock is free but the turn is not there yet, `while_waiting` is
    /// called once (outside the lock) before the wait: the caller's chance to
    /// do other work. A batch arriving while another one holds the turn waits
    /// for the lock itself and is not called (calling it then was measured and
    /// not kept: BENCHMARKS.md, "The turn waits, corrected").
    fn run<T>(
        &self,
        seq: u64,
        while_waiting: &mut dyn FnMut(),
        f: impl FnOnce(&mut WindowState) -> Result<T>,
    ) -> Result<T> {
        let poisoned = || Error::Worker("the rule state's lock was poisoned".into());
        let mut turn = self.turn.lock().map_err(|_| poisoned())?;
        let mut waited = false;
        while turn.next != seq && !turn.failed {
            if !waited {
                waited = true;
                drop(turn);
                while_waiting();
                turn = self.turn.lock().map_err(|_| poisoned())?;
                continue;
            }
            turn = self.ready.wait(turn).map_err(|_| poisoned())?;
        }
        if turn.failed {
            turn.next = turn.next.max(seq + 1);
            self.ready.notify_all();
            return Err(Error::Worker(
                "an earlier batch failed; the rule state is not continued".into(),
            ));
        }
        let out = f(&mut turn.state);
        if out.is_err() {
            turn.failed = true;
        }
        turn.next = seq + 1;
        self.ready.notify_all();
        out
    }

    /// Ends the stage for good: every batch waiting for its turn, and every
    /// later one, gets an error instead of the turn. For a worker that leaves
    /// holding a batch it will never take through its turn (its results are
    /// no longer wanted, or it panicked): without this, the workers holding
    /// later batches would wait for that turn for ever.
    pub fn abandon(&self) {
        let mut turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        turn.failed = true;
        self.ready.notify_all();
    }
}

/// Decodes, rules and encodes micro-batches.
#[derive(Debug, Clone)]
pub struct BatchProcessor {
    fx: Arc<FxTable>,
    rules: Arc<RuleSet>,
    source: Arc<str>,
    props: Arc<WriterProperties>,
    stage: Option<Arc<StatefulStage>>,
    keep_flagged: bool,
}

/// A batch decoded and its window inputs read: the part of processing that
/// needs no turn ([`BatchProcessor::prepare`]).
#[derive(Debug)]
pub struct PreparedBatch {
    now: i64,
    decoded: Result<DecodedBatch>,
    windows: Option<Result<PreparedWindows>>,
}

/// A decoded and ruled batch, before encoding.
#[derive(Debug, Clone)]
pub struct RuledBatch {
    /// Fact rows ([`FACT_SCHEMA`]).
    pub fact: RecordBatch,
    /// Quarantined records ([`QUARANTINE_SCHEMA`]).
    pub quarantine: RecordBatch,
    /// Counts of the batch.
    pub counts: BatchCounts,
}

impl BatchProcessor {
    /// A processor converting with `fx`, flagging with `rules` and tagging
    /// lineage with `source`.
    pub fn new(fx: Arc<FxTable>, rules: Arc<RuleSet>, source: impl Into<Arc<str>>) -> Self {
        Self {
            fx,
            rules,
            source: source.into(),
            props: shared_writer_properties(),
            stage: None,
            keep_flagged: false,
        }
    }

    /// Keeps each batch's flagged fact rows in [`EncodedBatch::flagged`]
    /// (for alerts).
    pub fn keeping_flagged(mut self, keep: bool) -> Self {
        self.keep_flagged = keep;
        self
    }

    /// Keeps the stateful rules' history across batches, rebuilt through
    /// `loader` when a partition is first seen or its position jumps (a
    /// restart, a rebalance, a resync). Without it, each batch is evaluated as
    /// a stream of its own. No-op for a rule set without window calls.
    pub fn with_state(mut self, loader: Arc<dyn StateLoader>, per_partition: bool) -> Self {
        if self.rules.window_plan().is_some() {
            self.stage = Some(Arc::new(StatefulStage::new(loader, per_partition)));
        }
        self
    }

    /// The stateful stage, if the rules have window calls and a loader was given.
    pub fn stage(&self) -> Option<&Arc<StatefulStage>> {
        self.stage.as_ref()
    }

    /// Gives up the batches not yet through the rule state
    /// ([`StatefulStage::abandon`]); no-op without a stateful stage.
    pub fn abandon(&self) {
        if let Some(stage) = &self.stage {
            stage.abandon();
        }
    }

    /// Decodes and applies the rules; `seq` is the batch's place in source
    /// order (0, 1, 2, …), every one of which must come through here once.
    ///
    /// # Errors
    /// A rule failed to evaluate, or the state could not be rebuilt.
    pub fn rule(&self, seq: u64, raw: &RawBatch, now: i64) -> Result<RuledBatch> {
        self.rule_prepared(seq, raw, self.prepare_at(raw, now), &mut || {})
    }

    /// Decodes a raw batch and reads its window inputs: everything before
    /// its turn, so that it can run while another batch has the turn.
    pub fn prepare(&self, raw: &RawBatch) -> PreparedBatch {
        self.prepare_at(raw, now_micros())
    }

    fn prepare_at(&self, raw: &RawBatch, now: i64) -> PreparedBatch {
        let mut decoder =
            TransactionDecoder::with_capacity(self.fx.clone(), self.source.clone(), raw.len());
        for (i, span) in raw.spans.iter().enumerate() {
            decoder.push(raw.payload(i), span.partition, span.offset);
        }
        let decoded = decoder.finish(now);
        // Inputs are read and grouped before the turn, beside the batch in
        // turn; only the state's own work waits for it.
        let windows = match (&self.stage, self.rules.window_plan()) {
            (Some(stage), Some(plan)) => decoded
                .as_ref()
                .ok()
                .map(|d| plan.prepare(&d.transactions, stage.per_partition)),
            _ => None,
        };
        PreparedBatch {
            now,
            decoded,
            windows,
        }
    }

    /// [`rule`](Self::rule) of a prepared batch; `while_waiting` as in
    /// [`process_prepared`](Self::process_prepared).
    fn rule_prepared(
        &self,
        seq: u64,
        raw: &RawBatch,
        prepared: PreparedBatch,
        while_waiting: &mut dyn FnMut(),
    ) -> Result<RuledBatch> {
        let PreparedBatch {
            decoded,
            windows: prepared,
            ..
        } = prepared;
        let windows = match (&self.stage, self.rules.window_plan()) {
            (Some(stage), Some(plan)) => {
                let evaluated = stage.run(seq, while_waiting, |state| {
                    let Some(prepared) = prepared else {
                        return Ok(None);
                    };
                    let prepared = prepared?;
                    for (&p, &start) in &raw.start_offsets {
                        if state.next_offset(p) != Some(start) {
                            let rows = stage.loader.load(p, start, plan.horizon_micros())?;
                            state.reset_partition(plan, p, &rows)?;
                        }
                    }
                    let evaluated = plan.run(prepared, state)?;
                    for (&p, pos) in &raw.positions {
                        state.set_next_offset(plan, p, pos.next_offset);
                    }
                    Ok(Some(evaluated))
                })?;
                match evaluated {
                    Some(e) => plan.finish(e)?,
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let DecodedBatch {
            transactions,
            quarantine,
        } = decoded?;
        let (fact, hits) = match self.stage {
            Some(_) => self.rules.apply_windowed(&transactions, windows)?,
            None => self.rules.apply(&transactions)?,
        };
        let mut counts = BatchCounts {
            rows_in: raw.len() as u64,
            landed: fact.num_rows() as u64,
            quarantined: quarantine.num_rows() as u64,
            ..Default::default()
        };
        if let Some(col) = fact.column_by_name("is_fraud") {
            use datafusion::arrow::array::AsArray;
            counts.fraud = col.as_boolean().true_count() as u64;
        }
        for (name, n) in self.rules.names().into_iter().zip(hits.counts()) {
            counts.flagged.insert(name.to_string(), n);
        }
        Ok(RuledBatch {
            fact,
            quarantine,
            counts,
        })
    }

    /// Runs a raw batch through every stage and returns the files to commit;
    /// `seq` as in [`rule`](Self::rule).
    ///
    /// # Errors
    /// A rule failed to evaluate, or Parquet encoding failed.
    pub fn process(&self, seq: u64, raw: &RawBatch) -> Result<EncodedBatch> {
        self.process_prepared(seq, raw, self.prepare(raw), &mut || {})
    }

    /// [`process`](Self::process) of a batch [`prepare`](Self::prepare)d
    /// earlier. When the batch has to wait for its turn at the rule state,
    /// `while_waiting` may be called once first (see `StatefulStage::run`):
    /// a worker can prepare its next batch then instead of sleeping (batches
    /// are still taken in order).
    ///
    /// # Errors
    /// As [`process`](Self::process).
    pub fn process_prepared(
        &self,
        seq: u64,
        raw: &RawBatch,
        prepared: PreparedBatch,
        while_waiting: &mut dyn FnMut(),
    ) -> Result<EncodedBatch> {
        let now = prepared.now;
        let ruled = self.rule_prepared(seq, raw, prepared, while_waiting)?;
        let mut flagged = Vec::new();
        if self.keep_flagged && ruled.counts.fraud > 0 {
            if let Some(mask) = ruled.fact.column_by_name("is_fraud") {
                use datafusion::arrow::array::AsArray;
                let rows = datafusion::arrow::compute::filter_record_batch(
                    &ruled.fact,
                    mask.as_boolean(),
                )?;
                flagged.push(rows);
            }
        }
        let mut files = Vec::new();
        for (day, parts) in split_by_day(&ruled.fact, "transaction_ts")? {
            let (data, meta) = encode_with_metadata(&FACT_SCHEMA, &parts, &self.props)?;
            files.push(EncodedFile {
                table: FACT_TABLE,
                partition: format!("{EVENT_DATE}={}", format_date(day)),
                rows: parts.iter().map(RecordBatch::num_rows).sum::<usize>() as u64,
                stats: delta_stats_from_parquet(&parts, &meta),
                data: Bytes::from(data),
            });
        }
        if ruled.quarantine.num_rows() > 0 {
            files.push(EncodedFile {
                table: QUARANTINE_TABLE,
                partition: format!("{RECEIVED_DATE}={}", format_date(day_of_micros(now))),
                rows: ruled.quarantine.num_rows() as u64,
                stats: delta_stats(std::slice::from_ref(&ruled.quarantine)),
                data: Bytes::from(encode(
                    &QUARANTINE_SCHEMA,
                    &[ruled.quarantine],
                    &self.props,
                )?),
            });
        }
        Ok(EncodedBatch {
            files,
            counts: ruled.counts,
            start_offsets: raw.start_offsets.clone(),
            positions: raw.positions.clone(),
            input_bytes: raw.data.len() as u64,
            opened_at: raw.opened_at,
            produced_ms: raw.produced_ms.clone(),
            flagged,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct NoHistory;

    impl StateLoader for NoHistory {
        fn load(&self, _: i32, _: i64, _: i64) -> Result<Vec<RecordBatch>> {
            Ok(Vec::new())
        }
    }

    /// Runs batch `seq` through the stage on a thread of its own; the
    /// receiver gets whether it had its turn.
    fn run_on_thread(stage: &Arc<StatefulStage>, seq: u64) -> std::sync::mpsc::Receiver<bool> {
        let (tx, rx) = channel();
        let stage = stage.clone();
        std::thread::spawn(move || {
            let had_turn = stage.run(seq, &mut || {}, |_| Ok(())).is_ok();
            let _ = tx.send(had_turn);
        });
        rx
    }

    #[test]
    fn turns_are_taken_in_order_and_an_abandoned_stage_wakes_every_waiter() {
        let stage = Arc::new(StatefulStage::new(Arc::new(NoHistory), false));
        let second = run_on_thread(&stage, 1);
        let third = run_on_thread(&stage, 2);
        assert!(second.recv_timeout(Duration::from_millis(50)).is_err());
        stage.run(0, &mut || {}, |_| Ok(())).unwrap();
        assert_eq!(second.recv_timeout(Duration::from_secs(30)), Ok(true));
        assert_eq!(third.recv_timeout(Duration::from_secs(30)), Ok(true));

        // Batch 3 is held by a worker that leaves: 4 and 5 must not wait for
        // ever, before or after the stage is given up.
        let fifth = run_on_thread(&stage, 4);
        stage.abandon();
        let sixth = run_on_thread(&stage, 5);
        assert_eq!(fifth.recv_timeout(Duration::from_secs(30)), Ok(false));
        assert_eq!(sixth.recv_timeout(Duration::from_secs(30)), Ok(false));
    }
}
