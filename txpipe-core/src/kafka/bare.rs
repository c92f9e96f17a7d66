//! The baseline for Kafka benchmarks: a plain rdkafka consumer that reads a
//! topic from the beginning to its current end and does nothing with the
//! messages. `txpipe ingest` is measured against this rate.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::{Error, Result};

/// What the bare consumer read.
#[derive(Debug, Clone, Copy)]
pub struct BareConsume {
    /// Messages read.
    pub messages: u64,
    /// Payload bytes read.
    pub bytes: u64,
    /// Wall time from the first poll to the last message.
    pub elapsed: Duration,
}

/// Reads every partition of `topic` from its low to its high watermark.
///
/// # Errors
/// The brokers are unreachable, the topic is missing, or a read fails.
pub fn bare_consume(brokers: &str, topic: &str, extra: &[(String, String)]) -> Result<BareConsume> {
    let mut config = super::client_config(brokers, extra);
    config
        .set("group.id", "txpipe-bare-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "131072");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| Error::Config(format!("kafka consumer: {e}")))?;
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    for (p, (low, high)) in super::topic_watermarks(&consumer, topic, timeout)? {
        remaining += high - low;
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(|e| Error::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Error::Kafka(format!("assigning {topic}: {e}")))?;
    let (mut messages, mut bytes) = (0u64, 0u64);
    let started = Instant::now();
    let mut last = Instant::now();
    while (messages as i64) < remaining {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                messages += 1;
                bytes += m.payload_len() as u64;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(Error::Kafka(format!("reading {topic}: {e}"))),
            None if last.elapsed() > Duration::from_secs(30) => {
                return Err(Error::Kafka(format!(
                    "read {messages} of {remaining} messages of {topic}, then nothing for 30 s"
                )))
            }
            None => {}
        }
    }
    Ok(BareConsume {
        messages,
        bytes,
        elapsed: started.elapsed(),
    })
}
