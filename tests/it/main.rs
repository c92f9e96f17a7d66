//! txpipe integration tests: the real `txpipe` binary, a real lake on disk, read
//! back with DataFusion (and with DuckDB and pyarrow, as other people's tools).

mod helpers;

mod alerts;
mod cli;
mod crash_resume;
mod daily_run;
mod dashboard;
mod delta_lake;
mod demo;
mod exactly_once;
mod external_readers;
mod file_to_lake;
mod freshness;
mod incremental;
mod kafka;
mod kafka_faults;
mod kafka_metrics;
mod kafka_poison;
mod kafka_tls;
mod lake_faults;
mod live_view;
mod models;
mod point_get;
mod postgres;
mod postgres_auth;
mod s3_lake;
mod serve_security;
mod stateful_rules;
