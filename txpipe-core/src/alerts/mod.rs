//! Real-time fraud alerts: every flagged transaction of a committed batch,
//! published once it is in the lake, to a Kafka topic and/or a webhook.
//!
//! **The guarantee:** at least once, idempotent by `alert_id` — every
//! flagged row the lake commits is delivered to each target after its commit,
//! never before, and a crash can only make a target see an alert again (with
//! the same `alert_id`), never miss one.
//!
//! How: the workers turn each batch's flagged rows into [`Alert`]s; the
//! committer publishes them right after the batch's Delta commit and waits
//! for the target's acknowledgement, then moves the target's cursor in the
//! lake ([`cursor`]). When a batch of a partition starts anywhere else than
//! where that partition's cursor points (a restart after a crash between
//! commit and acknowledgement, a partition taken over in a rebalance), the
//! committed tail in between is first read back from the fact table and
//! re-sent. Kafka transactions would make the topic exactly once; the test
//! broker has none, so consumers deduplicate on `alert_id` (stable: derived
//! from the transaction id and the rule set).

mod cursor;
mod kafka;
mod message;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub use cursor::ALERTS_DIR;
pub use kafka::{KafkaAlerts, ALERT_PARTITIONS, BROKER_OUTAGE_LIMIT};
pub use message::{alert_id, alerts_of, rule_set_id, Alert};
pub use webhook::{redacted_url, Webhook, WebhookPolicy};

use crate::error::Result;
use crate::lake::Lake;
use crate::metrics::IngestMetrics;
use crate::sink::SourcePosition;

/// Where alerts go.
#[derive(Debug)]
pub enum AlertTarget {
    /// A Kafka topic (one message per alert, keyed by customer).
    Kafka(KafkaAlerts),
    /// An HTTP endpoint (one JSON array per micro-batch).
    Webhook(Webhook),
}

impl AlertTarget {
    /// Name shown in summaries (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Self::Kafka(k) => format!("kafka topic {}", k.topic()),
            Self::Webhook(w) => format!("webhook {}", w.target()),
        }
    }

    /// Folder name of the target's cursors.
    fn cursor_id(&self) -> String {
        match self {
            Self::Kafka(k) => format!("kafka-{}", safe(k.topic())),
            Self::Webhook(w) => {
                use sha2::{Digest, Sha256};
                let d = Sha256::digest(w.target_identity().as_bytes());
                let hex: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
                format!("webhook-{hex}")
            }
        }
    }

    async fn send(&self, alerts: &[Alert], health: &dyn Fn(bool)) -> Result<u32> {
        if alerts.is_empty() {
            return Ok(0);
        }
        match self {
            Self::Kafka(k) => k.send(alerts, health).await.map(|()| 0),
            Self::Webhook(w) => w.send(alerts, health).await,
        }
    }
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The alert side of an ingest: its targets and options.
#[derive(Debug, Default)]
pub struct AlertOptions {
    /// Targets (empty: no alerts).
    pub targets: Vec<AlertTarget>,
    /// Publish only alerts with `risk_score >= min_score`.
    pub min_score: Option<f64>,
}

/// What alert delivery did in a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertSummary {
    /// Targets, described without credentials.
    pub targets: Vec<String>,
    /// Alerts acknowledged by every target, for batches of this run.
    pub delivered: u64,
    /// Alerts of earlier commits found undelivered and re-sent (after a
    /// crash between a commit and its acknowledgement, or a partition
    /// taken over from another member).
    pub redelivered: u64,
    /// Failed webhook attempts that a retry then delivered.
    pub retries: u64,
}

/// Publishes committed batches' alerts and keeps the cursors.
#[derive(Debug)]
pub struct AlertDelivery {
    lake: Lake,
    stream: String,
    source: String,
    rule_set: String,
    opts: AlertOptions,
    /// (target, partition) → delivered up to (cached cursor).
    cursors: BTreeMap<(usize, i32), i64>,
    summary: AlertSummary,
    /// When the last delivery finished (for the latency metric).
    pub last_delivered: Option<Instant>,
    /// Live metrics to tell whether the targets acknowledge.
    metrics: Option<Arc<IngestMetrics>>,
}

impl AlertDelivery {
    /// Delivery for the writer `stream` of `source` (file name or topic)
    /// under the rule set `rule_set` ([`rule_set_id`]).
    pub fn new(
        lake: Lake,
        stream: impl Into<String>,
        source: impl Into<String>,
        rule_set: impl Into<String>,
        opts: AlertOptions,
    ) -> Self {
        let summary = AlertSummary {
            targets: opts.targets.iter().map(AlertTarget::describe).collect(),
            ..Default::default()
        };
        Self {
            lake,
            stream: stream.into(),
            source: source.into(),
            rule_set: rule_set.into(),
            opts,
            cursors: BTreeMap::new(),
            summary,
            last_delivered: None,
            metrics: None,
        }
    }

    /// The rule set id alerts are stamped with.
    pub fn rule_set(&self) -> &str {
        &self.rule_set
    }

    /// The minimum risk score of a published alert.
    pub fn min_score(&self) -> Option<f64> {
        self.opts.min_score
    }

    /// True without targets.
    pub fn is_empty(&self) -> bool {
        self.opts.targets.is_empty()
    }

    /// Counts so far.
    pub fn summary(&self) -> &AlertSummary {
        &self.summary
    }

    /// Before a batch starting at `start_offsets` is committed: makes sure
    /// every alert committed before it was delivered (re-sending the
    /// undelivered tail from the lake), and that a cursor exists, so a crash
    /// after the commit is noticed on restart.
    ///
    /// # Errors
    /// The lake could not be read or a target did not acknowledge.
    pub async fn before_commit(&mut self, start_offsets: &BTreeMap<i32, i64>) -> Result<()> {
        for t in 0..self.opts.targets.len() {
            let id = self.opts.targets[t].cursor_id();
            for (&p, &start) in start_offsets {
                if self.cursors.get(&(t, p)) == Some(&start) {
                    continue;
                }
                let at = cursor::read_cursor(&self.lake, &id, &self.stream, p).await?;
                match at {
                    // Alerts start with this run for this partition.
                    None => {
                        cursor::write_cursor(&self.lake, &id, &self.stream, p, start).await?;
                        self.cursors.insert((t, p), start);
                    }
                    Some(c) if c < start => {
                        let rows =
                            cursor::flagged_rows(&self.lake, &self.source, p, c, start).await?;
                        let mut tail = Vec::new();
                        for b in &rows {
                            tail.extend(alerts_of(b, &self.rule_set, self.opts.min_score)?);
                        }
                        let retries = self.send(t, &tail).await?;
                        self.summary.retries += u64::from(retries);
                        self.summary.redelivered += tail.len() as u64;
                        cursor::write_cursor(&self.lake, &id, &self.stream, p, start).await?;
                        self.cursors.insert((t, p), start);
                    }
                    Some(c) => {
                        self.cursors.insert((t, p), c);
                    }
                }
            }
        }
        Ok(())
    }

    /// After the batch was committed: publishes its `alerts` to every target
    /// and moves the cursors to `positions`.
    ///
    /// # Errors
    /// A target did not acknowledge (the alerts stay behind the cursor and
    /// the next run re-sends them).
    pub async fn after_commit(
        &mut self,
        alerts: &[Alert],
        positions: &BTreeMap<i32, SourcePosition>,
    ) -> Result<()> {
        let mut delivered = 0;
        for t in 0..self.opts.targets.len() {
            let id = self.opts.targets[t].cursor_id();
            // Skip what a cursor ahead of the lake says was already sent.
            let due: Vec<Alert> = alerts
                .iter()
                .filter(|a| {
                    self.cursors
                        .get(&(t, a.partition))
                        .is_none_or(|&c| a.offset >= c)
                })
                .cloned()
                .collect();
            let retries = self.send(t, &due).await?;
            self.summary.retries += u64::from(retries);
            delivered = delivered.max(due.len() as u64);
            for (&p, pos) in positions {
                cursor::write_cursor(&self.lake, &id, &self.stream, p, pos.next_offset).await?;
                self.cursors.insert((t, p), pos.next_offset);
            }
        }
        self.summary.delivered += delivered;
        self.last_delivered = Some(Instant::now());
        Ok(())
    }

    /// Shows on `metrics` (`txpipe_alerts_up`) whether the targets acknowledge.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Option<Arc<IngestMetrics>>) -> Self {
        if let Some(m) = &metrics {
            m.set_alerts_up(true);
        }
        self.metrics = metrics;
        self
    }

    /// Sends `alerts` to target `t`, reporting its health to the metrics.
    async fn send(&self, t: usize, alerts: &[Alert]) -> Result<u32> {
        let metrics = self.metrics.clone();
        let health = move |up: bool| {
            if let Some(m) = &metrics {
                m.set_alerts_up(up);
            }
        };
        let sent = self.opts.targets[t].send(alerts, &health).await;
        if sent.is_err() {
            health(false);
        }
        sent
    }

    /// The batch was not committed (another member owns its partitions now):
    /// forget the cached cursors of those partitions.
    pub fn not_committed(&mut self, start_offsets: &BTreeMap<i32, i64>) {
        self.cursors
            .retain(|(_, p), _| !start_offsets.contains_key(p));
    }

    /// Waits for anything queued in the producers.
    pub fn flush(&self) {
        for t in &self.opts.targets {
            if let AlertTarget::Kafka(k) = t {
                k.flush();
            }
        }
    }
}

/// Alerts as configured (connected by [`AlertConfig::connect`]).
#[derive(Clone, Default)]
pub struct AlertConfig {
    /// Kafka target: brokers, topic, client settings.
    pub kafka: Option<KafkaAlertConfig>,
    /// Webhook target.
    pub webhook: Option<WebhookConfig>,
    /// Publish only alerts with `risk_score >= min_score`.
    pub min_score: Option<f64>,
}

/// A Kafka alerts topic.
#[derive(Clone, Debug)]
pub struct KafkaAlertConfig {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Topic (created with [`ALERT_PARTITIONS`] partitions when missing).
    pub topic: String,
    /// Client settings (security); secrets never printed.
    pub config: crate::kafka::KafkaConfig,
}

/// A webhook target.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Endpoint URL.
    pub url: String,
    /// Extra headers, `Name: value` (values never printed).
    pub headers: Vec<String>,
    /// Retries, backoff and timeout.
    pub policy: WebhookPolicy,
}

impl std::fmt::Debug for AlertConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let webhook = self.webhook.as_ref().map(|w| {
            reqwest::Url::parse(&w.url)
                .map_or_else(|_| "(invalid URL)".into(), |u| redacted_url(&u))
        });
        f.debug_struct("AlertConfig")
            .field("kafka_topic", &self.kafka.as_ref().map(|k| &k.topic))
            .field("webhook", &webhook)
            .field("min_score", &self.min_score)
            .finish()
    }
}

impl AlertConfig {
    /// True when no target is configured.
    pub fn is_empty(&self) -> bool {
        self.kafka.is_none() && self.webhook.is_none()
    }

    /// Connects the targets.
    ///
    /// # Errors
    /// A bad webhook URL or header, unreachable brokers.
    pub async fn connect(&self) -> Result<AlertOptions> {
        let mut targets = Vec::new();
        if let Some(k) = &self.kafka {
            targets.push(AlertTarget::Kafka(
                KafkaAlerts::connect(&k.brokers, &k.topic, &k.config).await?,
            ));
        }
        if let Some(w) = &self.webhook {
            targets.push(AlertTarget::Webhook(Webhook::new(
                &w.url,
                &w.headers,
                w.policy.clone(),
            )?));
        }
        Ok(AlertOptions {
            targets,
            min_score: self.min_score,
        })
    }
}
