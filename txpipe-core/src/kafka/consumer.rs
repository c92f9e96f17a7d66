//! A Kafka consumer-group source whose positions live in the lake.
//!
//! * Auto-commit is off. On every partition assignment the consumer reads the
//!   stream's committed positions from the fact table's Delta log and starts each
//!   partition there (the lake is the source of truth); a partition the lake has
//!   never seen starts at the earliest (or latest) offset.
//! * Each batch records, per partition, the position it continues from; the
//!   lake writer refuses a batch that does not continue exactly from the lake's
//!   position, so a member that lost its partitions in a rebalance (or a zombie)
//!   cannot duplicate rows. On such a conflict the source re-seeks to the lake.
//! * After the lake commit, the group's Kafka offsets are committed too, so lag
//!   tools (kafka-consumer-groups, Burrow) see real progress.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::runtime::Handle;

use super::config::{KafkaConfig, Origin};
use crate::error::{Error, Result};
use crate::metrics::IngestMetrics;
use crate::sink::{LakeWriter, SourcePosition};
use crate::source::file::BatchLimits;
use crate::source::{stable_hash, RawBatch};

use super::watchdog::{OrphanWatch, Verdict};

/// Where a partition the lake has never seen starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartOffset {
    /// The oldest message the broker still has.
    #[default]
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// Default bound on how long `stop_when_idle` waits for partitions that have
/// pending messages and make no progress.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

/// Options of a Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Topic to consume.
    pub topic: String,
    /// Consumer group; members of one group split the partitions.
    pub group: String,
    /// Start of partitions the lake has never seen.
    pub start: StartOffset,
    /// Stop once the lake has caught up with the topic: no message arrived
    /// for this long, and every partition's committed lake position has
    /// reached the high watermark seen when the quiet began — whichever
    /// member owns the partition.
    pub stop_when_idle: Option<Duration>,
    /// With `stop_when_idle`: how long to wait for partitions that still have
    /// pending messages but make no progress (their owner may be a dead
    /// member the broker has not expired) before failing with
    /// [`Error::DrainTimeout`].
    pub drain_timeout: Duration,
    /// Stop after this many messages.
    pub max_messages: Option<u64>,
    /// Extra librdkafka settings (TLS, SASL, …); secrets stay redacted.
    pub config: KafkaConfig,
}

impl Default for KafkaSourceOptions {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topic: String::new(),
            group: String::new(),
            start: StartOffset::default(),
            stop_when_idle: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            max_messages: None,
            config: KafkaConfig::new(),
        }
    }
}

/// The librdkafka settings a source with `opts` runs with: txpipe's consumer
/// defaults, then the user's settings (which win). Secrets stay redacted in
/// its `Debug` and [`KafkaConfig::redacted`] (`txpipe ingest --print-config`).
pub fn effective_config(opts: &KafkaSourceOptions) -> KafkaConfig {
    let mut c = KafkaConfig::new();
    let mut default = |k: &str, v: &str| c.set(k, v, Origin::Default);
    default("bootstrap.servers", &opts.brokers);
    default("client.id", concat!("txpipe-", env!("CARGO_PKG_VERSION")));
    default("group.id", &opts.group);
    default("enable.auto.commit", "false");
    default("enable.auto.offset.store", "false");
    default("auto.offset.reset", "earliest");
    default("enable.partition.eof", "false");
    default("session.timeout.ms", "6000");
    // Brokers wait up to this long for members to rejoin a rebalance; a
    // member killed with -9 never does, so keep it short (we poll every 100 ms).
    default("max.poll.interval.ms", "20000");
    default("heartbeat.interval.ms", "1000");
    // How long the broker may hold a fetch that has no data. Only an idle
    // partition waits it out on Kafka, but on Tansu it showed in every batch:
    // at 5 000 msg/s with --batch-ms 200, p99 produce -> alert fell from
    // 1.9-2.6 s at 100 ms to 0.72-0.82 s at 10-50 ms (BENCHMARKS.md).
    default("fetch.wait.max.ms", "50");
    default("queued.max.messages.kbytes", "131072");
    // Notice partitions added to the topic within seconds, not minutes.
    default("topic.metadata.refresh.interval.ms", "10000");
    c.merge(&opts.config);
    c
}

/// The lake stream key of a topic consumed by a group.
pub fn stream_key(topic: &str, group: &str) -> String {
    let clean: String = topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "kafka-{clean}-{:016x}",
        stable_hash(format!("{topic}\0{group}").as_bytes())
    )
}

/// State shared between the rebalance callback, the poll loop and the committer.
#[derive(Debug, Default)]
struct Shared {
    /// Bumped on every assignment change.
    generation: AtomicU64,
    /// Assigned partitions and the lake position each started from.
    assigned: Mutex<BTreeMap<i32, Option<i64>>>,
    /// Set by the committer after a conflict: re-seek to the lake.
    resync: AtomicBool,
    /// An error raised inside a callback, reported by the poll loop.
    error: Mutex<Option<String>>,
    /// Reachability of the brokers.
    broker: Mutex<BrokerState>,
}

/// Whether the brokers answer, as seen by the client.
#[derive(Debug, Default)]
struct BrokerState {
    /// Since when they have not answered (None: they do).
    down_since: Option<Instant>,
    /// What the client last said about it.
    last_error: Option<String>,
}

impl Shared {
    /// Records whether the brokers answer; prints the transitions.
    fn note_broker(&self, up: bool, error: Option<String>) {
        let Ok(mut b) = self.broker.lock() else {
            return;
        };
        match (up, b.down_since) {
            (false, None) => {
                eprintln!(
                    "txpipe: Kafka brokers unreachable ({}); retrying",
                    error.as_deref().unwrap_or("no answer")
                );
                b.down_since = Some(Instant::now());
            }
            (true, Some(since)) => {
                eprintln!(
                    "txpipe: Kafka brokers reachable again after {:.1}s",
                    since.elapsed().as_secs_f64()
                );
                b.down_since = None;
            }
            _ => {}
        }
        if up {
            b.last_error = None;
        } else if error.is_some() {
            b.last_error = error;
        }
    }

    /// `(down for, last error)` while the brokers do not answer.
    fn broker_down(&self) -> Option<(Duration, Option<String>)> {
        let b = self.broker.lock().ok()?;
        b.down_since.map(|t| (t.elapsed(), b.last_error.clone()))
    }

    /// The partitions this member owns now.
    fn owned(&self) -> Vec<i32> {
        self.assigned
            .lock()
            .map(|a| a.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// librdkafka callbacks: assignment from lake positions.
struct LakeContext {
    topic: String,
    start: StartOffset,
    handle: Handle,
    reader: Mutex<LakeWriter>,
    shared: Arc<Shared>,
    /// The client settings, to scrub secrets out of what librdkafka says.
    config: KafkaConfig,
}

impl ClientContext for LakeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        // librdkafka retries and reports most trouble through errors the poll
        // loop sees; its own log is for debugging (`TXPIPE_DEBUG=1` together
        // with `--kafka-config debug=cgrp,fetch`).
        if debug_enabled() {
            let line = self.config.scrub(log_message);
            eprintln!("txpipe: librdkafka {level:?} {fac}: {line}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let reason = self.config.scrub(reason);
        let down = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        );
        if down {
            self.shared.note_broker(false, Some(reason));
        } else if debug_enabled() {
            eprintln!("txpipe: kafka client error: {error}: {reason}");
        }
    }
}

/// Whether `TXPIPE_DEBUG` asks for consumer-group diagnostics on stderr.
fn debug_enabled() -> bool {
    std::env::var_os("TXPIPE_DEBUG").is_some()
}

impl LakeContext {
    fn lake_positions(&self) -> Result<BTreeMap<i32, SourcePosition>> {
        let mut reader = self
            .reader
            .lock()
            .map_err(|_| Error::Worker("lake reader lock poisoned".into()))?;
        let positions = self.handle.block_on(reader.refresh())?;
        Ok(positions.clone())
    }

    /// The lake's next offset per partition.
    fn lake_next_offsets(&self) -> Result<BTreeMap<i32, i64>> {
        Ok(self
            .lake_positions()?
            .into_iter()
            .map(|(p, pos)| (p, pos.next_offset))
            .collect())
    }

    fn fail(&self, msg: String) {
        if let Ok(mut e) = self.shared.error.lock() {
            e.get_or_insert(msg);
        }
    }
}

impl ConsumerContext for LakeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Partitions added to the topic after the start are read too.
                if let Ok(mut reader) = self.reader.lock() {
                    reader.track(tpl.elements().iter().map(|e| e.partition()));
                }
                let positions = match self.lake_positions() {
                    Ok(p) => p,
                    Err(e) => {
                        self.fail(format!("reading lake positions on assignment: {e}"));
                        let _ = consumer.unassign();
                        return;
                    }
                };
                let mut assigned = BTreeMap::new();
                for elem in tpl.elements() {
                    assigned.insert(
                        elem.partition(),
                        positions.get(&elem.partition()).map(|p| p.next_offset),
                    );
                }
                for (p, pos) in &assigned {
                    let offset = match (pos, self.start) {
                        (Some(o), _) => Offset::Offset(*o),
                        (None, StartOffset::Earliest) => Offset::Beginning,
                        (None, StartOffset::Latest) => Offset::End,
                    };
                    let _ = tpl.set_partition_offset(&self.topic, *p, offset);
                }
                if debug_enabled() {
                    eprintln!("txpipe: assigned {assigned:?} (lake positions)");
                }
                if let Err(e) = consumer.assign(tpl) {
                    self.fail(format!("assigning partitions: {e}"));
                }
                if let Ok(mut a) = self.shared.assigned.lock() {
                    *a = assigned;
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if debug_enabled() {
                    eprintln!("txpipe: partitions revoked");
                }
                let _ = consumer.unassign();
                if let Ok(mut a) = self.shared.assigned.lock() {
                    a.clear();
                }
            }
            other => self.fail(format!(
                "rebalance error: {:?}",
                RDKafkaErrorCode::from(other)
            )),
        }
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// How long closing the consumer (leaving the group) may take when the last
/// handle is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer, closed within [`CLOSE_TIMEOUT`] when dropped.
///
/// librdkafka's close waits for the group coordinator; after the topic was
/// deleted, or with the brokers gone, some brokers never answer and a plain
/// drop would hang the process for good. The close runs on its own thread and
/// is abandoned (with a message) after the bound; nothing is left to commit by
/// then, the lake holds the positions.
struct Closing(Option<BaseConsumer<LakeContext>>);

impl std::ops::Deref for Closing {
    type Target = BaseConsumer<LakeContext>;
    fn deref(&self) -> &Self::Target {
        // Only `drop` takes the consumer out.
        self.0
            .as_ref()
            .expect("the consumer is present until dropped")
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let Some(consumer) = self.0.take() else {
            return;
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let closer = std::thread::Builder::new()
            .name("txpipe-kafka-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = tx.send(());
            });
        if closer.is_ok() && rx.recv_timeout(CLOSE_TIMEOUT).is_err() {
            eprintln!(
                "txpipe: the Kafka consumer did not close within {}s (the broker does not \
                 answer the group leave); leaving it behind",
                CLOSE_TIMEOUT.as_secs()
            );
        }
    }
}

/// Commits the group's Kafka offsets after the lake commit (for lag tools).
#[derive(Clone)]
pub struct OffsetCommitter {
    consumer: Arc<Closing>,
    topic: String,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OffsetCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetCommitter")
            .field("topic", &self.topic)
            .finish()
    }
}

impl OffsetCommitter {
    /// Commits `positions` to the group asynchronously; only partitions this
    /// member still owns are committed.
    pub fn commit(&self, positions: &BTreeMap<i32, SourcePosition>) {
        let owned = self.shared.owned();
        let mut tpl = TopicPartitionList::new();
        for (p, pos) in positions {
            if owned.contains(p) {
                let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(pos.next_offset));
            }
        }
        if tpl.count() > 0 {
            let _ = self.consumer.commit(&tpl, CommitMode::Async);
        }
    }

    /// Asks the poll loop to drop its partial batch and re-seek to the lake's positions.
    pub fn request_resync(&self) {
        self.shared.resync.store(true, Ordering::SeqCst);
    }
}

/// A consumer-group member producing micro-batches.
pub struct KafkaSource {
    /// Partitions of the topic at connect.
    partition_count: usize,
    consumer: Arc<Closing>,
    shared: Arc<Shared>,
    opts: KafkaSourceOptions,
    /// Next offset expected per partition (continuation point of the next batch).
    expected: HashMap<i32, i64>,
    generation: u64,
    consumed: u64,
    last_message: Instant,
    watch: OrphanWatch,
    last_watch: Instant,
    metrics: Option<Arc<IngestMetrics>>,
    /// Set once the source has been idle for `stop_when_idle`.
    drain: Option<Drain>,
}

/// `--stop-when-idle` at work: the source is quiet, and it waits until the lake
/// holds everything the topic held when the quiet began.
#[derive(Debug)]
struct Drain {
    /// `(low, high)` watermarks when the quiet began: what the lake must reach.
    target: Option<BTreeMap<i32, (i64, i64)>>,
    /// The lake's positions at the last check.
    lake_seen: BTreeMap<i32, i64>,
    /// Last time anything moved (a lake position; a message resets the drain).
    progress_at: Instant,
    /// Last check.
    checked_at: Option<Instant>,
    /// Lag per partition at the last check.
    lag: BTreeMap<i32, i64>,
    /// Whether this member has said it is waiting.
    announced: bool,
}

/// How often a draining source compares the lake with the topic.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// A partition with pending messages and no lake progress for this long, owned
/// by no member, makes this member rejoin the group (see [`super::watchdog`]).
/// Longer than a session timeout plus a rebalance on a healthy broker.
const ORPHAN_STALL_LIMIT: Duration = Duration::from_secs(20);
/// How often the group's health is checked.
const WATCH_INTERVAL: Duration = Duration::from_secs(3);

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.opts.topic)
            .field("group", &self.opts.group)
            .finish()
    }
}

impl KafkaSource {
    /// Connects, checks the topic and subscribes.
    ///
    /// `reader` is a lake writer of the same stream used only to read committed
    /// positions on assignment; `handle` runs its I/O.
    ///
    /// # Errors
    /// The brokers are unreachable after bounded retries, the topic does not
    /// exist, or the client configuration is invalid.
    pub fn connect(opts: KafkaSourceOptions, reader: LakeWriter, handle: Handle) -> Result<Self> {
        let partition_count =
            match super::check_topic(&opts.brokers, &opts.topic, &opts.config.pairs())? {
                Some(n) => n,
                None => {
                    return Err(Error::Kafka(format!(
                        "topic {} does not exist on {}",
                        opts.topic, opts.brokers
                    )))
                }
            };
        let shared = Arc::new(Shared::default());
        let mut reader = reader;
        reader.track(0..partition_count as i32);
        let context = LakeContext {
            topic: opts.topic.clone(),
            start: opts.start,
            handle,
            reader: Mutex::new(reader),
            shared: shared.clone(),
            config: opts.config.clone(),
        };
        let mut config = super::client_config(&opts.brokers, &[]);
        for (k, v) in effective_config(&opts).pairs() {
            config.set(k, v);
        }
        if debug_enabled() {
            config.set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
        }
        let consumer: BaseConsumer<LakeContext> = config
            .create_with_context(context)
            .map_err(|e| Error::Config(opts.config.scrub(&format!("kafka consumer: {e}"))))?;
        consumer
            .subscribe(&[&opts.topic])
            .map_err(|e| Error::Kafka(format!("subscribing to {}: {e}", opts.topic)))?;
        Ok(Self {
            partition_count,
            consumer: Arc::new(Closing(Some(consumer))),
            shared,
            opts,
            expected: HashMap::new(),
            generation: 0,
            consumed: 0,
            last_message: Instant::now(),
            watch: OrphanWatch::new(ORPHAN_STALL_LIMIT),
            last_watch: Instant::now(),
            metrics: None,
            drain: None,
        })
    }

    /// A handle for the committer: group offset commits and resync requests.
    pub fn committer(&self) -> OffsetCommitter {
        OffsetCommitter {
            consumer: self.consumer.clone(),
            topic: self.opts.topic.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Partitions of the topic when the source connected.
    pub fn partition_count(&self) -> usize {
        self.partition_count
    }

    /// Publishes consumer lag per partition into `metrics` (measured every few seconds).
    pub fn set_metrics(&mut self, metrics: Arc<IngestMetrics>) {
        self.metrics = Some(metrics);
    }

    /// Messages consumed so far (duplicates skipped are not counted).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    fn take_callback_error(&self) -> Result<()> {
        match self.shared.error.lock().ok().and_then(|mut e| e.take()) {
            Some(msg) => Err(Error::Kafka(msg)),
            None => Ok(()),
        }
    }

    /// Resets continuation points to the assignment's lake positions.
    fn reset_expected(&mut self) {
        self.expected.clear();
        if let Ok(a) = self.shared.assigned.lock() {
            for (p, pos) in a.iter() {
                if let Some(o) = pos {
                    self.expected.insert(*p, *o);
                }
            }
        }
    }

    /// Re-reads the lake and seeks every owned partition to its committed position.
    fn resync(&mut self) -> Result<()> {
        let positions = {
            let ctx = self.consumer.context();
            ctx.lake_positions()?
        };
        let owned: Vec<i32> = self.shared.owned();
        let mut assigned = BTreeMap::new();
        for p in owned {
            let pos = positions.get(&p).map(|x| x.next_offset);
            // A partition the lake has never seen goes back to where the
            // assignment started it: the batch just dropped may have held its
            // first messages, and continuing from the fetch position would
            // skip them with nothing in the lake to notice.
            let to = match (pos, self.opts.start) {
                (Some(o), _) => Offset::Offset(o),
                (None, StartOffset::Earliest) => Offset::Beginning,
                (None, StartOffset::Latest) => Offset::End,
            };
            self.consumer
                .seek(&self.opts.topic, p, to, Duration::from_secs(10))
                .map_err(|e| Error::Kafka(format!("seeking partition {p} to {to:?}: {e}")))?;
            assigned.insert(p, pos);
        }
        if let Ok(mut a) = self.shared.assigned.lock() {
            *a = assigned;
        }
        self.reset_expected();
        Ok(())
    }

    /// Polls until a micro-batch is full (rows, bytes or time) and returns it;
    /// `Ok(None)` when the source is finished (stop requested, idle timeout or
    /// message limit reached, with nothing pending).
    ///
    /// # Errors
    /// A fatal consumer error (topic deleted, authentication, callback failure).
    pub fn next_batch(
        &mut self,
        limits: BatchLimits,
        stop: &AtomicBool,
    ) -> Result<Option<RawBatch>> {
        let mut batch = RawBatch::default();
        let mut opened: Option<Instant> = None;
        loop {
            self.take_callback_error()?;
            let limit_reached = self.opts.max_messages.is_some_and(|m| self.consumed >= m);
            if stop.load(Ordering::Relaxed) || limit_reached {
                return Ok((!batch.is_empty()).then_some(batch));
            }
            if self.shared.resync.swap(false, Ordering::SeqCst) {
                self.consumed -= batch.len() as u64;
                batch = RawBatch::default();
                opened = None;
                self.resync()?;
            }
            let generation = self.shared.generation.load(Ordering::SeqCst);
            if generation != self.generation {
                // Assignment changed: what we hold may belong to someone else now.
                self.generation = generation;
                // Idle time counts from the new assignment, not from before it.
                self.last_message = Instant::now();
                self.consumed -= batch.len() as u64;
                batch = RawBatch::default();
                opened = None;
                self.reset_expected();
                self.watch.reset();
            }
            if self.last_watch.elapsed() >= WATCH_INTERVAL {
                self.last_watch = Instant::now();
                self.watch_group()?;
            }
            let wait = opened.map_or(Duration::from_millis(100), |t| {
                limits
                    .max_wait
                    .saturating_sub(t.elapsed())
                    .min(Duration::from_millis(100))
            });
            match self.consumer.poll(wait) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(KafkaError::MessageConsumption(code)))
                    if matches!(
                        code,
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic
                    ) =>
                {
                    return Err(self.topic_gone(&format!("{code:?}")));
                }
                Some(Err(e)) => {
                    let msg = self.opts.config.scrub(&e.to_string());
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::AllBrokersDown
                                | RDKafkaErrorCode::BrokerTransportFailure
                        )
                    ) {
                        self.shared.note_broker(false, Some(msg));
                    } else {
                        eprintln!("txpipe: kafka consumer warning: {msg}");
                    }
                }
                Some(Ok(m)) => {
                    self.last_message = Instant::now();
                    self.drain = None;
                    self.shared.note_broker(true, None);
                    let (p, o) = (m.partition(), m.offset());
                    if self.expected.get(&p).is_some_and(|e| o < *e) {
                        continue; // already committed to the lake (redelivery after a seek)
                    }
                    let from = self.expected.get(&p).copied().unwrap_or(o);
                    batch.start_offsets.entry(p).or_insert(from);
                    batch.push(m.payload().unwrap_or(&[]), p, o);
                    batch
                        .produced_ms
                        .push(m.timestamp().to_millis().unwrap_or(0));
                    batch.positions.insert(
                        p,
                        SourcePosition {
                            next_offset: o + 1,
                            next_byte: None,
                        },
                    );
                    self.expected.insert(p, o + 1);
                    self.consumed += 1;
                    batch.opened_at = Some(*opened.get_or_insert_with(Instant::now));
                }
            }
            let full = batch.len() >= limits.max_rows || batch.data.len() >= limits.max_bytes;
            if full || opened.is_some_and(|t| t.elapsed() >= limits.max_wait) {
                return Ok(Some(batch));
            }
            let idle = self
                .opts
                .stop_when_idle
                .is_some_and(|d| self.last_message.elapsed() >= d);
            if batch.is_empty() && (idle || self.drain.is_some()) && self.drained()? {
                return Ok(None);
            }
        }
    }

    /// The error for a topic that disappeared under the consumer.
    fn topic_gone(&self, code: &str) -> Error {
        Error::Kafka(format!(
            "topic {} no longer exists on {} ({code}): was it deleted? Everything \
             committed so far is in the lake; nothing after the last commit was landed",
            self.opts.topic, self.opts.brokers
        ))
    }

    /// With `stop_when_idle`: whether the lake has caught up with the topic
    /// (checked at most once a second).
    ///
    /// A partition is caught up when the lake's committed position reaches
    /// the high watermark seen when the quiet began, or, for a partition this
    /// member owns, when its fetch position does (offsets without a message,
    /// such as transaction markers, are then skipped too; what this member
    /// read is committed before the ingest ends).
    ///
    /// # Errors
    /// [`Error::DrainTimeout`] when partitions kept pending messages without
    /// progress for `drain_timeout`; [`Error::Kafka`] when the brokers did not
    /// answer for that long.
    fn drained(&mut self) -> Result<bool> {
        let now = Instant::now();
        let mut d = self.drain.take().unwrap_or(Drain {
            target: None,
            lake_seen: BTreeMap::new(),
            progress_at: now,
            checked_at: None,
            lag: BTreeMap::new(),
            announced: false,
        });
        if d.checked_at.is_some_and(|t| now - t < DRAIN_CHECK_INTERVAL) {
            self.drain = Some(d);
            return Ok(false);
        }
        d.checked_at = Some(now);
        let topic = self.opts.topic.clone();
        let watermarks = super::topic_watermarks(&self.consumer, &topic, Duration::from_secs(2));
        let lake = self.consumer.context().lake_next_offsets()?;
        if lake != d.lake_seen {
            d.lake_seen = lake.clone();
            d.progress_at = now;
        }
        match watermarks {
            Ok(w) if w.is_empty() => return Err(self.topic_gone("no partitions in the metadata")),
            Ok(w) => {
                self.shared.note_broker(true, None);
                let target = d.target.get_or_insert(w);
                let fetched = self.fetch_positions();
                d.lag = target
                    .iter()
                    .filter_map(|(&p, &(low, high))| {
                        let lake_at = super::lake_offset(&lake, p, low);
                        let at = fetched.get(&p).map_or(lake_at, |&f| f.max(lake_at));
                        (at < high).then_some((p, high - at))
                    })
                    .collect();
                if d.lag.is_empty() {
                    return Ok(true);
                }
                if !d.announced {
                    d.announced = true;
                    eprintln!(
                        "txpipe: idle, waiting for the lake to catch up with {topic} ({}; \
                         gives up after {}s without progress)",
                        crate::error::format_lag(&d.lag),
                        self.opts.drain_timeout.as_secs()
                    );
                }
            }
            Err(e) => self.shared.note_broker(false, Some(e.to_string())),
        }
        let stalled = now.duration_since(d.progress_at);
        if stalled >= self.opts.drain_timeout {
            if let Some((down, last)) = self.shared.broker_down() {
                return Err(Error::Kafka(format!(
                    "Kafka brokers at {} unreachable for {:.0}s while waiting for the lake to \
                     catch up with {topic}: {}",
                    self.opts.brokers,
                    down.as_secs_f64(),
                    last.unwrap_or_else(|| "no answer".into())
                )));
            }
            let owned = self.shared.owned();
            let hint = if d.lag.keys().all(|p| owned.contains(p)) {
                "this member owns them, yet the broker serves nothing past these \
                 positions (a message larger than the broker's fetch limit? Tansu 0.6 \
                 serves at most 5 MiB per fetch)"
            } else {
                "their consumers may be dead group members the broker has not expired yet"
            };
            return Err(Error::DrainTimeout {
                hint: hint.into(),
                topic,
                waited_secs: stalled.as_secs(),
                lag: std::mem::take(&mut d.lag),
            });
        }
        self.drain = Some(d);
        Ok(false)
    }

    /// The consumer's fetch position of each partition it owns.
    fn fetch_positions(&self) -> BTreeMap<i32, i64> {
        let owned = self.shared.owned();
        let mut out: BTreeMap<i32, i64> = BTreeMap::new();
        if let Ok(tpl) = self.consumer.position() {
            for e in tpl.elements() {
                if let (true, Offset::Offset(o)) = (owned.contains(&e.partition()), e.offset()) {
                    out.insert(e.partition(), o);
                }
            }
        }
        for (p, o) in &self.expected {
            if owned.contains(p) {
                let v = out.entry(*p).or_insert(*o);
                *v = (*v).max(*o);
            }
        }
        out
    }

    /// Checks for partitions nobody consumes and rejoins the group if there are.
    fn watch_group(&mut self) -> Result<()> {
        let topic = &self.opts.topic;
        let partitions =
            match super::topic_watermarks(&self.consumer, topic, Duration::from_secs(2)) {
                Ok(p) if p.is_empty() => {
                    return Err(self.topic_gone("no partitions in the metadata"))
                }
                Ok(p) => {
                    self.shared.note_broker(true, None);
                    p
                }
                Err(e) => {
                    // Broker busy or away: the client keeps retrying on its own.
                    self.shared.note_broker(false, Some(e.to_string()));
                    self.publish_broker_state();
                    return Ok(());
                }
            };
        self.publish_broker_state();
        let owned: Vec<i32> = self.shared.owned();
        let lake = self.consumer.context().lake_next_offsets()?;
        if let Some(m) = &self.metrics {
            m.set_lag(super::lake_lag(&partitions, &lake));
        }
        if let Verdict::Orphaned(parts) =
            self.watch
                .observe(Instant::now(), &partitions, &owned, &lake)
        {
            eprintln!(
                "txpipe: partitions {parts:?} of {topic} have pending messages and no consumer \
                 for {}s; rejoining group {} to force a rebalance",
                ORPHAN_STALL_LIMIT.as_secs(),
                self.opts.group
            );
            self.consumer.unsubscribe();
            self.consumer
                .subscribe(&[topic])
                .map_err(|e| Error::Kafka(format!("resubscribing to {topic}: {e}")))?;
            self.watch.reset();
        }
        Ok(())
    }

    /// Copies the brokers' reachability into the metrics.
    fn publish_broker_state(&self) {
        if let Some(m) = &self.metrics {
            match self.shared.broker_down() {
                Some((_, last)) => m.set_kafka_up(false, last),
                None => m.set_kafka_up(true, None),
            }
        }
    }

    /// Leaves the group cleanly (partitions are revoked and handed over).
    pub fn close(&self) {
        self.consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && !self
                .shared
                .assigned
                .lock()
                .map(|a| a.is_empty())
                .unwrap_or(true)
        {
            let _ = self.consumer.poll(Duration::from_millis(50));
        }
    }
}
