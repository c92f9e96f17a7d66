//! JSON-lines files (or stdin) as a source: one message per line.
//!
//! A file is read by a background thread in blocks of whole lines; the batcher
//! closes a micro-batch on rows, bytes or time, whichever comes first, so a slow
//! stream on stdin still lands every `batch_ms`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{stable_hash, RawBatch};
use crate::error::{Error, Result};
use crate::sink::SourcePosition;

/// How much a reader block holds before it is handed over.
const BLOCK_BYTES: usize = 1 << 20;

/// A block of whole lines read from the file.
struct Block {
    data: Vec<u8>,
    /// `(start, end)` of each line's payload in `data` (without `\n` / `\r\n`).
    lines: Vec<(usize, usize)>,
    /// Bytes consumed from the file, terminators included.
    consumed: u64,
}

/// Limits of one micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most messages in a batch.
    pub max_rows: usize,
    /// Most payload bytes in a batch.
    pub max_bytes: usize,
    /// Longest time a batch stays open once it has a message.
    pub max_wait: Duration,
}

/// A JSON-lines file or stdin, read from a committed position.
pub struct FileSource {
    name: String,
    stream: String,
    next_line: i64,
    next_byte: u64,
    blocks: Receiver<Result<Block>>,
    pending: Option<Block>,
    pending_line: usize,
    done: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("name", &self.name)
            .field("next_line", &self.next_line)
            .finish()
    }
}

/// The stream key of a file path (`-` is stdin): stable across runs.
///
/// # Errors
/// The file does not exist.
pub fn stream_key(path: &str) -> Result<(String, String)> {
    if path == "-" {
        return Ok(("stdin".into(), "stdin".into()));
    }
    let abs: PathBuf =
        std::fs::canonicalize(path).map_err(|e| Error::io("opening input", path, e))?;
    let name = abs.display().to_string();
    Ok((format!("file-{:016x}", stable_hash(name.as_bytes())), name))
}

/// Bytes asked of the input per read: large enough that a buffered reader
/// hands them over without copying them through its own buffer.
const READ_BYTES: usize = 256 << 10;

/// Reads whole lines straight into blocks (no copy through a line buffer):
/// a block is handed over once it is full, or as soon as a read brings less
/// than asked (a slow stream on stdin does not wait for a full block). The
/// unfinished line at a block's end moves to the next one; the last line
/// needs no terminator.
fn read_blocks(
    mut reader: BufReader<Box<dyn Read + Send>>,
    regular_file: bool,
    tx: std::sync::mpsc::SyncSender<Result<Block>>,
    stop: Arc<AtomicBool>,
    name: String,
) {
    let mut carry: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof {
        let mut data = Vec::with_capacity(BLOCK_BYTES + READ_BYTES);
        data.append(&mut carry);
        // (The carried bytes hold no line end.)
        let mut has_line = false;
        loop {
            let len = data.len();
            let read = if regular_file {
                // A file reads into the spare capacity without zeroing it
                // first, up to READ_BYTES or its end, past the (unused)
                // buffer; a read interrupted by a signal is retried inside.
                reader
                    .get_mut()
                    .take(READ_BYTES as u64)
                    .read_to_end(&mut data)
            } else {
                // A pipe hands over what it has (a slow stream is not held
                // back until READ_BYTES arrive).
                data.resize(len + READ_BYTES, 0);
                let read = loop {
                    match reader.read(&mut data[len..]) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        other => break other,
                    }
                };
                data.truncate(len + *read.as_ref().unwrap_or(&0));
                read
            };
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(Error::io("reading input", name.clone(), e)));
                    return;
                }
            };
            if n == 0 {
                eof = true;
                break;
            }
            has_line = has_line || memchr::memchr(b'\n', &data[len..]).is_some();
            if has_line && (data.len() >= BLOCK_BYTES || n < READ_BYTES) {
                break;
            }
        }
        let block = split_lines(data, eof, &mut carry);
        if block.lines.is_empty() {
            if eof {
                return;
            }
            continue;
        }
        if tx.send(Ok(block)).is_err() || stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

/// The whole lines of `data` as a block; the bytes after the last `\n` go
/// to `carry`, or make a last line of their own at end of input.
fn split_lines(mut data: Vec<u8>, eof: bool, carry: &mut Vec<u8>) -> Block {
    let mut lines = Vec::with_capacity(data.len() / 256 + 1);
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', &data) {
        let mut end = nl;
        if end > start && data[end - 1] == b'\r' {
            end -= 1;
        }
        lines.push((start, end));
        start = nl + 1;
    }
    if start < data.len() {
        if eof {
            lines.push((start, data.len()));
            start = data.len();
        } else {
            carry.extend_from_slice(&data[start..]);
            data.truncate(start);
        }
    }
    Block {
        data,
        lines,
        consumed: start as u64,
    }
}

impl FileSource {
    /// Opens `path` (`-` for stdin) to resume at `start` (the committed position).
    ///
    /// Files seek to the committed byte; stdin skips the committed number of lines.
    ///
    /// # Errors
    /// The file cannot be opened, or is shorter than the committed position
    /// (it was replaced: use a new lake or path).
    pub fn open(path: &str, start: Option<SourcePosition>, stop: Arc<AtomicBool>) -> Result<Self> {
        let (stream, name) = stream_key(path)?;
        let next_line = start.map_or(0, |p| p.next_offset);
        let next_byte = start.and_then(|p| p.next_byte).unwrap_or(0);
        // (A named pipe is read like stdin.)
        let mut regular_file = false;
        let reader: BufReader<Box<dyn Read + Send>> = if path == "-" {
            let mut stdin: BufReader<Box<dyn Read + Send>> =
                BufReader::with_capacity(READ_BYTES, Box::new(std::io::stdin()));
            let mut skipped = 0;
            let mut sink = Vec::new();
            while skipped < next_line {
                sink.clear();
                if stdin
                    .read_until(b'\n', &mut sink)
                    .map_err(|e| Error::io("reading input", "stdin", e))?
                    == 0
                {
                    break;
                }
                skipped += 1;
            }
            stdin
        } else {
            let mut file =
                File::open(Path::new(path)).map_err(|e| Error::io("opening input", path, e))?;
            let meta = file
                .metadata()
                .map_err(|e| Error::io("reading input metadata", path, e))?;
            regular_file = meta.is_file();
            let len = meta.len();
            if len < next_byte {
                return Err(Error::Config(format!(
                    "{name} has {len} bytes but {next_byte} were already committed from it: the file was replaced or truncated"
                )));
            }
            file.seek(SeekFrom::Start(next_byte))
                .map_err(|e| Error::io("seeking input", path, e))?;
            BufReader::with_capacity(READ_BYTES, Box::new(file))
        };
        let (tx, rx) = sync_channel(4);
        let thread_name = name.clone();
        std::thread::Builder::new()
            .name("txpipe-read".into())
            .spawn(move || read_blocks(reader, regular_file, tx, stop, thread_name))
            .map_err(|e| Error::Worker(format!("starting reader thread: {e}")))?;
        Ok(Self {
            name,
            stream,
            next_line,
            next_byte,
            blocks: rx,
            pending: None,
            pending_line: 0,
            done: false,
        })
    }

    /// The stream key (stable for the same path).
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The file's absolute path, or `stdin`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next line number to be read.
    pub fn position(&self) -> SourcePosition {
        SourcePosition {
            next_offset: self.next_line,
            next_byte: Some(self.next_byte),
        }
    }

    /// Reads the next micro-batch; `Ok(None)` at end of input.
    ///
    /// # Errors
    /// Reading failed.
    pub fn next_batch(&mut self, limits: BatchLimits) -> Result<Option<RawBatch>> {
        let mut batch = RawBatch {
            data: Vec::with_capacity(limits.max_bytes.min(limits.max_rows.saturating_mul(512))),
            ..Default::default()
        };
        batch.start_offsets.insert(0, self.next_line);
        let mut deadline: Option<Instant> = None;
        while batch.len() < limits.max_rows && batch.data.len() < limits.max_bytes {
            let block = match self.pending.take() {
                Some(b) => b,
                None if self.done => break,
                None => {
                    let received = match deadline {
                        None => self
                            .blocks
                            .recv()
                            .map_err(|_| RecvTimeoutError::Disconnected),
                        Some(d) => self
                            .blocks
                            .recv_timeout(d.saturating_duration_since(Instant::now())),
                    };
                    match received {
                        Ok(Ok(b)) => {
                            self.pending_line = 0;
                            b
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => {
                            self.done = true;
                            break;
                        }
                    }
                }
            };
            batch.opened_at.get_or_insert_with(Instant::now);
            deadline.get_or_insert_with(|| Instant::now() + limits.max_wait);
            // The lines that fit, copied in one piece: as many as the row
            // limit allows, fewer if the byte limit is reached first.
            let from = self.pending_line;
            let rows = (limits.max_rows - batch.len()).min(block.lines.len() - from);
            let room = limits.max_bytes - batch.data.len();
            let fit = block.lines[from..from + rows]
                .partition_point(|&(_, end)| end - block.lines[from].0 < room);
            // (At least one line, as before: the byte limit is checked
            // before a line, not after it.)
            let take = if rows == 0 { 0 } else { (fit + 1).min(rows) };
            batch.push_run(
                &block.data,
                &block.lines[from..from + take],
                0,
                self.next_line,
            );
            self.next_line += take as i64;
            let i = from + take;
            // Byte positions advance per line: the terminator length is what lies
            // between this line's end and the next line's start.
            self.next_byte += line_bytes(&block, self.pending_line, i);
            self.pending_line = i;
            if i < block.lines.len() {
                self.pending = Some(block);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        if batch.is_empty() {
            return Ok(None);
        }
        batch.positions = BTreeMap::from([(0, self.position())]);
        Ok(Some(batch))
    }
}

/// Bytes of the file taken by lines `from..to` of a block, terminators included.
fn line_bytes(block: &Block, from: usize, to: usize) -> u64 {
    if from == to {
        return 0;
    }
    let start = block.lines[from].0;
    let end = match block.lines.get(to) {
        Some(&(next_start, _)) => next_start,
        None => return block.consumed - start as u64,
    };
    (end - start) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn limits(rows: usize) -> BatchLimits {
        BatchLimits {
            max_rows: rows,
            max_bytes: 1 << 30,
            max_wait: Duration::from_secs(10),
        }
    }

    #[test]
    fn reads_lines_in_batches_and_resumes_by_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        let mut f = File::create(&path).unwrap();
        write!(f, "a\r\nbb\n\nccc\nlast-no-newline").unwrap();
        drop(f);
        let p = path.to_str().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut src = FileSource::open(p, None, stop.clone()).unwrap();
        let b1 = src.next_batch(limits(2)).unwrap().unwrap();
        assert_eq!((b1.payload(0), b1.payload(1)), (&b"a"[..], &b"bb"[..]));
        assert_eq!(
            b1.positions[&0],
            SourcePosition {
                next_offset: 2,
                next_byte: Some(6)
            }
        );
        let mut resumed = FileSource::open(p, Some(b1.positions[&0]), stop).unwrap();
        let b2 = resumed.next_batch(limits(10)).unwrap().unwrap();
        let payloads: Vec<&[u8]> = (0..b2.len()).map(|i| b2.payload(i)).collect();
        assert_eq!(payloads, vec![&b""[..], b"ccc", b"last-no-newline"]);
        assert_eq!(b2.spans[0].offset, 2);
        assert_eq!(
            b2.positions[&0].next_byte,
            Some(std::fs::metadata(&path).unwrap().len())
        );
        assert!(resumed.next_batch(limits(10)).unwrap().is_none());
    }

    /// The lines of `text` as the source must give them: split at `\n`, a
    /// `\r` before it dropped, a last line without a terminator kept as is.
    fn reference_lines(text: &[u8]) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = text.split(|&c| c == b'\n').map(<[u8]>::to_vec).collect();
        if text.is_empty() || text.ends_with(b"\n") {
            lines.pop();
        }
        let last = lines.len().saturating_sub(1);
        let ends_open = !text.is_empty() && !text.ends_with(b"\n");
        for (i, l) in lines.iter_mut().enumerate() {
            if !(ends_open && i == last) && l.ends_with(b"\r") {
                l.pop();
            }
        }
        lines
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// Any file, read in blocks of any size and batches of any size,
        /// gives its lines in order, and resuming at any batch's position
        /// gives the rest.
        #[test]
        fn lines_and_positions_match_a_plain_split(
            parts in proptest::collection::vec(
                (0usize..3, 0usize..400_000, proptest::prelude::any::<u8>()), 0..8),
            tail in proptest::prelude::any::<bool>(),
            rows in 1usize..50,
            max_bytes in proptest::prelude::prop_oneof![1usize..64, 1usize..1_000_000],
        ) {
            let mut text = Vec::new();
            for (term, len, fill) in parts {
                text.extend(std::iter::repeat_n(b'a' + fill % 26, len % 7 + if len > 300_000 { len } else { 0 }));
                text.extend_from_slice([&b"\n"[..], b"\r\n", b"\n\n"][term]);
            }
            if tail {
                text.extend_from_slice(b"end\r");
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("in.jsonl");
            std::fs::write(&path, &text).unwrap();
            let p = path.to_str().unwrap();
            let want = reference_lines(&text);
            let stop = Arc::new(AtomicBool::new(false));
            let mut src = FileSource::open(p, None, stop.clone()).unwrap();
            let mut got = Vec::new();
            let mut positions = Vec::new();
            let batch_limits = BatchLimits { max_bytes, ..limits(rows) };
            while let Some(b) = src.next_batch(batch_limits).unwrap() {
                for i in 0..b.len() {
                    got.push(b.payload(i).to_vec());
                }
                // Within the limits: the byte limit is checked before each
                // line, so only the last line may cross it.
                proptest::prop_assert!(b.len() <= rows);
                if b.len() > 1 {
                    let last = &b.spans[b.len() - 1];
                    proptest::prop_assert!(b.spans[b.len() - 2].end < max_bytes);
                    proptest::prop_assert!(last.start <= b.data.len());
                }
                positions.push((got.len(), b.positions[&0]));
            }
            proptest::prop_assert_eq!(got.len(), want.len());
            proptest::prop_assert!(got == want);
            let end = positions.last().map_or(Some(0), |p| p.1.next_byte);
            proptest::prop_assert_eq!(end, Some(text.len() as u64));
            if let Some(&(done, pos)) = positions.get(positions.len() / 2) {
                let mut resumed = FileSource::open(p, Some(pos), stop).unwrap();
                let mut rest = Vec::new();
                while let Some(b) = resumed.next_batch(limits(1000)).unwrap() {
                    for i in 0..b.len() {
                        rest.push(b.payload(i).to_vec());
                    }
                }
                proptest::prop_assert!(rest == want[done..]);
            }
        }
    }

    #[test]
    fn truncated_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, "a\n").unwrap();
        let pos = SourcePosition {
            next_offset: 5,
            next_byte: Some(100),
        };
        let e = FileSource::open(
            path.to_str().unwrap(),
            Some(pos),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("replaced or truncated"), "{e}");
    }
}
