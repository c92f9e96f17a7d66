//! The crate's error type, grouped by the phase that failed.

use std::path::PathBuf;

/// Everything that can go wrong in txpipe-core.
///
/// Bad *records* are not errors: they are quarantined (see [`crate::decode`]).
/// These errors are about the job itself: configuration, I/O, the lake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value (flag, option, config file) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A fraud rule failed to compile; the message names the rule.
    #[error("rule '{rule}': {reason}")]
    Rule {
        /// Name of the rule as written in the rules file.
        rule: String,
        /// Why it was rejected.
        reason: String,
    },

    /// The rules file itself could not be read or parsed.
    #[error("rules file {path}: {reason}")]
    RulesFile {
        /// Path of the rules file.
        path: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A local file could not be read or written.
    #[error("{context} {path}: {source}")]
    Io {
        /// What txpipe was doing.
        context: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A dimension CSV (customers, merchants, fx rates) is malformed.
    #[error("{file}: {reason}")]
    Csv {
        /// The CSV file name.
        file: String,
        /// What is wrong, with the line where known.
        reason: String,
    },

    /// The lake's object store failed.
    #[error("object store ({context}): {source}")]
    ObjectStore {
        /// What txpipe was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },

    /// The lake's log is inconsistent (a committed file is missing, a
    /// commit cannot be completed).
    #[error("lake log: {0}")]
    CommitLog(String),

    /// delta-rs failed on a table: an unreadable, missing or corrupt log
    /// file (named in the message), a failed commit, the store.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The table: its location (folder or URL) where known, else its
        /// lake-relative folder.
        table: String,
        /// What delta-rs said.
        #[source]
        source: Box<deltalake_core::DeltaTableError>,
    },

    /// The lake was written by txpipe 0.1 (its own commit log, no Delta log).
    #[error(
        "{0} was written by txpipe 0.1 (_txpipe/log, no Delta log); this txpipe writes and reads \
         Delta Lake tables. Ingest the sources again into a new lake (the positions are \
         in the old lake's _txpipe/log), or keep using txpipe 0.1 for this one"
    )]
    LegacyLake(String),

    /// Arrow failed (building or concatenating batches).
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),

    /// DataFusion failed (planning or running a query or expression).
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// JSON (commit records, run records) could not be (de)serialised.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// Another writer already committed some of a batch's source positions
    /// (a concurrent ingest of the same file, or a Kafka partition that moved
    /// to another group member). The batch was not committed.
    #[error("commit conflict on {source_name} partitions {partitions:?}: {reason}")]
    CommitConflict {
        /// The source (file or topic).
        source_name: String,
        /// Partitions whose positions were already committed past the batch start.
        partitions: Vec<i32>,
        /// What happened.
        reason: String,
    },

    /// Kafka failed: brokers unreachable, topic missing, delivery failed.
    #[error("kafka: {0}")]
    Kafka(String),

    /// Alerts could not be delivered to a target (they stay undelivered in
    /// the lake's alert cursor and are re-sent on the next run).
    #[error("alerts to {target}: {reason}")]
    Alerts {
        /// The target, without credentials.
        target: String,
        /// What went wrong.
        reason: String,
    },

    /// A models project is malformed: a bad model or test file, an unknown
    /// ref, a cycle, a bad selection.
    #[error("{0}")]
    Project(String),

    /// A model's SQL failed to plan or run.
    #[error("model {model}: {message}")]
    Model {
        /// The model.
        model: String,
        /// What DataFusion said.
        message: String,
    },

    /// `--stop-when-idle` waited `--drain-timeout` for the lake to catch up
    /// with the topic and it did not: these partitions still have messages no
    /// member is landing.
    #[error(
        "the lake did not catch up with topic {topic} within {waited_secs}s: {}; \
         {hint} (nothing was lost: a later ingest resumes from the lake)",
        format_lag(lag)
    )]
    DrainTimeout {
        /// What is the likely cause.
        hint: String,
        /// The topic.
        topic: String,
        /// How long the ingest waited.
        waited_secs: u64,
        /// Remaining messages per lagging partition.
        lag: std::collections::BTreeMap<i32, i64>,
    },

    /// An HTTP endpoint could not be served.
    #[error("serving HTTP on {addr}: {source}")]
    Http {
        /// The address asked for.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A worker thread of the pipeline stopped unexpectedly.
    #[error("pipeline worker failed: {0}")]
    Worker(String),

    /// The dashboard server was asked to listen on a non-loopback address
    /// without authentication.
    #[error(
        "refusing to serve on {addr} ({resolved}): not a loopback address, and no token; \
         pass --token TOKEN (or set TXPIPE_SERVE_TOKEN) to require `Authorization: Bearer TOKEN`, \
         or --insecure-public to serve the lake's data to anyone who can reach the port"
    )]
    PublicUnauthenticated {
        /// The address asked for.
        addr: String,
        /// What it resolved to.
        resolved: String,
    },

    /// Another ingest is writing the same stream (e.g. the same file into the
    /// same lake) right now; this one was refused before touching the lake.
    #[error(
        "{source_name}: another ingest holds it ({holder}; lock {lock}); wait for it to finish, or stop it and rerun"
    )]
    StreamLocked {
        /// The source (file path or `stdin`).
        source_name: String,
        /// The lock: the lock file of a local lake, else the lock's key.
        lock: String,
        /// Who holds it, as the holder recorded it (pid, host, start time).
        holder: String,
    },

    /// A file or folder of a local lake could not be written, read, moved or
    /// removed: disk full, read-only file system, permissions. `path` is the
    /// absolute path (both paths for a move); `cause` the operating system's
    /// error, whose [`kind`](std::io::Error::kind) tells e.g.
    /// [`StorageFull`](std::io::ErrorKind::StorageFull) from
    /// [`ReadOnlyFilesystem`](std::io::ErrorKind::ReadOnlyFilesystem).
    #[error("{action} {path}: {cause}")]
    LakeIo {
        /// What txpipe was doing, e.g. `writing lake file`.
        action: &'static str,
        /// The file or folder involved.
        path: String,
        /// The underlying error (shown in the message, not chained as a source).
        cause: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done and to which file.
    pub fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            context,
            path: path.into(),
            source,
        }
    }

    /// Wraps an object store error with context.
    pub fn store(context: impl Into<String>, source: object_store::Error) -> Self {
        Error::ObjectStore {
            context: context.into(),
            source,
        }
    }
}

/// `partition 1 lag 50000, partition 3 lag 48000`.
pub fn format_lag(lag: &std::collections::BTreeMap<i32, i64>) -> String {
    lag.iter()
        .map(|(p, l)| format!("partition {p} lag {l}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
