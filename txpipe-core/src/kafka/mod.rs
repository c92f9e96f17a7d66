//! Kafka at both ends: a producer for the message contract and an exactly-once
//! consumer-group source for the micro-batch loop. Built on rdkafka (bundled
//! librdkafka).

pub mod admin;
pub mod bare;
pub mod config;
pub mod consumer;
pub mod producer;
pub mod watchdog;

pub use admin::{
    check_topic, create_topic_if_missing, lake_lag, lake_offset, remaining_lag, topic_watermarks,
};
pub use config::{is_secret_key, KafkaConfig, Origin};
pub use consumer::{
    effective_config, KafkaSource, KafkaSourceOptions, StartOffset, DEFAULT_DRAIN_TIMEOUT,
};
pub use producer::{produce, ProduceInput, ProduceOptions, ProduceSummary};

use rdkafka::ClientConfig;

/// Base client settings: brokers plus user overrides (`key=value` pairs).
pub fn client_config(brokers: &str, extra: &[(String, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c.set("client.id", concat!("txpipe-", env!("CARGO_PKG_VERSION")));
    for (k, v) in extra {
        c.set(k, v);
    }
    c
}
