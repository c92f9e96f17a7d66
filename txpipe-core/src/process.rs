//! One micro-batch through the CPU-bound stages: decode → rules → Parquet.
//!
//! [`BatchProcessor::process`] is pure and thread-safe, so the pipeline runs it
//! on several worker threads at once while the committer publishes earlier
//! batches.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use parquet::file::properties::WriterProperties;

use crate::decode::timestamp::{day_of_micros, format_date};
use crate::decode::{DecodedBatch, TransactionDecoder};
use crate::error::Result;
use crate::fx::FxTable;
use crate::rules::RuleSet;
use crate::schema::{
    EVENT_DATE, FACT_SCHEMA, FACT_TABLE, QUARANTINE_SCHEMA, QUARANTINE_TABLE, RECEIVED_DATE,
};
use crate::sink::file_stats::delta_stats;
use crate::sink::lake_writer::now_micros;
use crate::sink::parquet::{encode, shared_writer_properties, split_by_day};
use crate::sink::{BatchCounts, EncodedBatch, EncodedFile};
use crate::source::RawBatch;

/// Decodes, rules and encodes micro-batches.
#[derive(Debug, Clone)]
pub struct BatchProcessor {
    fx: Arc<FxTable>,
    rules: Arc<RuleSet>,
    source: Arc<str>,
    props: Arc<WriterProperties>,
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
        }
    }

    /// Decodes and applies the rules.
    ///
    /// # Errors
    /// A rule failed to evaluate.
    pub fn rule(&self, raw: &RawBatch, now: i64) -> Result<RuledBatch> {
        let mut decoder =
            TransactionDecoder::with_capacity(self.fx.clone(), self.source.clone(), raw.len());
        for (i, span) in raw.spans.iter().enumerate() {
            decoder.push(raw.payload(i), span.partition, span.offset);
        }
        let DecodedBatch {
            transactions,
            quarantine,
        } = decoder.finish(now)?;
        let (fact, hits) = self.rules.apply(&transactions)?;
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

    /// Runs a raw batch through every stage and returns the files to commit.
    ///
    /// # Errors
    /// A rule failed to evaluate, or Parquet encoding failed.
    pub fn process(&self, raw: &RawBatch) -> Result<EncodedBatch> {
        let now = now_micros();
        let ruled = self.rule(raw, now)?;
        let mut files = Vec::new();
        for (day, part) in split_by_day(&ruled.fact, "transaction_ts")? {
            files.push(EncodedFile {
                table: FACT_TABLE,
                partition: format!("{EVENT_DATE}={}", format_date(day)),
                rows: part.num_rows() as u64,
                stats: delta_stats(std::slice::from_ref(&part)),
                data: Bytes::from(encode(&FACT_SCHEMA, &[part], &self.props)?),
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
        })
    }
}
