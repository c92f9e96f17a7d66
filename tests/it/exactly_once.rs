//! The commit protocol's recovery paths, driven through the library.

use std::collections::BTreeMap;

use bytes::Bytes;
use txpipe_core::lake::Lake;
use txpipe_core::sink::{BatchCounts, EncodedBatch, EncodedFile, LakeWriter, SourcePosition};

fn batch(rows: u64, next: i64) -> EncodedBatch {
    EncodedBatch {
        files: vec![EncodedFile { table: "fact_transaction", partition: "event_date=2026-11-20".into(), rows, data: Bytes::from_static(b"PAR1") }],
        counts: BatchCounts { rows_in: rows, landed: rows, ..Default::default() },
        positions: BTreeMap::from([(0, SourcePosition { next_offset: next, next_byte: None })]),
        input_bytes: 0,
    }
}

#[tokio::test]
async fn recover_rolls_a_committed_batch_forward_and_drops_uncommitted_files() {
    let t = tempfile::tempdir().unwrap();
    let lake = Lake::open(t.path().to_str().unwrap()).unwrap();
    let writer = LakeWriter::new(lake.clone(), "stream-a", "a.jsonl");
    let entry = writer.commit(batch(10, 10)).await.unwrap();
    let file = &entry.files[0];
    assert!(lake.exists(&file.path).await.unwrap());

    // Crash between commit and publish: the file is still in staging.
    lake.rename(&file.path, &file.staged_path).await.unwrap();
    // Crash between staging and commit of the next batch: an orphan in staging.
    let orphan = "_txpipe/staging/stream-a/fact_transaction/event_date=2026-11-20/part-orphan.parquet";
    lake.put(orphan, Bytes::from_static(b"PAR1")).await.unwrap();
    // Another stream's staging area is not touched.
    let other = "_txpipe/staging/stream-b/fact_transaction/x.parquet";
    lake.put(other, Bytes::from_static(b"PAR1")).await.unwrap();

    let restarted = LakeWriter::new(lake.clone(), "stream-a", "a.jsonl");
    let last = restarted.recover().await.unwrap().unwrap();
    assert_eq!(last.positions[&0].next_offset, 10);
    assert!(lake.exists(&file.path).await.unwrap(), "committed file published on recovery");
    assert!(!lake.exists(orphan).await.unwrap(), "uncommitted file removed");
    assert!(lake.exists(other).await.unwrap(), "other streams keep their staging");
    let published = lake.list("fact_transaction").await.unwrap();
    assert_eq!(published.len(), 1);
}

#[tokio::test]
async fn a_committed_file_missing_everywhere_is_an_error_not_silence() {
    let lake = Lake::in_memory();
    let writer = LakeWriter::new(lake.clone(), "s", "s");
    let entry = writer.commit(batch(1, 1)).await.unwrap();
    lake.delete(&entry.files[0].path).await.unwrap();
    let err = writer.recover().await.unwrap_err().to_string();
    assert!(err.contains("neither published nor staged"), "{err}");
}

#[tokio::test]
async fn two_writers_on_one_stream_cannot_both_commit_a_version() {
    let lake = Lake::in_memory();
    let log = txpipe_core::sink::CommitLog::new(lake.clone());
    let a = LakeWriter::new(lake.clone(), "s", "s");
    a.commit(batch(1, 1)).await.unwrap();
    // Simulate a stale writer that still believes version 0 is next.
    let mut stale = log.read(0).await.unwrap();
    stale.version = 0;
    // Version 0 is taken by the same stream: refused, naming the conflict.
    let err = log.append(&mut stale).await.unwrap_err().to_string();
    assert!(err.contains("another writer committed version 0"), "{err}");
    assert_eq!(log.versions().await.unwrap(), vec![0]);
}
