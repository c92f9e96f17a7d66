//! Topic checks and creation, with bounded retries and clear errors.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::config::KafkaConfig;
use crate::error::{Error, Result};

/// How long one metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Metadata attempts before the brokers are declared unreachable.
const METADATA_ATTEMPTS: u32 = 3;

/// Keeps the client's last reported error (TLS handshake, SASL authentication,
/// resolution), so "cannot reach" can say why.
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut e) = self.0.lock() {
            *e = Some(format!("{error} ({reason})"));
        }
    }
}

impl ConsumerContext for LastError {}

/// Returns the partition count of `topic`, or `Ok(None)` when it does not exist.
///
/// # Errors
/// The brokers cannot be reached after bounded retries; the message includes
/// what the client last reported (a failed TLS handshake, a refused SASL
/// authentication), with secrets scrubbed.
pub fn check_topic(
    brokers: &str,
    topic: &str,
    extra: &[(String, String)],
) -> Result<Option<usize>> {
    let secrets = KafkaConfig::from_pairs(extra);
    let consumer: BaseConsumer<LastError> = super::client_config(brokers, extra)
        .create_with_context(LastError::default())
        .map_err(|e| Error::Config(secrets.scrub(&format!("kafka client for {brokers}: {e}"))))?;
    let mut last = String::new();
    for attempt in 1..=METADATA_ATTEMPTS {
        match consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
            Ok(md) => {
                let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                    return Ok(None);
                };
                return match t.error() {
                    None if !t.partitions().is_empty() => Ok(Some(t.partitions().len())),
                    None => Ok(None),
                    Some(e)
                        if RDKafkaErrorCode::from(e)
                            == RDKafkaErrorCode::UnknownTopicOrPartition =>
                    {
                        Ok(None)
                    }
                    Some(e) => Err(Error::Kafka(format!(
                        "topic {topic}: {:?}",
                        RDKafkaErrorCode::from(e)
                    ))),
                };
            }
            Err(e) => {
                last = e.to_string();
                if attempt < METADATA_ATTEMPTS {
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                }
            }
        }
    }
    // Serve the client's queued events so its error callback has run.
    let _ = consumer.poll(Duration::from_millis(100));
    let said = consumer
        .context()
        .0
        .lock()
        .ok()
        .and_then(|e| e.clone())
        .map(|e| format!("; the client reported: {e}"))
        .unwrap_or_default();
    Err(Error::Kafka(secrets.scrub(&format!(
        "cannot reach Kafka brokers at {brokers} ({METADATA_ATTEMPTS} attempts of {}s): {last}{said}",
        METADATA_TIMEOUT.as_secs()
    ))))
}

/// `(low, high)` watermarks of every partition of `topic`.
///
/// # Errors
/// Metadata or a partition's watermarks could not be fetched within `timeout`.
pub fn topic_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| Error::Kafka(format!("metadata of {topic}: {e}")))?;
    let mut out = BTreeMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let w = consumer
                .fetch_watermarks(topic, p.id(), timeout)
                .map_err(|e| Error::Kafka(format!("watermarks of {topic}/{}: {e}", p.id())))?;
            out.insert(p.id(), w);
        }
    }
    Ok(out)
}

/// Where the lake stands in a partition with watermarks `(low, high)`: its
/// next offset, or the low watermark when it has none (or is behind retention).
pub fn lake_offset(lake: &BTreeMap<i32, i64>, partition: i32, low: i64) -> i64 {
    lake.get(&partition).copied().unwrap_or(low).max(low)
}

/// Consumer lag per partition: high watermark − the lake's position.
pub fn lake_lag(
    watermarks: &BTreeMap<i32, (i64, i64)>,
    lake: &BTreeMap<i32, i64>,
) -> BTreeMap<i32, i64> {
    watermarks
        .iter()
        .map(|(&p, &(low, high))| (p, (high - lake_offset(lake, p, low)).max(0)))
        .collect()
}

/// Messages of each partition of `topic` not yet in the lake (`lake`: next
/// offset per partition), asked of the brokers with a short-lived client.
///
/// # Errors
/// The brokers did not answer in time.
pub fn remaining_lag(
    brokers: &str,
    topic: &str,
    extra: &[(String, String)],
    lake: &BTreeMap<i32, i64>,
) -> Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer = super::client_config(brokers, extra).create().map_err(|e| {
        Error::Config(
            KafkaConfig::from_pairs(extra).scrub(&format!("kafka client for {brokers}: {e}")),
        )
    })?;
    let watermarks = topic_watermarks(&consumer, topic, METADATA_TIMEOUT)?;
    Ok(lake_lag(&watermarks, lake))
}

/// Creates `topic` with `partitions` (replication factor 1) unless it exists;
/// returns its partition count.
///
/// # Errors
/// The brokers are unreachable or refused to create the topic.
pub async fn create_topic_if_missing(
    brokers: &str,
    topic: &str,
    partitions: i32,
    extra: &[(String, String)],
) -> Result<usize> {
    let (b, t, x) = (brokers.to_string(), topic.to_string(), extra.to_vec());
    let existing = tokio::task::spawn_blocking(move || check_topic(&b, &t, &x))
        .await
        .map_err(|e| Error::Worker(e.to_string()))??;
    if let Some(n) = existing {
        return Ok(n);
    }
    let admin: AdminClient<DefaultClientContext> =
        super::client_config(brokers, extra).create().map_err(|e| {
            Error::Config(
                KafkaConfig::from_pairs(extra)
                    .scrub(&format!("kafka admin client for {brokers}: {e}")),
            )
        })?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| Error::Kafka(format!("creating topic {topic}: {e}")))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Kafka(format!("creating topic {name}: {code:?}")))
            }
        }
    }
    // The broker may take a moment to serve metadata for the new topic.
    for _ in 0..20 {
        let (b, t, x) = (brokers.to_string(), topic.to_string(), extra.to_vec());
        if let Some(n) = tokio::task::spawn_blocking(move || check_topic(&b, &t, &x))
            .await
            .map_err(|e| Error::Worker(e.to_string()))??
        {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(Error::Kafka(format!(
        "topic {topic} was created but does not appear in the metadata"
    )))
}
