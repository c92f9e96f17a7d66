//! One writer per stream: an exclusive lock held for the whole of an ingest.
//!
//! Two ingests of the same file at once would both read the same committed
//! position and race; the Delta log lets only one commit each batch, but the
//! loser would fail half-way. [`StreamLock::acquire`] refuses the second
//! writer up front with [`Error::StreamLocked`], naming the holder:
//!
//! * a local lake ([`Lake::local_root`]) uses an OS file lock (`flock`) on
//!   `LAKE/_txpipe/locks/<stream>.lock`. The kernel releases it when the
//!   process ends, however it ends (kill -9 included), so a lock is never
//!   stale. The file records the holder's pid, host and start time for the
//!   refusal message; lock files are never deleted (removing one while another
//!   process opens it would let two processes hold "the" lock);
//! * a `memory://` lake lives in one process, so a process-wide registry of
//!   held streams is an exact lock;
//! * other object stores (`s3://`, `gs://`, `az://`) have no lock. The guard is
//!   then not exclusive ([`StreamLock::is_exclusive`] is false). Exactly-once
//!   still holds without it: the position check against the Delta log's `txn`
//!   actions refuses a second writer's batch that overlaps what the first one
//!   committed ([`Error::CommitConflict`]).

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::decode::timestamp::format_rfc3339_millis;
use crate::error::{Error, Result};
use crate::lake::Lake;

use super::lake_writer::now_micros;

/// Folder of the lock files of a local lake, relative to its root (under
/// [`TXPIPE_DIR`](crate::schema::TXPIPE_DIR)).
pub const LOCK_DIR: &str = "_txpipe/locks";

/// Exclusive right to write one stream of a lake; released on drop.
#[derive(Debug)]
pub struct StreamLock {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// `flock` on this open (read-only) file; the kernel drops it with the fd.
    File { _file: File, path: PathBuf },
    /// Key in the process-wide registry of memory lakes' streams.
    Memory(String),
    /// An object store: nothing to hold.
    Unlocked,
}

/// Streams of `memory://` lakes held in this process (`<lake url>#<stream>`).
fn memory_locks() -> &'static Mutex<HashSet<String>> {
    static LOCKS: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LOCKS.get_or_init(Default::default)
}

impl StreamLock {
    /// Takes the lock of `stream` (described as `source` in messages).
    ///
    /// Never waits: when another process or task holds the stream the call
    /// fails at once.
    ///
    /// # Errors
    /// [`Error::StreamLocked`] when another writer holds the stream;
    /// [`Error::Io`] when the lock file cannot be created or locked (for
    /// example a read-only lake folder).
    pub fn acquire(lake: &Lake, stream: &str, source: &str) -> Result<Self> {
        if let Some(root) = lake.local_root() {
            return Self::acquire_file(root, stream, source);
        }
        if lake.url().scheme() == "memory" {
            let key = format!("{}#{stream}", lake.url());
            let mut held = memory_locks().lock().unwrap_or_else(|p| p.into_inner());
            if !held.insert(key.clone()) {
                return Err(Error::StreamLocked {
                    source_name: source.to_string(),
                    lock: key,
                    holder: format!("this process (pid {})", std::process::id()),
                });
            }
            return Ok(Self {
                held: Held::Memory(key),
            });
        }
        Ok(Self {
            held: Held::Unlocked,
        })
    }

    fn acquire_file(root: &Path, stream: &str, source: &str) -> Result<Self> {
        let dir = root.join(LOCK_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating lock folder", &dir, e))?;
        let path = dir.join(format!("{stream}.lock"));
        // The lock is held through a read-only descriptor, so that the lake's
        // file system can still be remounted read-only while we run.
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| Error::io("creating lock file", &path, e))?;
                File::open(&path).map_err(|e| Error::io("opening lock file", &path, e))?
            }
            Err(e) => return Err(Error::io("opening lock file", &path, e)),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "a process that has not recorded itself yet".into());
                return Err(Error::StreamLocked {
                    source_name: source.to_string(),
                    lock: path.display().to_string(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        // Best effort: the record only serves the refusal message, and a lake
        // that cannot take these few bytes fails the ingest on its first write
        // anyway, with the lake's own error.
        let _ = write_holder(&path, source);
        Ok(Self {
            held: Held::File { _file: file, path },
        })
    }

    /// True when this lock excludes every other writer of the stream (local
    /// and memory lakes); false on object stores, which have no lock.
    pub fn is_exclusive(&self) -> bool {
        !matches!(self.held, Held::Unlocked)
    }

    /// The lock file of a local lake.
    pub fn path(&self) -> Option<&Path> {
        match &self.held {
            Held::File { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl Drop for StreamLock {
    fn drop(&mut self) {
        // File locks go with the descriptor.
        if let Held::Memory(key) = &self.held {
            memory_locks()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(key);
        }
    }
}

/// Records who holds the lock: `pid 123 on host, started <time>, ingesting <source>`.
fn write_holder(path: &Path, source: &str) -> std::io::Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into());
    let mut f = OpenOptions::new().write(true).truncate(true).open(path)?;
    writeln!(
        f,
        "pid {} on {host}, started {}, ingesting {source}",
        std::process::id(),
        format_rfc3339_millis(now_micros())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_stream_has_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let first = StreamLock::acquire(&lake, "file-1", "/data/a.jsonl").unwrap();
        assert!(first.is_exclusive());
        let lock_file = dir.path().join("_txpipe/locks/file-1.lock");
        assert_eq!(
            first.path(),
            Some(lock_file.canonicalize().unwrap().as_path())
        );
        let record = std::fs::read_to_string(&lock_file).unwrap();
        assert!(
            record.contains(&format!("pid {}", std::process::id())),
            "{record}"
        );

        // flock excludes another open file description, even in this process.
        let err = StreamLock::acquire(&lake, "file-1", "/data/a.jsonl").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::StreamLocked { .. }), "{msg}");
        assert!(msg.contains("/data/a.jsonl"), "{msg}");
        assert!(msg.contains("another ingest holds it"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );

        // Other streams are independent; a released lock can be taken again.
        let other = StreamLock::acquire(&lake, "file-2", "/data/b.jsonl").unwrap();
        drop(first);
        let again = StreamLock::acquire(&lake, "file-1", "/data/a.jsonl").unwrap();
        drop((other, again));
    }

    #[test]
    fn memory_lakes_lock_in_process_and_object_stores_have_no_lock() {
        let lake = Lake::in_memory();
        let held = StreamLock::acquire(&lake, "s", "src").unwrap();
        assert!(held.is_exclusive());
        assert!(matches!(
            StreamLock::acquire(&lake.clone(), "s", "src"),
            Err(Error::StreamLocked { .. })
        ));
        // Another memory lake is another lake.
        drop(StreamLock::acquire(&Lake::in_memory(), "s", "src").unwrap());
        drop(held);
        drop(StreamLock::acquire(&lake, "s", "src").unwrap());

        let unlocked = StreamLock {
            held: Held::Unlocked,
        };
        assert!(!unlocked.is_exclusive());
    }
}
