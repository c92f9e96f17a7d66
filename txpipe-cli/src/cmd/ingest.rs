//! `txpipe ingest`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use txpipe_core::alerts::{AlertConfig, KafkaAlertConfig, WebhookConfig, WebhookPolicy};
use txpipe_core::kafka::{KafkaSourceOptions, StartOffset};
use txpipe_core::lake::Lake;
use txpipe_core::metrics::{server, IngestMetrics};
use txpipe_core::pipeline::{self, IngestOptions, IngestSummary};
use txpipe_core::rules::RuleSet;

use crate::progress::Progress;

/// Land transactions in the lake exactly once, from a file or from Kafka.
///
/// Each micro-batch is decoded, flagged by the fraud rules, written as Parquet
/// under LAKE/fact_transaction/event_date=YYYY-MM-DD/ (bad records under
/// LAKE/quarantine/) and committed together with its source positions. Re-running
/// after an interruption (Ctrl-C, SIGTERM, crash, kill -9) resumes after the last
/// committed batch; re-running on a completed file lands nothing new.
///
/// From Kafka (--brokers, --topic, --group), several processes in one group split
/// the partitions; each partition resumes from the lake's committed offsets, and the
/// group's Kafka offsets are committed after each lake commit for lag tools.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["from_file", "brokers"])))]
pub struct Args {
    /// Lake location: a local folder, file:///path, or an object store URL.
    #[arg(long)]
    lake: String,
    /// JSON-lines file to land, one transaction per line ('-' reads stdin).
    #[arg(long)]
    from_file: Option<String>,
    /// Kafka bootstrap brokers, HOST:PORT[,HOST:PORT…] (instead of --from-file).
    #[arg(long, requires_all = ["topic", "group"])]
    brokers: Option<String>,
    /// Kafka topic to consume.
    #[arg(long, requires = "brokers")]
    topic: Option<String>,
    /// Kafka consumer group; processes in one group split the partitions.
    #[arg(long, requires = "brokers")]
    group: Option<String>,
    /// Where partitions the lake has never seen start: earliest or latest.
    #[arg(long, value_enum, default_value_t = Start::Earliest, requires = "brokers")]
    start_offset: Start,
    /// Kafka: stop once the lake has caught up with the topic — no message
    /// arrived for SECS seconds and every partition's committed lake position
    /// has reached the high watermark seen when the quiet began, whichever
    /// group member owns it. Partitions with pending messages and no progress
    /// are waited for (dead members are expired or routed around) up to
    /// --drain-timeout, then the ingest fails naming them.
    #[arg(long, value_name = "SECS", requires = "brokers")]
    stop_when_idle: Option<f64>,
    /// Kafka, with --stop-when-idle: seconds to wait for partitions that have
    /// pending messages but make no progress before exiting non-zero.
    #[arg(long, value_name = "SECS", default_value_t = txpipe_core::kafka::DEFAULT_DRAIN_TIMEOUT.as_secs_f64(), requires = "stop_when_idle")]
    drain_timeout: f64,
    /// Kafka: stop after consuming N messages.
    #[arg(long, value_name = "N", requires = "brokers")]
    max_messages: Option<u64>,
    /// Extra librdkafka setting KEY=VALUE (repeatable), e.g.
    /// security.protocol=SASL_SSL, sasl.mechanism=SCRAM-SHA-512, sasl.username=…,
    /// ssl.ca.location=ca.pem. Overrides TXPIPE_KAFKA_* variables
    /// (TXPIPE_KAFKA_SASL_PASSWORD sets sasl.password), which override
    /// --kafka-config-file. Secret values are never printed.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = super::parse_key_value, requires = "brokers")]
    kafka_config: Vec<(String, String)>,
    /// librdkafka settings file (client.properties format: KEY=VALUE lines, #
    /// comments), e.g. the one a managed Kafka service hands out.
    #[arg(long, value_name = "PATH", requires = "brokers")]
    kafka_config_file: Option<PathBuf>,
    /// Print the effective Kafka client configuration (txpipe's defaults, the
    /// file, TXPIPE_KAFKA_* variables and flags; secrets redacted) and exit.
    #[arg(long, requires = "brokers")]
    print_config: bool,
    /// Fraud rules file [default: sql/rules.toml if present, else the built-in rules].
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Most messages per micro-batch (one commit each).
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_ROWS)]
    batch_rows: usize,
    /// Most payload bytes per micro-batch.
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_BYTES)]
    batch_bytes: usize,
    /// Longest time in milliseconds a non-empty micro-batch stays open.
    #[arg(long, default_value_t = pipeline::DEFAULT_BATCH_WAIT.as_millis() as u64)]
    batch_ms: u64,
    /// Worker threads for decode, rules and Parquet encoding [default: one per core].
    #[arg(long)]
    workers: Option<usize>,
    /// Write a Delta checkpoint every N commits (for the tables this run
    /// creates): restarts read the newest checkpoint and at most N commits.
    #[arg(long, default_value_t = txpipe_core::sink::delta::DEFAULT_CHECKPOINT_INTERVAL)]
    checkpoint_interval: u64,
    /// Most rows one Delta commit gathers from micro-batches that are ready
    /// together, when the source is ahead of the lake (0: one commit per batch).
    #[arg(long, default_value_t = pipeline::GROUP_COMMIT_ROWS)]
    commit_rows: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (and JSON at /api/ingest)
    /// while ingesting, e.g. 127.0.0.1:9898: rows consumed/landed/quarantined,
    /// fraud per rule, batch and end-to-end latency, consumer lag per partition,
    /// files and bytes written.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Publish one JSON alert per flagged transaction (is_fraud) to this Kafka
    /// topic, keyed by customer_id, after its batch is committed to the lake
    /// (created with 4 partitions if missing). At least once, idempotent by
    /// alert_id: a crash can repeat an alert (same alert_id), never lose one.
    #[arg(long, value_name = "TOPIC")]
    alerts_topic: Option<String>,
    /// Brokers of the alerts topic [default: --brokers]. The --kafka-config
    /// settings apply to it too.
    #[arg(long, value_name = "HOST:PORT", requires = "alerts_topic")]
    alerts_brokers: Option<String>,
    /// Publish only alerts with risk_score >= S.
    #[arg(long, value_name = "S")]
    alerts_min_score: Option<f64>,
    /// POST each committed batch's alerts as one JSON array to this URL, with
    /// an Idempotency-Key header, retries with exponential backoff and a
    /// timeout; a 2xx answer acknowledges them.
    #[arg(long, value_name = "URL")]
    alerts_webhook: Option<String>,
    /// Extra webhook header 'Name: value' (repeatable), e.g.
    /// 'Authorization: Bearer …'. Values are never printed.
    #[arg(long, value_name = "HEADER", requires = "alerts_webhook")]
    alerts_webhook_header: Vec<String>,
    /// Webhook attempts per batch before the ingest stops with an error (the
    /// alerts stay undelivered and the next run re-sends them).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 8,
        requires = "alerts_webhook"
    )]
    alerts_webhook_attempts: u32,
    /// Timeout of one webhook request, in seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 10.0,
        requires = "alerts_webhook"
    )]
    alerts_webhook_timeout: f64,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// The alert targets of the flags.
fn alert_config(a: &Args) -> anyhow::Result<AlertConfig> {
    let mut c = AlertConfig {
        min_score: a.alerts_min_score,
        ..Default::default()
    };
    if let Some(topic) = &a.alerts_topic {
        let brokers = a
            .alerts_brokers
            .clone()
            .or_else(|| a.brokers.clone())
            .context("--alerts-topic needs --alerts-brokers (or a Kafka ingest's --brokers)")?;
        let config = super::kafka_config(a.kafka_config_file.as_deref(), &a.kafka_config)
            .context("reading the Kafka client configuration")?;
        c.kafka = Some(KafkaAlertConfig {
            brokers,
            topic: topic.clone(),
            config,
        });
    }
    if let Some(url) = &a.alerts_webhook {
        c.webhook = Some(WebhookConfig {
            url: url.clone(),
            headers: a.alerts_webhook_header.clone(),
            policy: WebhookPolicy {
                attempts: a.alerts_webhook_attempts.max(1),
                timeout: Duration::try_from_secs_f64(a.alerts_webhook_timeout)
                    .context("--alerts-webhook-timeout must be a number of seconds")?,
                ..Default::default()
            },
        });
    }
    Ok(c)
}

/// Loads `--rules`, else `sql/rules.toml` in the working folder, else the built-in rules.
pub fn load_rules(path: Option<&PathBuf>) -> anyhow::Result<(RuleSet, String)> {
    if let Some(p) = path {
        return Ok((RuleSet::from_file(p)?, p.display().to_string()));
    }
    let local = PathBuf::from("sql/rules.toml");
    if local.exists() {
        return Ok((RuleSet::from_file(&local)?, local.display().to_string()));
    }
    Ok((RuleSet::defaults()?, "built-in rules".into()))
}

fn print_summary(s: &IngestSummary, lake: &str, rules_from: &str) {
    if s.counts.rows_in == 0 && s.conflicts == 0 {
        let upto = if s.resumed_at > 0 {
            format!(" (already landed up to line {})", s.resumed_at)
        } else {
            String::new()
        };
        println!("nothing new in {}{upto}; lake {lake} unchanged", s.source);
        print_alerts(s);
        print_lag(s);
        return;
    }
    let resumed = if s.resumed_at > 0 {
        format!(" (resumed at line {})", s.resumed_at)
    } else {
        String::new()
    };
    println!("ingested {}{resumed} into {lake}", s.source);
    println!(
        "  rows in {} = landed {} + quarantined {}",
        s.counts.rows_in, s.counts.landed, s.counts.quarantined
    );
    println!("  fraud flagged {} rows ({rules_from}):", s.counts.fraud);
    for name in &s.rules {
        println!(
            "    {name:<20} {}",
            s.counts.flagged.get(name).copied().unwrap_or(0)
        );
    }
    println!(
        "  {} batches, {} files, {:.1} MB Parquet from {:.1} MB JSON in {:.2}s: {:.0} rows/s, {:.1} MB/s",
        s.batches,
        s.files,
        s.bytes_written as f64 / 1e6,
        s.input_bytes as f64 / 1e6,
        s.elapsed.as_secs_f64(),
        s.rows_per_sec(),
        s.input_bytes as f64 / 1e6 / s.elapsed.as_secs_f64().max(1e-9)
    );
    if let Some(st) = &s.rule_state {
        println!(
            "  rule state: {} keys, {} earlier rows, {:.1} MiB ({:.0} bytes per key)",
            st.keys,
            st.rows,
            st.bytes as f64 / (1 << 20) as f64,
            st.bytes as f64 / st.keys.max(1) as f64
        );
    }
    print_alerts(s);
    if s.conflicts > 0 {
        println!(
            "  {} batches dropped after rebalances (landed by the partitions' new owners)",
            s.conflicts
        );
    }
    print_lag(s);
    if let Some(e) = &s.last_commit {
        let positions: Vec<String> = e
            .positions
            .iter()
            .map(|(p, pos)| format!("{p}:{}", pos.next_offset))
            .collect();
        println!(
            "  last commit: version {} at {}",
            e.version,
            positions.join(" ")
        );
    }
    if s.default_fx {
        println!(
            "  note: the lake has no fx_rate table; built-in rates were used (run `txpipe seed`)"
        );
    }
}

/// Alerts delivered (when alert targets were given).
fn print_alerts(s: &IngestSummary) {
    if let Some(al) = &s.alerts {
        let mut extra = Vec::new();
        if al.redelivered > 0 {
            extra.push(format!(
                "{} committed by an earlier run re-sent",
                al.redelivered
            ));
        }
        if al.retries > 0 {
            extra.push(format!("{} webhook retries", al.retries));
        }
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(" ({})", extra.join(", "))
        };
        println!(
            "  alerts delivered {} to {}{extra}",
            al.delivered,
            al.targets.join(" and ")
        );
    }
}

/// The topic's remaining lag per partition (Kafka ingests), always printed.
fn print_lag(s: &IngestSummary) {
    if let Some(lag) = &s.remaining_lag {
        let total: i64 = lag.values().sum();
        let per: Vec<String> = lag.iter().map(|(p, l)| format!("{p}:{l}")).collect();
        let state = if total == 0 {
            "caught up"
        } else {
            "messages not yet in the lake"
        };
        println!(
            "  remaining lag {total} ({state}; partition:lag {})",
            per.join(" ")
        );
    }
}

/// Start of partitions the lake has never seen.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Start {
    /// The oldest message the broker has.
    Earliest,
    /// Messages produced from now on.
    Latest,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    if a.print_config {
        let config = super::kafka_config(a.kafka_config_file.as_deref(), &a.kafka_config)
            .context("reading the Kafka client configuration")?;
        let opts = KafkaSourceOptions {
            brokers: a.brokers.clone().unwrap_or_default(),
            group: a.group.clone().unwrap_or_default(),
            config,
            ..Default::default()
        };
        super::print_kafka_config(&txpipe_core::kafka::effective_config(&opts));
        return Ok(());
    }
    let lake = Lake::open(&a.lake).with_context(|| format!("opening lake {}", a.lake))?;
    let (rules, rules_from) = load_rules(a.rules.as_ref()).context("loading fraud rules")?;
    let mut opts = IngestOptions {
        batch_rows: a.batch_rows,
        batch_bytes: a.batch_bytes,
        batch_wait: Duration::from_millis(a.batch_ms),
        checkpoint_interval: a.checkpoint_interval.max(1),
        group_commit_rows: a.commit_rows,
        alerts: alert_config(&a)?,
        ..Default::default()
    };
    if let Some(w) = a.workers {
        opts.workers = w;
    }
    let source_name = a.from_file.clone().or(a.topic.clone()).unwrap_or_default();
    let _metrics_server = match &a.metrics_addr {
        Some(addr) => {
            let metrics = Arc::new(IngestMetrics::new(&source_name));
            opts.metrics = Some(metrics.clone());
            let server = server::spawn(addr, server::ingest_router(metrics))
                .await
                .context("starting the metrics endpoint")?;
            eprintln!("txpipe: metrics on http://{}/metrics", server.addr);
            Some(server)
        }
        None => None,
    };
    super::stop_on_signals(opts.stop.clone());
    let mut progress = Progress::new(a.quiet);
    let mut report = |s: &IngestSummary| {
        progress.tick(|| {
            format!(
                "landed {} rows, quarantined {}, flagged {} ({:.0} rows/s)",
                s.counts.landed,
                s.counts.quarantined,
                s.counts.fraud,
                s.rows_per_sec()
            )
        })
    };
    let rules = Arc::new(rules);
    let summary = match (&a.from_file, &a.brokers) {
        (Some(file), _) => pipeline::ingest_file(&lake, file, rules, &opts, &mut report)
            .await
            .with_context(|| format!("ingesting {file} into {}", a.lake))?,
        (None, Some(brokers)) => {
            let config = super::kafka_config(a.kafka_config_file.as_deref(), &a.kafka_config)
                .context("reading the Kafka client configuration")?;
            let kafka = KafkaSourceOptions {
                brokers: brokers.clone(),
                topic: a.topic.clone().unwrap_or_default(),
                group: a.group.clone().unwrap_or_default(),
                start: match a.start_offset {
                    Start::Earliest => StartOffset::Earliest,
                    Start::Latest => StartOffset::Latest,
                },
                stop_when_idle: a.stop_when_idle.map(Duration::from_secs_f64),
                drain_timeout: Duration::try_from_secs_f64(a.drain_timeout)
                    .context("--drain-timeout must be a number of seconds")?,
                max_messages: a.max_messages,
                config,
            };
            let scrub = kafka.config.clone();
            pipeline::ingest_kafka(&lake, kafka, rules, &opts, &mut report)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "ingesting topic {} from {brokers} into {}: {}",
                        a.topic.as_deref().unwrap_or(""),
                        a.lake,
                        scrub.scrub(&e.to_string())
                    )
                })?
        }
        (None, None) => anyhow::bail!("give --from-file or --brokers/--topic/--group"),
    };
    progress.finish();
    print_summary(&summary, &a.lake, &rules_from);
    Ok(())
}
