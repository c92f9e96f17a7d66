//! The commit protocol's recovery and conflict paths, driven through the library.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use txpipe_core::lake::Lake;
use txpipe_core::sink::{BatchCounts, EncodedBatch, EncodedFile, LakeWriter, SourcePosition};
use txpipe_core::Error;

/// A one-file batch covering offsets `start..next` of partition 0.
fn batch(start: i64, next: i64) -> EncodedBatch {
    let rows = (next - start) as u64;
    EncodedBatch {
        files: vec![EncodedFile {
            table: "fact_transaction",
            partition: "event_date=2026-11-20".into(),
            rows,
            data: Bytes::from_static(b"PAR1"),
        }],
        counts: BatchCounts {
            rows_in: rows,
            landed: rows,
            ..Default::default()
        },
        start_offsets: BTreeMap::from([(0, start)]),
        positions: BTreeMap::from([(
            0,
            SourcePosition {
                next_offset: next,
                next_byte: None,
            },
        )]),
        input_bytes: 0,
        opened_at: None,
        produced_ms: Vec::new(),
    }
}

#[tokio::test]
async fn recover_rolls_a_committed_batch_forward_and_drops_uncommitted_files() {
    let t = tempfile::tempdir().unwrap();
    let lake = Lake::open(t.path().to_str().unwrap()).unwrap();
    let mut writer = LakeWriter::new(lake.clone(), "stream-a", "a.jsonl");
    writer.recover(Duration::ZERO).await.unwrap();
    let entry = writer.commit(batch(0, 10)).await.unwrap();
    let file = &entry.files[0];
    assert!(lake.exists(&file.path).await.unwrap());

    // Crash between commit and publish: the file is still in staging.
    lake.rename(&file.path, &file.staged_path).await.unwrap();
    // Crash between staging and commit of the next batch: an orphan in staging.
    let orphan = "_txpipe/staging/stream-a/deadrun/fact_transaction/event_date=2026-11-20/part-orphan.parquet";
    lake.put(orphan, Bytes::from_static(b"PAR1")).await.unwrap();
    // Another stream's staging area is not touched.
    let other = "_txpipe/staging/stream-b/run/fact_transaction/x.parquet";
    lake.put(other, Bytes::from_static(b"PAR1")).await.unwrap();

    let mut restarted = LakeWriter::new(lake.clone(), "stream-a", "a.jsonl");
    let positions = restarted.recover(Duration::ZERO).await.unwrap();
    assert_eq!(positions[&0].next_offset, 10);
    assert!(
        lake.exists(&file.path).await.unwrap(),
        "committed file published on recovery"
    );
    assert!(
        !lake.exists(orphan).await.unwrap(),
        "uncommitted file removed"
    );
    assert!(
        lake.exists(other).await.unwrap(),
        "other streams keep their staging"
    );
    assert_eq!(lake.list("fact_transaction").await.unwrap().len(), 1);
}

#[tokio::test]
async fn recent_staging_of_a_live_group_member_survives_a_grace_period() {
    let lake = Lake::in_memory();
    let live = "_txpipe/staging/s/otherrun/fact_transaction/p.parquet";
    lake.put(live, Bytes::from_static(b"PAR1")).await.unwrap();
    let mut w = LakeWriter::new(lake.clone(), "s", "s");
    w.recover(Duration::from_secs(300)).await.unwrap();
    assert!(lake.exists(live).await.unwrap());
}

#[tokio::test]
async fn a_committed_file_missing_everywhere_is_an_error_not_silence() {
    let lake = Lake::in_memory();
    let mut writer = LakeWriter::new(lake.clone(), "s", "s");
    let entry = writer.commit(batch(0, 1)).await.unwrap();
    lake.delete(&entry.files[0].path).await.unwrap();
    let err = LakeWriter::new(lake.clone(), "s", "s")
        .recover(Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither published nor staged"), "{err}");
}

#[tokio::test]
async fn a_stale_writer_cannot_commit_positions_someone_else_committed() {
    let lake = Lake::in_memory();
    let mut a = LakeWriter::new(lake.clone(), "s", "s");
    let mut zombie = LakeWriter::new(lake.clone(), "s", "s");
    a.recover(Duration::ZERO).await.unwrap();
    zombie.recover(Duration::ZERO).await.unwrap();
    a.commit(batch(0, 10)).await.unwrap();
    // The zombie still believes offset 0 is next: refused, nothing committed, staging cleaned.
    let err = zombie.commit(batch(0, 8)).await.unwrap_err();
    assert!(
        matches!(&err, Error::CommitConflict { partitions, .. } if partitions == &vec![0]),
        "{err}"
    );
    assert_eq!(
        txpipe_core::sink::CommitLog::new(lake.clone())
            .versions()
            .await
            .unwrap(),
        vec![0]
    );
    assert_eq!(lake.list("_txpipe/staging").await.unwrap().len(), 0);
    // Having caught up, it continues where the lake is.
    assert_eq!(zombie.refresh().await.unwrap()[&0].next_offset, 10);
    let e = zombie.commit(batch(10, 12)).await.unwrap();
    assert_eq!(e.version, 1);
    // Interleaved writers of other streams do not conflict.
    let mut other = LakeWriter::new(lake.clone(), "t", "t");
    other.commit(batch(0, 5)).await.unwrap();
    assert_eq!(a.commit(batch(12, 20)).await.unwrap().version, 3);
}
