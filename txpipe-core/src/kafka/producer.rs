//! `txpipe produce`: publish generated or file transactions to a topic.
//!
//! Messages follow the input contract, keyed by `customer_id` (per-customer
//! order is what stateful rules need), with `acks=all`, idempotence, batching
//! and lz4/zstd compression. Delivery is confirmed per message; the summary
//! says how many were delivered and how many failed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, TransactionGenerator};

/// What to publish.
#[derive(Debug, Clone)]
pub enum ProduceInput {
    /// `count` lines from the generator.
    Generate(GenerateOptions),
    /// Every line of a JSON-lines file (`-` for stdin).
    File(PathBuf),
}

/// Options of [`produce`].
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topic (created with `partitions` when missing).
    pub topic: String,
    /// Partitions of a newly created topic.
    pub partitions: i32,
    /// Messages per second; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// `lz4` or `zstd` (snappy batches are not served by every broker).
    pub compression: String,
    /// Extra librdkafka settings (TLS, SASL, …); secrets stay redacted.
    pub config: KafkaConfig,
}

impl Default for ProduceOptions {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: "transactions".into(),
            partitions: 4,
            rate: None,
            compression: "lz4".into(),
            config: KafkaConfig::new(),
        }
    }
}

/// Delivery outcome of a produce run.
#[derive(Debug, Clone, Default)]
pub struct ProduceSummary {
    /// Messages handed to the producer.
    pub sent: u64,
    /// Messages acknowledged by the brokers.
    pub delivered: u64,
    /// Messages that failed for good.
    pub failed: u64,
    /// First delivery error seen.
    pub first_error: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Payload bytes sent.
    pub bytes: u64,
}

/// Appends the next message to the buffer; `false` at the end of the input.
type LineSource = Box<dyn FnMut(&mut Vec<u8>) -> Result<bool> + Send>;

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct DeliveryContext(Arc<Counters>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.0.first_error.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// The `customer_id` value of a JSON line, found without parsing it.
fn customer_key(line: &[u8]) -> Option<&[u8]> {
    const NEEDLE: &[u8] = b"\"customer_id\":\"";
    let at = line.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    Some(&line[at..at + len])
}

/// Publishes the input and waits for every delivery report.
///
/// `progress` is called about once per 10,000 messages.
///
/// # Errors
/// The brokers are unreachable, the topic cannot be created, or the input
/// cannot be read. Individual delivery failures are counted, not returned.
pub async fn produce(
    input: ProduceInput,
    opts: &ProduceOptions,
    progress: &mut (dyn FnMut(&ProduceSummary) + Send),
) -> Result<ProduceSummary> {
    if !matches!(opts.compression.as_str(), "lz4" | "zstd" | "gzip" | "none") {
        return Err(Error::Config(format!(
            "compression must be lz4, zstd, gzip or none, got '{}'",
            opts.compression
        )));
    }
    let extra = opts.config.pairs();
    super::create_topic_if_missing(&opts.brokers, &opts.topic, opts.partitions, &extra).await?;
    let counters = Arc::new(Counters::default());
    let mut config = super::client_config(&opts.brokers, &[]);
    config
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", &opts.compression)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "500000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", "60000");
    for (k, v) in &extra {
        config.set(k, v);
    }
    let producer: ThreadedProducer<DeliveryContext> = config
        .create_with_context(DeliveryContext(counters.clone()))
        .map_err(|e| Error::Config(opts.config.scrub(&format!("kafka producer: {e}"))))?;

    let mut lines: LineSource = match input {
        ProduceInput::Generate(g) => {
            let mut generator = TransactionGenerator::try_new(g)?;
            Box::new(move |buf: &mut Vec<u8>| Ok(generator.next_line(buf).is_some()))
        }
        ProduceInput::File(path) => {
            let reader: Box<dyn Read + Send> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(File::open(&path).map_err(|e| Error::io("opening input", &path, e))?)
            };
            let mut reader = BufReader::with_capacity(1 << 20, reader);
            Box::new(move |buf: &mut Vec<u8>| {
                let n = reader
                    .read_until(b'\n', buf)
                    .map_err(|e| Error::io("reading input", &path, e))?;
                while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    buf.pop();
                }
                Ok(n > 0)
            })
        }
    };

    let started = Instant::now();
    let mut summary = ProduceSummary::default();
    let mut line = Vec::with_capacity(1024);
    let topic = opts.topic.clone();
    let producer_ref = &producer;
    loop {
        line.clear();
        if !lines(&mut line)? {
            break;
        }
        if let Some(rate) = opts.rate {
            let due = Duration::from_secs_f64(summary.sent as f64 / rate);
            let elapsed = started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(&topic).payload(&line[..]);
        if let Some(k) = customer_key(&line) {
            record = record.key(k);
        }
        let mut pending = record;
        loop {
            match producer_ref.send(pending) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    pending = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut f) = counters.first_error.lock() {
                        f.get_or_insert_with(|| e.to_string());
                    }
                    break;
                }
            }
        }
        summary.sent += 1;
        summary.bytes += line.len() as u64;
        if summary.sent % 10_000 == 0 {
            summary.delivered = counters.delivered.load(Ordering::Relaxed);
            summary.failed = counters.failed.load(Ordering::Relaxed);
            summary.elapsed = started.elapsed();
            progress(&summary);
        }
    }
    let flushed = tokio::task::spawn_blocking(move || {
        let r = producer.flush(Duration::from_secs(120));
        drop(producer);
        r
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?;
    summary.delivered = counters.delivered.load(Ordering::Relaxed);
    summary.failed = counters.failed.load(Ordering::Relaxed);
    summary.first_error = counters.first_error.lock().ok().and_then(|f| f.clone());
    summary.elapsed = started.elapsed();
    if let Err(e) = flushed {
        summary
            .first_error
            .get_or_insert_with(|| format!("flush: {e}"));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_customer_key() {
        assert_eq!(
            customer_key(br#"{"a":1,"customer_id":"abc","x":2}"#),
            Some(&b"abc"[..])
        );
        assert_eq!(customer_key(br#"{"a":1}"#), None);
        assert_eq!(customer_key(br#"{"customer_id":"unterminated"#), None);
    }
}
