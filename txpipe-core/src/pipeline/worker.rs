//! One worker thread of the ingest loop: raw batches in, encoded batches out.

use std::sync::mpsc::Receiver;
use std::sync::Mutex;

use crate::error::Result;
use crate::process::{BatchProcessor, PreparedBatch};
use crate::sink::EncodedBatch;
use crate::source::RawBatch;

/// Takes raw batches from `rx` (shared by the workers) until it closes,
/// processes each and sends the outcome with its place in source order to
/// `tx`.
///
/// A batch that reaches the rule state before its turn (the state's lock free,
/// the turn not yet passed to it) does not leave the worker idle: the next
/// queued batch, if there is one (never blocking for it: the turn may come
/// first), is taken and prepared meanwhile, and processed right after the
/// batch that waited, so each worker still goes through its batches in source
/// order. A batch arriving while another holds the turn waits for the lock.
pub(super) fn work(
    rx: &Mutex<Receiver<(u64, RawBatch)>>,
    tx: &tokio::sync::mpsc::Sender<(u64, Result<EncodedBatch>)>,
    processor: &BatchProcessor,
) {
    let _guard = AbandonOnPanic(processor);
    let mut ahead: Option<(u64, RawBatch, PreparedBatch)> = None;
    loop {
        let (seq, raw, prepared) = match ahead.take() {
            Some(next) => next,
            None => {
                let next = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                let Ok((seq, raw)) = next else { return };
                let prepared = processor.prepare(&raw);
                (seq, raw, prepared)
            }
        };
        let mut while_waiting = || {
            let next = rx.try_lock().ok().and_then(|guard| guard.try_recv().ok());
            if let Some((seq, raw)) = next {
                let prepared = processor.prepare(&raw);
                ahead = Some((seq, raw, prepared));
            }
        };
        let result = processor.process_prepared(seq, &raw, prepared, &mut while_waiting);
        if tx.blocking_send((seq, result)).is_err() {
            // Nobody wants results any more (the ingest failed or stops). A
            // batch taken ahead will never take its turn: release the
            // workers waiting behind it.
            if ahead.is_some() {
                processor.abandon();
            }
            return;
        }
    }
}

/// Gives up the rule state's later turns when a worker panics, whatever batch
/// it held: the other workers then end with an error instead of waiting for a
/// turn that never comes, and the ingest reports the panic.
struct AbandonOnPanic<'a>(&'a BatchProcessor);

impl Drop for AbandonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abandon();
        }
    }
}
