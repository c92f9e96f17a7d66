//! `txpipe demo`: the whole stack in one call, with no services installed.
//!
//! Starts an in-process Kafka-protocol broker (librdkafka's mock cluster) unless
//! real brokers are given, generates transactions and dimensions, seeds the
//! dimensions, produces the transactions while a consumer-group ingest lands
//! them exactly once, then runs the models and data tests (write-audit-publish).
//!
//! The mock cluster keeps only a few MiB per partition and silently drops older
//! messages beyond that, so the demo spreads the topic over enough partitions,
//! consumes while it produces, and checks the watermarks afterwards: if the
//! broker dropped anything, the demo fails loudly instead of reporting a
//! smaller lake as a success.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::mocking::MockCluster;

use crate::error::{Error, Result};
use crate::generate::{generate, GenerateOptions};
use crate::kafka::{produce, KafkaSourceOptions, ProduceInput, ProduceOptions, ProduceSummary};
use crate::lake::Lake;
use crate::models::{daily_run, DailyEvent, Project, RetryPolicy, RunOptions, RunRecord};
use crate::pipeline::{ingest_kafka, IngestOptions, IngestSummary};
use crate::rules::RuleSet;
use crate::seed::seed;

/// Bytes the mock broker is trusted to keep per partition.
const MOCK_BYTES_PER_PARTITION: u64 = 3 << 20;
/// A generated message is about this large.
const MESSAGE_BYTES: u64 = 400;

/// Options of [`demo`].
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Transactions to generate and produce.
    pub count: u64,
    /// The lake (a folder or object store URL).
    pub lake: String,
    /// Real brokers instead of the in-process one.
    pub brokers: Option<String>,
    /// Generator seed.
    pub seed: u64,
    /// Share of malformed messages (to show the quarantine).
    pub bad_rate: f64,
    /// Produce at most this many messages per second (a live stream to
    /// watch on the dashboard), instead of as fast as possible.
    pub rate: Option<f64>,
    /// Publish each flagged transaction to a `demo-alerts-…` topic.
    pub alerts: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            count: 100_000,
            lake: "txpipe-demo-lake".into(),
            brokers: None,
            seed: 42,
            bad_rate: 0.001,
            rate: None,
            alerts: true,
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoSummary {
    /// Broker description (`in-process mock cluster` or the brokers given).
    pub broker: String,
    /// Topic used.
    pub topic: String,
    /// Partitions of the topic.
    pub partitions: i32,
    /// The alerts topic, if alerts were published.
    pub alerts_topic: Option<String>,
    /// The producer's result.
    pub produced: ProduceSummary,
    /// The ingest's result.
    pub ingested: IngestSummary,
    /// The models + tests run.
    pub run: RunRecord,
    /// Where its record is.
    pub run_record: String,
    /// Wall time of the whole demo.
    pub elapsed: Duration,
}

/// Partitions needed so the mock broker keeps `count` messages.
pub fn mock_partitions(count: u64) -> i32 {
    let need = (count * MESSAGE_BYTES).div_ceil(MOCK_BYTES_PER_PARTITION);
    need.clamp(8, 64) as i32
}

/// Sum of high watermarks, and the partitions whose low watermark moved
/// (the broker deleted messages).
fn watermarks(brokers: &str, topic: &str) -> Result<(i64, Vec<i32>)> {
    let consumer: BaseConsumer = crate::kafka::client_config(brokers, &[])
        .set("group.id", "txpipe-demo-check")
        .create()
        .map_err(|e| Error::Kafka(e.to_string()))?;
    let w = crate::kafka::topic_watermarks(&consumer, topic, Duration::from_secs(10))?;
    let total = w.values().map(|(_, high)| high).sum();
    let trimmed = w
        .iter()
        .filter(|(_, (low, _))| *low > 0)
        .map(|(p, _)| *p)
        .collect();
    Ok((total, trimmed))
}

/// Runs the demo; `step` is told what is happening.
///
/// # Errors
/// Any step failed, or the in-process broker dropped messages (the counts
/// would not add up).
pub async fn demo(opts: &DemoOptions, step: &mut (dyn FnMut(&str) + Send)) -> Result<DemoSummary> {
    let started = Instant::now();
    let lake = Lake::open(&opts.lake)?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let input: PathBuf = std::env::temp_dir().join(format!("txpipe-demo-{}", &id[..8]));
    step(&format!(
        "generating {} transactions and the dimensions in {}",
        opts.count,
        input.display()
    ));
    let gen = GenerateOptions {
        count: opts.count,
        seed: opts.seed,
        bad_rate: opts.bad_rate,
        ..Default::default()
    };
    generate(&input, &gen, &mut |_| {})?;
    step("seeding dim_customer, dim_merchant and fx_rate");
    seed(&lake, &input).await?;

    let (mock, brokers, broker_desc) = match &opts.brokers {
        Some(b) => (None, b.clone(), b.clone()),
        None => {
            let m = MockCluster::new(1)
                .map_err(|e| Error::Kafka(format!("starting the in-process broker: {e}")))?;
            let servers = m.bootstrap_servers();
            (
                Some(m),
                servers,
                "in-process mock cluster (librdkafka)".to_string(),
            )
        }
    };
    let topic = format!("demo-transactions-{}", &id[..8]);
    let partitions = if mock.is_some() {
        mock_partitions(opts.count)
    } else {
        4
    };
    match &mock {
        Some(m) => m
            .create_topic(&topic, partitions, 1)
            .map_err(|e| Error::Kafka(format!("creating {topic}: {e}")))?,
        // The consumer starts before the producer: the topic must exist first.
        None => {
            crate::kafka::create_topic_if_missing(&brokers, &topic, partitions, &[]).await?;
        }
    }
    step(&format!(
        "producing to {topic} ({partitions} partitions) on {broker_desc} while ingesting it"
    ));
    let produce_opts = ProduceOptions {
        brokers: brokers.clone(),
        topic: topic.clone(),
        partitions,
        rate: opts.rate,
        ..Default::default()
    };
    let file = input.join("transactions.jsonl");
    let producer =
        tokio::spawn(
            async move { produce(ProduceInput::File(file), &produce_opts, &mut |_| {}).await },
        );
    let rules = Arc::new(RuleSet::defaults()?);
    let kafka = KafkaSourceOptions {
        brokers: brokers.clone(),
        topic: topic.clone(),
        group: "txpipe-demo".into(),
        stop_when_idle: Some(Duration::from_secs(10)),
        max_messages: Some(opts.count),
        ..Default::default()
    };
    let alerts_topic = opts.alerts.then(|| format!("demo-alerts-{}", &id[..8]));
    // The in-process broker creates topics through its own API only.
    if let (Some(m), Some(t)) = (&mock, &alerts_topic) {
        m.create_topic(t, crate::alerts::ALERT_PARTITIONS, 1)
            .map_err(|e| Error::Kafka(format!("creating {t}: {e}")))?;
    }
    let ingest_opts = IngestOptions {
        batch_rows: 20_000,
        alerts: crate::alerts::AlertConfig {
            kafka: alerts_topic
                .as_ref()
                .map(|t| crate::alerts::KafkaAlertConfig {
                    brokers: brokers.clone(),
                    topic: t.clone(),
                    config: Default::default(),
                }),
            ..Default::default()
        },
        ..Default::default()
    };
    let ingested = ingest_kafka(&lake, kafka, rules.clone(), &ingest_opts, &mut |_| {}).await?;
    let produced = producer.await.map_err(|e| Error::Worker(e.to_string()))??;
    if produced.failed > 0 {
        return Err(Error::Kafka(format!(
            "{} of {} messages were not delivered: {}",
            produced.failed,
            produced.sent,
            produced.first_error.clone().unwrap_or_default()
        )));
    }
    let (check_brokers, check_topic) = (brokers.clone(), topic.clone());
    let (high, trimmed) =
        tokio::task::spawn_blocking(move || watermarks(&check_brokers, &check_topic))
            .await
            .map_err(|e| Error::Worker(e.to_string()))??;
    if !trimmed.is_empty() || ingested.counts.rows_in != opts.count || high != opts.count as i64 {
        return Err(Error::Kafka(format!(
            "the broker lost messages: produced {}, broker holds {high}, ingested {}, \
             partitions trimmed by retention: {trimmed:?} (the in-process broker keeps only a few \
             MiB per partition; use fewer messages or --brokers with a real broker)",
            opts.count, ingested.counts.rows_in
        )));
    }
    drop(mock);
    let _ = std::fs::remove_dir_all(&input);

    step("running models and data tests (marts published only if the tests pass)");
    let project = Project::builtin()?;
    let run_opts = RunOptions {
        rules: rules.names().into_iter().map(String::from).collect(),
        compact: true,
        ..Default::default()
    };
    let policy = RetryPolicy {
        retries: 0,
        backoff: Duration::ZERO,
    };
    let (run, run_record) = daily_run(&lake, &project, &run_opts, policy, &mut |_e: DailyEvent<
        '_,
    >| {})
    .await?;
    Ok(DemoSummary {
        broker: broker_desc,
        topic,
        partitions,
        alerts_topic,
        produced,
        ingested,
        run,
        run_record,
        elapsed: started.elapsed(),
    })
}
