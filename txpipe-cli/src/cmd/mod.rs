//! One module per subcommand.

pub mod bench;
pub mod demo;
pub mod generate;
pub mod generator_args;
pub mod ingest;
pub mod maintain;
pub mod models;
pub mod produce;
pub mod quality;
pub mod run;
pub mod seed;
pub mod serve;

use anyhow::Context;

/// The multi-threaded runtime async commands run on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Parses `YYYY-MM-DD` for clap.
pub fn parse_date(s: &str) -> Result<i64, String> {
    txpipe_core::decode::timestamp::parse_date(s)
        .ok_or_else(|| format!("'{s}' is not a date (YYYY-MM-DD)"))
}

/// Parses `KEY=VALUE` for repeatable client settings.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

/// Kafka client settings: `--kafka-config-file`, then `TXPIPE_KAFKA_*`
/// variables, then `--kafka-config` flags (later wins).
pub fn kafka_config(
    file: Option<&std::path::Path>,
    flags: &[(String, String)],
) -> anyhow::Result<txpipe_core::kafka::KafkaConfig> {
    let mut c = txpipe_core::kafka::KafkaConfig::new();
    if let Some(f) = file {
        c.load_file(f)?;
    }
    c.load_env(
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
    );
    c.merge(&txpipe_core::kafka::KafkaConfig::from_pairs(flags));
    Ok(c)
}

/// Prints settings one per line, secrets redacted, with where each came from.
pub fn print_kafka_config(c: &txpipe_core::kafka::KafkaConfig) {
    for (k, v, origin) in c.redacted() {
        println!("{k}={v}  # {origin}");
    }
}

/// Sets `stop` on SIGINT or SIGTERM (a second signal aborts at once).
pub fn stop_on_signals(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 1 {
                std::process::exit(130);
            }
            eprintln!("\nstopping: committing the batches in flight (signal again to abort)");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
}
