//! Alerts to a Kafka topic, keyed by customer, each delivery acknowledged.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::message::Alert;
use crate::error::{Error, Result};
use crate::kafka::KafkaConfig;

/// Partitions of an alerts topic txpipe creates.
pub const ALERT_PARTITIONS: i32 = 4;

/// How long [`KafkaAlerts::send`] keeps re-sending through a broker outage
/// before the ingest stops (the alerts stay undelivered; the next run re-sends).
pub const BROKER_OUTAGE_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Whether a delivery failure means "no broker took it" (try again) rather
/// than "the broker refused it".
fn is_outage(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::NotEnoughReplicas
                | RDKafkaErrorCode::NotEnoughReplicasAfterAppend
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::QueueFull
        )
    )
}

/// A producer for the alerts topic.
pub struct KafkaAlerts {
    /// Replaced by a fresh producer after an outage (see [`KafkaAlerts::send`]).
    producer: Mutex<FutureProducer>,
    /// The settings to make one.
    client: ClientConfig,
    topic: String,
    scrub: KafkaConfig,
}

impl std::fmt::Debug for KafkaAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAlerts")
            .field("topic", &self.topic)
            .finish()
    }
}

impl KafkaAlerts {
    /// Connects to `brokers` (with the client settings `config`) and creates
    /// `topic` when it is missing.
    ///
    /// # Errors
    /// The brokers are unreachable or the producer cannot be configured.
    pub async fn connect(brokers: &str, topic: &str, config: &KafkaConfig) -> Result<Self> {
        let extra = config.pairs();
        crate::kafka::create_topic_if_missing(brokers, topic, ALERT_PARTITIONS, &extra).await?;
        let mut c = crate::kafka::client_config(brokers, &[]);
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            // Unacknowledged after this, an alert is re-sent by a fresh
            // producer (see `send`) and `txpipe_alerts_up` drops to 0.
            .set("message.timeout.ms", "10000");
        for (k, v) in &extra {
            c.set(k, v);
        }
        let producer: FutureProducer = c
            .create()
            .map_err(|e| Error::Kafka(config.scrub(&format!("alerts producer: {e}"))))?;
        Ok(Self {
            producer: Mutex::new(producer),
            client: c,
            topic: topic.to_string(),
            scrub: config.clone(),
        })
    }

    /// The topic alerts go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `alerts` in order and waits until the brokers acknowledged
    /// every one of them; `health(false)` is called when an outage begins and
    /// `health(true)` when it ends.
    ///
    /// A broker outage does not fail the batch: alerts whose delivery timed out
    /// or found no broker are sent again (same `alert_id`s, so a consumer that
    /// deduplicates sees them once) until the brokers are back, for up to
    /// [`BROKER_OUTAGE_LIMIT`].
    ///
    /// # Errors
    /// The brokers refused a message (authorization, size, …), or were
    /// unreachable for longer than [`BROKER_OUTAGE_LIMIT`].
    pub async fn send(&self, alerts: &[Alert], health: &dyn Fn(bool)) -> Result<()> {
        let started = Instant::now();
        let mut todo: Vec<&Alert> = alerts.iter().collect();
        // Set after the first failed round, until the alerts are out.
        let mut outage = false;
        loop {
            let failed = self.send_once(&todo, outage).await?;
            if failed.is_empty() {
                if outage {
                    eprintln!(
                        "txpipe: alerts topic {} acknowledging again after {:.1}s",
                        self.topic,
                        started.elapsed().as_secs_f64()
                    );
                    health(true);
                }
                return Ok(());
            }
            let (first, reason) = &failed[0];
            if started.elapsed() >= BROKER_OUTAGE_LIMIT {
                return Err(Error::Kafka(self.scrub.scrub(&format!(
                    "alert {} to topic {}: brokers unreachable for {}s ({reason}); \
                     the next run re-sends the undelivered alerts",
                    first.alert_id,
                    self.topic,
                    started.elapsed().as_secs()
                ))));
            }
            if !outage {
                eprintln!(
                    "txpipe: alerts topic {}: {} alert(s) not acknowledged ({}); retrying",
                    self.topic,
                    failed.len(),
                    self.scrub.scrub(reason)
                );
                health(false);
                outage = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            // A fresh producer (a new producer id): after timed-out sends the old
            // one's idempotence sequence may no longer match what the broker kept
            // across its restart (Tansu then answers "unknown broker error").
            self.renew_producer()?;
            todo = failed.into_iter().map(|(a, _)| a).collect();
        }
    }

    /// Replaces the producer with a new one.
    fn renew_producer(&self) -> Result<()> {
        let fresh: FutureProducer = self
            .client
            .create()
            .map_err(|e| Error::Kafka(self.scrub.scrub(&format!("alerts producer: {e}"))))?;
        if let Ok(mut p) = self.producer.lock() {
            *p = fresh;
        }
        Ok(())
    }

    /// One attempt: the alerts that failed with an outage-like error (during
    /// an `outage`, any error: the broker may still be recovering), in order.
    async fn send_once<'a>(
        &self,
        alerts: &[&'a Alert],
        outage: bool,
    ) -> Result<Vec<(&'a Alert, String)>> {
        let producer = match self.producer.lock() {
            Ok(p) => p.clone(),
            Err(_) => return Err(Error::Kafka("alerts producer lock poisoned".into())),
        };
        let payloads: Vec<String> = alerts.iter().map(|a| a.json.to_string()).collect();
        let mut pending = Vec::with_capacity(alerts.len());
        for (a, payload) in alerts.iter().zip(&payloads) {
            let record = FutureRecord::to(&self.topic).key(&a.key).payload(payload);
            pending.push(producer.send(record, Duration::from_secs(10)));
        }
        let mut failed = Vec::new();
        for (a, delivery) in alerts.iter().zip(futures::future::join_all(pending).await) {
            if let Err((e, _)) = delivery {
                if outage || is_outage(&e) {
                    failed.push((*a, e.to_string()));
                } else {
                    return Err(Error::Kafka(self.scrub.scrub(&format!(
                        "alert {} to topic {}: {e}",
                        a.alert_id, self.topic
                    ))));
                }
            }
        }
        Ok(failed)
    }

    /// Waits for anything still queued.
    pub fn flush(&self) {
        if let Ok(p) = self.producer.lock() {
            let _ = p.flush(Duration::from_secs(10));
        }
    }
}
