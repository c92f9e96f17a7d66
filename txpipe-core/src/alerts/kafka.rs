//! Alerts to a Kafka topic, keyed by customer, each delivery acknowledged.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::message::Alert;
use crate::error::{Error, Result};
use crate::kafka::KafkaConfig;

/// Partitions of an alerts topic txpipe creates.
pub const ALERT_PARTITIONS: i32 = 4;

/// A producer for the alerts topic.
pub struct KafkaAlerts {
    producer: FutureProducer,
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
            .set("message.timeout.ms", "30000");
        for (k, v) in &extra {
            c.set(k, v);
        }
        let producer: FutureProducer = c
            .create()
            .map_err(|e| Error::Kafka(config.scrub(&format!("alerts producer: {e}"))))?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            scrub: config.clone(),
        })
    }

    /// The topic alerts go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes `alerts` in order and waits until the brokers acknowledged
    /// every one of them.
    ///
    /// # Errors
    /// A message was not acknowledged within the delivery timeout.
    pub async fn send(&self, alerts: &[Alert]) -> Result<()> {
        let payloads: Vec<String> = alerts.iter().map(|a| a.json.to_string()).collect();
        let mut pending = Vec::with_capacity(alerts.len());
        for (a, payload) in alerts.iter().zip(&payloads) {
            let record = FutureRecord::to(&self.topic).key(&a.key).payload(payload);
            pending.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for (i, delivery) in futures::future::join_all(pending)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err((e, _)) = delivery {
                return Err(Error::Kafka(self.scrub.scrub(&format!(
                    "alert {} to topic {}: {e}",
                    alerts[i].alert_id, self.topic
                ))));
            }
        }
        Ok(())
    }

    /// Waits for anything still queued.
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
