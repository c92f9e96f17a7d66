//! `txpipe produce`.

use std::path::PathBuf;

use anyhow::Context;
use txpipe_core::kafka::{produce, ProduceInput, ProduceOptions, ProduceSummary};

use crate::progress::Progress;

/// Publish transactions to a Kafka topic (generated, or from a JSON-lines file).
///
/// Messages are keyed by customer_id, sent with acks=all, idempotence, batching and
/// lz4/zstd compression. The topic is created with --partitions when it does not
/// exist. Prints delivered / failed counts; exits non-zero if any message failed.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["count", "from_file"])))]
pub struct Args {
    /// Kafka bootstrap brokers, HOST:PORT[,HOST:PORT…].
    #[arg(long)]
    brokers: String,
    /// Topic to publish to.
    #[arg(long)]
    topic: String,
    /// Generate and publish N transactions.
    #[arg(long)]
    count: Option<u64>,
    /// Publish every line of a JSON-lines file ('-' reads stdin).
    #[arg(long)]
    from_file: Option<PathBuf>,
    #[command(flatten)]
    generator: super::generator_args::GeneratorArgs,
    /// Pace the stream at this many messages per second (live demos).
    #[arg(long, value_name = "MSGS_PER_S")]
    rate: Option<f64>,
    /// Partitions of the topic when it has to be created.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Batch compression: lz4, zstd, gzip or none.
    #[arg(long, default_value = "lz4")]
    compression: String,
    /// Extra librdkafka setting KEY=VALUE (repeatable), e.g.
    /// security.protocol=SASL_SSL. Overrides TXPIPE_KAFKA_* variables
    /// (TXPIPE_KAFKA_SASL_PASSWORD sets sasl.password), which override
    /// --kafka-config-file. Secret values are never printed.
    #[arg(long = "kafka-config", value_name = "KEY=VALUE", value_parser = super::parse_key_value)]
    kafka_config: Vec<(String, String)>,
    /// librdkafka settings file (client.properties format: KEY=VALUE lines, # comments).
    #[arg(long, value_name = "PATH")]
    kafka_config_file: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

pub async fn run(a: Args) -> anyhow::Result<()> {
    let input = match (&a.count, &a.from_file) {
        (Some(count), _) => ProduceInput::Generate(a.generator.options(*count)),
        (None, Some(p)) => ProduceInput::File(p.clone()),
        (None, None) => anyhow::bail!("give --count or --from-file"),
    };
    let opts = ProduceOptions {
        brokers: a.brokers.clone(),
        topic: a.topic.clone(),
        partitions: a.partitions,
        rate: a.rate,
        compression: a.compression.clone(),
        config: super::kafka_config(a.kafka_config_file.as_deref(), &a.kafka_config)
            .context("reading the Kafka client configuration")?,
    };
    let mut progress = Progress::new(a.quiet);
    let s = produce(input, &opts, &mut |s: &ProduceSummary| {
        progress.tick(|| {
            format!(
                "sent {} delivered {} failed {} ({:.0} msgs/s)",
                s.sent,
                s.delivered,
                s.failed,
                s.sent as f64 / s.elapsed.as_secs_f64().max(1e-9)
            )
        })
    })
    .await
    .with_context(|| format!("producing to topic {} on {}", a.topic, a.brokers))?;
    progress.finish();
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    println!(
        "produced to {}: delivered {} failed {} of {} in {secs:.2}s ({:.0} msgs/s, {:.1} MB/s)",
        a.topic,
        s.delivered,
        s.failed,
        s.sent,
        s.delivered as f64 / secs,
        s.bytes as f64 / 1e6 / secs
    );
    if s.failed > 0 || s.delivered < s.sent {
        anyhow::bail!(
            "{} of {} messages were not delivered{}",
            s.sent - s.delivered,
            s.sent,
            s.first_error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}
