//! Writing to the lake: Parquet encoding, Delta tables and exactly-once publishing.

pub mod commit;
pub mod delta;
pub mod file_stats;
pub mod lake_writer;
pub mod legacy;
pub mod parquet;
pub mod stream_lock;

pub use commit::{BatchCounts, CommitEntry, FileAction, SourcePosition};
pub use lake_writer::{EncodedBatch, EncodedFile, LakeWriter};
pub use stream_lock::StreamLock;
