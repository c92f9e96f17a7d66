//! Writing to the lake: Parquet encoding, the commit log and exactly-once publishing.

pub mod commit_log;
pub mod lake_writer;
pub mod parquet;
pub mod stream_lock;

pub use commit_log::{BatchCounts, CommitEntry, CommitLog, FileAction, SourcePosition};
pub use lake_writer::{EncodedBatch, EncodedFile, LakeWriter};
pub use stream_lock::StreamLock;
