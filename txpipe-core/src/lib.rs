//! # txpipe-core
//!
//! Real-time payment-transaction monitoring as a library: Kafka or file
//! micro-batches of JSON transactions become Arrow
//! [`RecordBatch`](arrow::array::RecordBatch)es, fraud
//! rules run on them as vectorized DataFusion expressions, and the result lands
//! exactly once in a hive-partitioned Parquet lake that DuckDB, Spark, pyarrow
//! and BI tools read as is.
//!
//! The data flow, one module per stage:
//!
//! | stage | module |
//! |---|---|
//! | the lake contract (tables, schemas) | [`schema`] |
//! | raw lines from a file or stdin | [`source`] |
//! | bytes → typed Arrow columns + quarantine | [`decode`] |
//! | fraud rules as SQL expressions, stateful windows | [`rules`] |
//! | the rules' history rebuilt from the lake | [`history`] |
//! | decode → rules → Parquet for one batch | [`process`] |
//! | Delta tables, exactly-once commits, file stats | [`sink`] |
//! | alerts of committed batches to Kafka and webhooks | [`alerts`] |
//! | the micro-batch loop | [`pipeline`] |
//! | dimension tables | [`seed`] |
//! | synthetic data with labelled fraud scenarios | [`generate`] |
//! | precision/recall of the rules against labels | [`quality`] |
//! | the lake over the Postgres wire protocol (BI tools) | [`pg`] |
//!
//! ## Example: rules over a batch
//!
//! ```
//! use std::sync::Arc;
//! use txpipe_core::{decode::TransactionDecoder, fx::FxTable, rules::RuleSet};
//!
//! let mut decoder = TransactionDecoder::new(Arc::new(FxTable::defaults()), "doc");
//! decoder.push(br#"{"transaction_id":"67e55044-10b1-426f-9247-bb680e5fe0c8",
//!     "transaction_ts":"2026-11-20T13:45:12Z","customer_id":"9f1c7a52-1b7e-4c53-8a53-2c1e7f0c9a10",
//!     "merchant_id":"0b9a3c1e-5d2f-4e8a-9c7b-1a2b3c4d5e6f","amount":9000000,"currency":"KRW",
//!     "latitude":37.56,"longitude":126.97,"device_id":"dev-1",
//!     "payment_method":"credit_card","is_foreign":true}"#, 0, 0);
//! let decoded = decoder.finish(0)?;
//! let rules = RuleSet::defaults()?;
//! let (fact, hits) = rules.apply(&decoded.transactions)?;
//! assert_eq!(fact.num_rows(), 1);
//! // 9,000,000 KRW is 6,480 USD at the default rate: high_amount (weight 1)
//! // and foreign (0.2) fire, so the risk score is 1.2 and the row is fraud.
//! assert_eq!(rules.names()[..2], ["high_amount", "foreign"]);
//! assert_eq!(hits.counts()[..3], [1, 1, 0]);
//! assert_eq!(hits.counts().iter().sum::<u64>(), 2);
//! # Ok::<(), txpipe_core::Error>(())
//! ```
//!
//! ## Example: a file into a lake
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use txpipe_core::{generate, lake::Lake, pipeline, rules::RuleSet};
//!
//! let dir = std::env::temp_dir().join(format!("txpipe-doc-{}", std::process::id()));
//! let opts = generate::GenerateOptions { count: 1_000, bad_rate: 0.01, ..Default::default() };
//! let generated = generate::generate(&dir, &opts, &mut |_| {})?;
//! let lake = Lake::open("memory://")?;
//! let input = dir.join("transactions.jsonl");
//! let summary = pipeline::ingest_file(
//!     &lake, input.to_str().unwrap(), Arc::new(RuleSet::defaults()?),
//!     &pipeline::IngestOptions::default(), &mut |_| {},
//! ).await?;
//! assert_eq!(summary.counts.rows_in, 1_000);
//! assert_eq!(summary.counts.quarantined, generated.bad_total());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), txpipe_core::Error>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs, rust_2018_idioms)]

pub mod alerts;
pub mod bench;
pub mod decode;
pub mod demo;
pub mod error;
pub mod fx;
pub mod generate;
pub mod history;
pub mod kafka;
pub mod lake;
pub mod maintain;
pub mod metrics;
pub mod models;
pub mod pg;
pub mod pipeline;
pub mod process;
pub mod quality;
pub mod read;
pub mod rules;
pub mod schema;
pub mod seed;
pub mod serve;
pub mod sink;
pub mod source;

pub use error::{Error, Result};

/// Re-exported so users share txpipe's Arrow, DataFusion, Parquet and object_store versions.
pub use datafusion::{self, arrow};
/// delta-rs, whose `DeltaTable`s the lake's tables are (see [`sink::delta`]).
pub use deltalake_core as deltalake;
pub use {object_store, parquet};
