//! Rebuilding the stateful rules' history from the lake.
//!
//! txpipe does not checkpoint the window state: the fact table *is* its
//! checkpoint. Every landed row is in the lake, committed atomically with its
//! source position, so on start (or when a Kafka partition moves to this
//! member, or after a resync) the state of a partition is rebuilt by reading
//! back the rows that landed before the position the next batch starts at,
//! limited to the rules' horizon. A crash loses nothing the lake does not also
//! lack, and there is no second store to keep consistent with it.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::common::ScalarValue;
use datafusion::functions_aggregate::expr_fn::max;
use datafusion::prelude::{col, lit, SessionContext};

use crate::decode::timestamp::{day_of_micros, format_date};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::process::StateLoader;
use crate::read::register_table;
use crate::schema::{EVENT_DATE, FACT_TABLE, TRANSACTION_SCHEMA};

/// Which landed rows a state is rebuilt from.
#[derive(Debug, Clone)]
pub enum HistoryScope {
    /// A file ingest: every row of the lake (whatever its source) counts as
    /// earlier than the file's rows, in landing order.
    Lake,
    /// A Kafka ingest: per partition, the rows of this topic's partition, in
    /// offset order.
    Topic(String),
}

/// A [`StateLoader`] reading the fact table's committed Delta snapshot.
#[derive(Debug, Clone)]
pub struct LakeHistory {
    lake: Lake,
    scope: HistoryScope,
    runtime: tokio::runtime::Handle,
}

impl LakeHistory {
    /// A loader over `lake`; `runtime` runs its reads (it is called from
    /// worker threads).
    pub fn new(lake: Lake, scope: HistoryScope, runtime: tokio::runtime::Handle) -> Self {
        Self {
            lake,
            scope,
            runtime,
        }
    }

    /// Reads the history (async form of [`StateLoader::load`]).
    ///
    /// # Errors
    /// The fact table could not be read.
    pub async fn read(
        &self,
        partition: i32,
        before: i64,
        horizon: i64,
    ) -> Result<Vec<RecordBatch>> {
        let ctx = SessionContext::new();
        self.lake.register_object_store(&ctx);
        if !register_table(&ctx, &self.lake, "fact", FACT_TABLE).await? {
            return Ok(Vec::new());
        }
        let mut df = ctx.table("fact").await?;
        let mut order = vec![
            col("ingested_at").sort(true, true),
            col("source").sort(true, true),
            col("source_partition").sort(true, true),
            col("source_offset").sort(true, true),
        ];
        if let HistoryScope::Topic(topic) = &self.scope {
            df = df.filter(
                col("source")
                    .eq(lit(topic.as_str()))
                    .and(col("source_partition").eq(lit(partition)))
                    .and(col("source_offset").lt(lit(before))),
            )?;
            order = vec![col("source_offset").sort(true, true)];
        }
        let newest = df
            .clone()
            .aggregate(vec![], vec![max(col("transaction_ts")).alias("m")])?
            .collect()
            .await?;
        let newest = newest
            .first()
            .filter(|b| b.num_rows() == 1)
            .map(|b| ScalarValue::try_from_array(b.column(0), 0))
            .transpose()?;
        let Some(ScalarValue::TimestampMicrosecond(Some(newest), _)) = newest else {
            return Ok(Vec::new());
        };
        let floor = newest.saturating_sub(horizon);
        let floor_day = format_date(day_of_micros(floor));
        let names: Vec<_> = TRANSACTION_SCHEMA
            .fields()
            .iter()
            .map(|f| col(f.name().as_str()))
            .collect();
        let batches = df
            .filter(
                col("transaction_ts")
                    .gt(lit(ScalarValue::TimestampMicrosecond(
                        Some(floor),
                        Some("UTC".into()),
                    )))
                    .and(col(EVENT_DATE).gt_eq(lit(floor_day))),
            )?
            .sort(order)?
            .select(names)?
            .collect()
            .await?;
        batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| {
                let columns = TRANSACTION_SCHEMA
                    .fields()
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| cast(c, f.data_type()))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let options = datafusion::arrow::array::RecordBatchOptions::new()
                    .with_row_count(Some(b.num_rows()));
                // The lake's schema marks columns nullable; ours says which never are.
                let schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
                    TRANSACTION_SCHEMA
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect::<Vec<_>>(),
                ));
                Ok(RecordBatch::try_new_with_options(
                    schema, columns, &options,
                )?)
            })
            .collect()
    }
}

impl StateLoader for LakeHistory {
    fn load(&self, partition: i32, before: i64, horizon: i64) -> Result<Vec<RecordBatch>> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Worker(
                "the rule history must be loaded from a worker thread, not the runtime".into(),
            ));
        }
        self.runtime.block_on(self.read(partition, before, horizon))
    }
}
