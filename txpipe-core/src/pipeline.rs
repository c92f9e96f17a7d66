//! The micro-batch loop: it only coordinates.
//!
//! ```text
//!  source thread ──RawBatch──▶ N worker threads ──EncodedBatch──▶ committer (async)
//!  (read + batch)              (decode, rules, Parquet)           (stage, commit, publish, in order)
//! ```
//!
//! Channels are bounded, so memory is bounded by roughly `2 × workers + 1`
//! batches whatever the input size. Batches are committed strictly in source
//! order, so the positions in the Delta log only move forward. The same loop
//! serves files ([`ingest_file`]) and Kafka ([`ingest_kafka`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::alerts::{alerts_of, rule_set_id, AlertConfig, AlertDelivery, AlertSummary};
use crate::error::{Error, Result};
use crate::history::{HistoryScope, LakeHistory};
use crate::kafka::consumer::{stream_key as kafka_stream_key, OffsetCommitter};
use crate::kafka::{KafkaSource, KafkaSourceOptions};
use crate::lake::Lake;
use crate::metrics::IngestMetrics;
use crate::process::BatchProcessor;
use crate::rules::RuleSet;
use crate::seed::load_fx;
use crate::sink::{BatchCounts, CommitEntry, EncodedBatch, LakeWriter};
use crate::source::file::{stream_key, BatchLimits, FileSource};
use crate::source::RawBatch;

mod worker;

/// Default most rows per micro-batch. Measured on 10 M rows (BENCHMARKS.md):
/// 50 k keeps peak RSS under 300 MiB and is faster than 100 k (less data
/// queued between stages), at the cost of about twice as many, smaller files.
pub const DEFAULT_BATCH_ROWS: usize = 50_000;
/// Most rows one Delta commit gathers from batches that are ready together.
pub const GROUP_COMMIT_ROWS: u64 = 200_000;
/// Default most payload bytes per micro-batch.
pub const DEFAULT_BATCH_BYTES: usize = 64 << 20;
/// Default longest wait before a non-empty micro-batch is closed.
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(1);

/// Options of an ingest run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Most messages per micro-batch (one commit each).
    pub batch_rows: usize,
    /// Most payload bytes per micro-batch.
    pub batch_bytes: usize,
    /// Longest time a non-empty micro-batch stays open.
    pub batch_wait: Duration,
    /// Threads decoding, ruling and encoding (default: one per core).
    pub workers: usize,
    /// Set to stop after the batches in flight are committed (e.g. on Ctrl-C).
    pub stop: Arc<AtomicBool>,
    /// Live metrics to update (served by `--metrics-addr`), if any.
    pub metrics: Option<Arc<IngestMetrics>>,
    /// Delta checkpoint every this many commits, for tables this run creates.
    pub checkpoint_interval: u64,
    /// Most rows one Delta commit gathers from batches that are ready
    /// together (0: one commit per batch).
    pub group_commit_rows: u64,
    /// Where flagged transactions are published after their commit.
    pub alerts: AlertConfig,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            batch_rows: DEFAULT_BATCH_ROWS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            batch_wait: DEFAULT_BATCH_WAIT,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            stop: Arc::new(AtomicBool::new(false)),
            metrics: None,
            checkpoint_interval: crate::sink::delta::DEFAULT_CHECKPOINT_INTERVAL,
            group_commit_rows: GROUP_COMMIT_ROWS,
            alerts: AlertConfig::default(),
        }
    }
}

impl IngestOptions {
    fn validate(&self) -> Result<()> {
        if self.batch_rows == 0 || self.batch_bytes == 0 || self.workers == 0 {
            return Err(Error::Config(
                "batch rows, batch bytes and workers must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_rows: self.batch_rows,
            max_bytes: self.batch_bytes,
            max_wait: self.batch_wait,
        }
    }
}

/// What an ingest run did.
#[derive(Debug, Clone, Default)]
pub struct IngestSummary {
    /// The source (absolute file path, `stdin`, or topic).
    pub source: String,
    /// Offset (line) the run resumed at; 0 for a first run or Kafka.
    pub resumed_at: i64,
    /// Row counts of this run (not of earlier runs).
    pub counts: BatchCounts,
    /// Micro-batches committed.
    pub batches: u64,
    /// Batches dropped because another writer had committed their positions
    /// (Kafka rebalances); their rows are landed by whoever owns them.
    pub conflicts: u64,
    /// Files published.
    pub files: u64,
    /// Parquet bytes published.
    pub bytes_written: u64,
    /// Raw input bytes consumed.
    pub input_bytes: u64,
    /// Wall time of the run so far.
    pub elapsed: Duration,
    /// Rule names, in rule order.
    pub rules: Vec<String>,
    /// True when the lake had no fx_rate table and the built-in rates were used.
    pub default_fx: bool,
    /// The last commit (positions, version).
    pub last_commit: Option<CommitEntry>,
    /// Kafka: messages of each partition not in the lake when the run ended
    /// (high watermark − lake position); `None` for a file or when the
    /// brokers could not be asked.
    pub remaining_lag: Option<BTreeMap<i32, i64>>,
    /// Size of the stateful rules' history at the end of the run (keys such
    /// as customers, rows kept, approximate bytes); `None` without window calls.
    pub rule_state: Option<crate::rules::state::StateSize>,
    /// Alerts published (`None` without alert targets).
    pub alerts: Option<AlertSummary>,
}

impl IngestSummary {
    /// Input rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        self.counts.rows_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, entry: &CommitEntry, input_bytes: u64) {
        self.counts.add(&entry.counts);
        self.batches += 1;
        self.files += entry.files.len() as u64;
        self.bytes_written += entry.files.iter().map(|f| f.bytes).sum::<u64>();
        self.input_bytes += input_bytes;
    }
}

/// Lands a JSON-lines file (`-` for stdin) in the lake, exactly once.
///
/// Re-running after an interruption resumes after the last committed batch;
/// re-running on a completed file lands nothing. `progress` is called after
/// every commit with the running totals.
///
/// # Errors
/// Bad options, an unreadable input, a store failure, or another writer
/// ingesting the same file ([`Error::StreamLocked`], see
/// [`StreamLock`](crate::sink::StreamLock)). Bad *records* are not errors:
/// they are quarantined.
pub async fn ingest_file(
    lake: &Lake,
    path: &str,
    rules: Arc<RuleSet>,
    opts: &IngestOptions,
    progress: &mut (dyn FnMut(&IngestSummary) + Send),
) -> Result<IngestSummary> {
    opts.validate()?;
    let started = Instant::now();
    let (stream, name) = stream_key(path)?;
    // One writer per file and lake: held until the ingest returns (the kernel
    // releases it on kill -9). Without one (object stores) the Delta log's
    // position check refuses an overlapping batch.
    let lock = crate::sink::StreamLock::acquire(lake, &stream, &name)?;
    let mut writer = LakeWriter::new(lake.clone(), stream.clone(), name.clone())
        .with_checkpoint_interval(opts.checkpoint_interval);
    let recovered = writer.recover().await?;
    let start = recovered.get(&0).copied();
    let mut alerts = connect_alerts(lake, opts, &stream, &name, &rules, &recovered).await?;
    let (fx, default_fx) = load_fx(lake).await?;
    let mut summary = new_summary(&name, &rules, default_fx);
    summary.resumed_at = start.map_or(0, |p| p.next_offset);
    let history = LakeHistory::new(
        lake.clone(),
        HistoryScope::Lake,
        tokio::runtime::Handle::current(),
    );
    let processor = BatchProcessor::new(Arc::new(fx), rules, name)
        .with_state(Arc::new(history), false)
        .keeping_flagged(alerts.is_some());
    let stage = processor.stage().cloned();
    let mut source = FileSource::open(path, start, opts.stop.clone())?;
    let limits = opts.limits();
    let next = move |_: &AtomicBool| source.next_batch(limits);
    let mut on_commit = |_: &CommitEntry| {};
    let mut on_conflict = |e: Error| Err(e);
    run(
        next,
        &mut writer,
        processor,
        opts,
        &mut summary,
        started,
        progress,
        &mut on_commit,
        &mut on_conflict,
        alerts.as_mut(),
    )
    .await?;
    drop(lock);
    summary.alerts = alerts.map(|a| a.summary().clone());
    summary.rule_state = stage.as_ref().map(|s| s.size());
    release_in_background(stage);
    Ok(summary)
}

/// Lands a Kafka topic in the lake, exactly once, as one member of `group`.
///
/// Runs until stopped (`opts.stop`), idle for `kafka.stop_when_idle`, or
/// `kafka.max_messages` were consumed; then commits what is in flight and
/// leaves the group.
///
/// # Errors
/// Brokers unreachable after bounded retries, topic missing, a store failure.
pub async fn ingest_kafka(
    lake: &Lake,
    kafka: KafkaSourceOptions,
    rules: Arc<RuleSet>,
    opts: &IngestOptions,
    progress: &mut (dyn FnMut(&IngestSummary) + Send),
) -> Result<IngestSummary> {
    opts.validate()?;
    if kafka.group.is_empty() || kafka.topic.is_empty() {
        return Err(Error::Config(
            "a Kafka ingest needs a topic and a group".into(),
        ));
    }
    let started = Instant::now();
    let stream = kafka_stream_key(&kafka.topic, &kafka.group);
    let topic = kafka.topic.clone();
    let (brokers, client_extra) = (kafka.brokers.clone(), kafka.config.pairs());
    let mut writer = LakeWriter::new(lake.clone(), stream.clone(), topic.clone())
        .with_checkpoint_interval(opts.checkpoint_interval)
        .without_byte_positions();
    let recovered = writer.recover().await?;
    let mut alerts = connect_alerts(lake, opts, &stream, &topic, &rules, &recovered).await?;
    let (fx, default_fx) = load_fx(lake).await?;
    let mut summary = new_summary(&topic, &rules, default_fx);
    let history = LakeHistory::new(
        lake.clone(),
        HistoryScope::Topic(topic.clone()),
        tokio::runtime::Handle::current(),
    );
    let processor = BatchProcessor::new(Arc::new(fx), rules, topic.clone())
        .with_state(Arc::new(history), true)
        .keeping_flagged(alerts.is_some());
    let stage = processor.stage().cloned();
    let reader = LakeWriter::new(lake.clone(), stream, topic.clone()).without_byte_positions();
    let handle = tokio::runtime::Handle::current();
    let mut source =
        tokio::task::spawn_blocking(move || KafkaSource::connect(kafka, reader, handle))
            .await
            .map_err(|e| Error::Worker(e.to_string()))??;
    if let Some(m) = &opts.metrics {
        source.set_metrics(m.clone());
    }
    writer.track(0..source.partition_count() as i32);
    let committer: OffsetCommitter = source.committer();
    let limits = opts.limits();
    let next = move |stop: &AtomicBool| {
        let r = source.next_batch(limits, stop);
        if !matches!(r, Ok(Some(_))) {
            source.close();
        }
        r
    };
    let kafka_commits = committer.clone();
    let mut on_commit = move |e: &CommitEntry| kafka_commits.commit(&e.positions);
    let mut on_conflict = |e: Error| match e {
        Error::CommitConflict { .. } => {
            committer.request_resync();
            Ok(())
        }
        other => Err(other),
    };
    run(
        next,
        &mut writer,
        processor,
        opts,
        &mut summary,
        started,
        progress,
        &mut on_commit,
        &mut on_conflict,
        alerts.as_mut(),
    )
    .await?;
    summary.alerts = alerts.map(|a| a.summary().clone());
    // A member killed between a batch's two commits may have left a
    // partition's quarantine behind, and no later batch of it came through
    // this run: complete it before reporting the run as done.
    let lake_at: BTreeMap<i32, i64> = writer
        .recover()
        .await?
        .iter()
        .map(|(p, pos)| (*p, pos.next_offset))
        .collect();
    summary.remaining_lag = tokio::task::spawn_blocking(move || {
        crate::kafka::remaining_lag(&brokers, &topic, &client_extra, &lake_at).ok()
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?;
    summary.rule_state = stage.as_ref().map(|s| s.size());
    release_in_background(stage);
    Ok(summary)
}

/// Frees a large rule state on a thread of its own: the summary is ready
/// without waiting for millions of small frees (and a CLI exiting right after
/// does not wait at all).
fn release_in_background<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("txpipe-free".into())
        .spawn(move || drop(value));
}

/// Connects the alert targets, if any, and re-sends what an earlier run
/// committed but did not deliver (`recovered`: the lake's positions).
async fn connect_alerts(
    lake: &Lake,
    opts: &IngestOptions,
    stream: &str,
    source: &str,
    rules: &RuleSet,
    recovered: &BTreeMap<i32, crate::sink::SourcePosition>,
) -> Result<Option<AlertDelivery>> {
    if opts.alerts.is_empty() {
        return Ok(None);
    }
    let targets = opts.alerts.connect().await?;
    let mut delivery = AlertDelivery::new(
        lake.clone(),
        stream,
        source,
        rule_set_id(rules.config()),
        targets,
    )
    .with_metrics(opts.metrics.clone());
    let at: BTreeMap<i32, i64> = recovered
        .iter()
        .map(|(p, pos)| (*p, pos.next_offset))
        .collect();
    delivery.before_commit(&at).await?;
    Ok(Some(delivery))
}

fn new_summary(source: &str, rules: &RuleSet, default_fx: bool) -> IngestSummary {
    IngestSummary {
        source: source.to_string(),
        rules: rules.names().into_iter().map(String::from).collect(),
        default_fx,
        ..Default::default()
    }
}

/// Runs the loop: `next_batch` on a source thread, processing on workers,
/// commits here in order.
#[allow(clippy::too_many_arguments)]
async fn run<N>(
    mut next_batch: N,
    writer: &mut LakeWriter,
    processor: BatchProcessor,
    opts: &IngestOptions,
    summary: &mut IngestSummary,
    started: Instant,
    progress: &mut (dyn FnMut(&IngestSummary) + Send),
    on_commit: &mut (dyn FnMut(&CommitEntry) + Send),
    on_conflict: &mut (dyn FnMut(Error) -> Result<()> + Send),
    alerts: Option<&mut AlertDelivery>,
) -> Result<()>
where
    N: FnMut(&AtomicBool) -> Result<Option<RawBatch>> + Send + 'static,
{
    let (work_tx, work_rx) = sync_channel::<(u64, RawBatch)>(opts.workers);
    let (done_tx, mut done_rx) =
        tokio::sync::mpsc::channel::<(u64, Result<EncodedBatch>)>(opts.workers + 1);
    let stop = opts.stop.clone();
    let failed = Arc::new(AtomicBool::new(false));

    let reader_failed = failed.clone();
    let reader_done = done_tx.clone();
    let reader = std::thread::Builder::new()
        .name("txpipe-source".into())
        .spawn(move || {
            let mut seq = 0u64;
            while !reader_failed.load(Ordering::Relaxed) {
                match next_batch(&stop) {
                    Ok(Some(raw)) => {
                        if work_tx.send((seq, raw)).is_err() {
                            return;
                        }
                        seq += 1;
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = reader_done.blocking_send((seq, Err(e)));
                        return;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    // Let the source hand over what it holds, then finish.
                    if let Ok(Some(raw)) = next_batch(&stop) {
                        let _ = work_tx.send((seq, raw));
                    }
                    return;
                }
            }
        })
        .map_err(|e| Error::Worker(format!("starting source thread: {e}")))?;

    let work_rx: Arc<Mutex<Receiver<(u64, RawBatch)>>> = Arc::new(Mutex::new(work_rx));
    let mut workers = Vec::with_capacity(opts.workers);
    for i in 0..opts.workers {
        let rx = work_rx.clone();
        let tx = done_tx.clone();
        let processor = processor.clone();
        let worker = std::thread::Builder::new()
            .name(format!("txpipe-work-{i}"))
            .spawn(move || worker::work(&rx, &tx, &processor))
            .map_err(|e| Error::Worker(format!("starting worker thread: {e}")))?;
        workers.push(worker);
    }
    drop(done_tx);

    let outcome = commit_in_order(
        writer,
        &mut done_rx,
        summary,
        started,
        progress,
        on_commit,
        on_conflict,
        opts.metrics.as_deref(),
        opts.group_commit_rows,
        alerts,
    )
    .await;
    if outcome.is_err() {
        failed.store(true, Ordering::Relaxed);
        opts.stop.store(true, Ordering::Relaxed);
    }
    // Unblock and join the threads: workers get an error for their next
    // result and leave; once they have, the work channel's last receiver is
    // gone and a source thread blocked on a full channel gets an error too
    // (the pipeline must not keep a receiver alive while it drains).
    drop(work_rx);
    done_rx.close();
    while done_rx.recv().await.is_some() {}
    let joined = tokio::task::spawn_blocking(move || {
        for w in workers {
            w.join()
                .map_err(|_| Error::Worker("a worker thread panicked".into()))?;
        }
        reader
            .join()
            .map_err(|_| Error::Worker("the source thread panicked".into()))
    })
    .await
    .map_err(|e| Error::Worker(e.to_string()))?;
    outcome?;
    joined?;
    summary.elapsed = started.elapsed();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn commit_in_order(
    writer: &mut LakeWriter,
    done_rx: &mut tokio::sync::mpsc::Receiver<(u64, Result<EncodedBatch>)>,
    summary: &mut IngestSummary,
    started: Instant,
    progress: &mut (dyn FnMut(&IngestSummary) + Send),
    on_commit: &mut (dyn FnMut(&CommitEntry) + Send),
    on_conflict: &mut (dyn FnMut(Error) -> Result<()> + Send),
    metrics: Option<&IngestMetrics>,
    group_rows: u64,
    mut alerts: Option<&mut AlertDelivery>,
) -> Result<()> {
    // Results are handled strictly in source order, errors included: a
    // failure of batch n (or of the source after it) is reported only after
    // batches 0..n were committed, so nothing read before it is left behind.
    let mut pending: BTreeMap<u64, Result<EncodedBatch>> = BTreeMap::new();
    let mut next = 0u64;
    while let Some((seq, result)) = done_rx.recv().await {
        pending.insert(seq, result);
        while let Some(result) = pending.remove(&next) {
            let mut batch = result?;
            next += 1;
            // Group commit: batches already processed and next in line go
            // into the same Delta commit (a commit costs more than a batch
            // when the source is ahead of the lake, e.g. catching up a topic).
            while let Ok((seq, more)) = done_rx.try_recv() {
                pending.insert(seq, more);
            }
            while batch.rows() < group_rows {
                match pending.remove(&next) {
                    Some(Ok(more)) => {
                        batch.absorb(more);
                        next += 1;
                    }
                    Some(Err(e)) => {
                        // Commit what precedes the failure first.
                        pending.insert(next, Err(e));
                        break;
                    }
                    None => break,
                }
            }
            let input_bytes = batch.input_bytes;
            let opened_at = batch.opened_at;
            let produced_ms = std::mem::take(&mut batch.produced_ms);
            let flagged = std::mem::take(&mut batch.flagged);
            let start_offsets = batch.start_offsets.clone();
            if let Some(a) = alerts.as_deref_mut() {
                a.before_commit(&start_offsets).await?;
            }
            let commit_started = Instant::now();
            match writer.commit(batch).await {
                Ok(entry) => {
                    if let Some(m) = metrics {
                        m.record_commit_duration(commit_started.elapsed());
                        m.record_commit(&entry, input_bytes, opened_at, &produced_ms);
                    }
                    if let Some(a) = alerts.as_deref_mut() {
                        let mut list = Vec::new();
                        for rows in &flagged {
                            list.extend(alerts_of(rows, a.rule_set(), a.min_score())?);
                        }
                        a.after_commit(&list, &entry.positions).await?;
                        if let Some(m) = metrics {
                            m.record_alerts(list.len() as u64);
                        }
                    }
                    on_commit(&entry);
                    summary.add(&entry, input_bytes);
                    summary.last_commit = Some(entry);
                }
                Err(e @ Error::CommitConflict { .. }) => {
                    if let Some(a) = alerts.as_deref_mut() {
                        a.not_committed(&start_offsets);
                    }
                    summary.conflicts += 1;
                    if let Some(m) = metrics {
                        m.record_conflict();
                    }
                    on_conflict(e)?;
                }
                Err(e) => return Err(e),
            }
            summary.elapsed = started.elapsed();
            progress(summary);
        }
    }
    if pending.is_empty() {
        return Ok(());
    }
    let left = pending.len();
    // A gap: some batch never came back. Report the first real error if any.
    match pending.into_values().find_map(|r| r.err()) {
        Some(first) => Err(first),
        None => Err(Error::Worker(format!(
            "{left} processed batches were never committed"
        ))),
    }
}
