//! Writing to the lake: Parquet encoding, Delta tables and exactly-once publishing.

pub mod append_log;
pub mod commit;
pub mod delta;
pub mod encoded;
pub mod file_stats;
pub mod lake_writer;
pub mod legacy;
pub mod parquet;
pub mod replace_where;
mod roll_forward;
pub mod stream_lock;

pub use commit::{BatchCounts, CommitEntry, FileAction, SourcePosition};
pub use encoded::{EncodedBatch, EncodedFile};
pub use lake_writer::LakeWriter;
pub use stream_lock::StreamLock;
