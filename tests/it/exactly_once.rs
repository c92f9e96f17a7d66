//! The Delta commit protocol's recovery and conflict paths, driven through the library.

use std::collections::BTreeMap;

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
            stats: format!("{{\"numRecords\":{rows}}}"),
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
        flagged: Vec::new(),
    }
}

/// Data versions of the fact table (the create commit is version 0).
async fn fact_version(lake: &Lake) -> u64 {
    txpipe_core::sink::delta::open(lake, "fact_transaction")
        .await
        .unwrap()
        .and_then(|t| t.version())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn positions_are_txn_actions_of_the_fact_commit_and_survive_a_restart() {
    let t = tempfile::tempdir().unwrap();
    let lake = Lake::open(t.path().to_str().unwrap()).unwrap();
    let mut writer = LakeWriter::new(lake.clone(), "stream-a", "a.jsonl");
    assert!(writer.recover().await.unwrap().is_empty());
    let mut b = batch(0, 10);
    b.positions.get_mut(&0).unwrap().next_byte = Some(1234);
    let entry = writer.commit(b).await.unwrap();
    assert_eq!(entry.version, 1);
    let file = &entry.files[0];
    assert!(lake.exists(&file.path).await.unwrap());
    assert_eq!(
        txpipe_core::sink::delta::committed_files(&lake, "fact_transaction")
            .await
            .unwrap(),
        vec![file.path.clone()]
    );
    // The commit file holds the Add, the txn actions and our commitInfo record.
    let log = std::fs::read_to_string(
        t.path()
            .join("fact_transaction/_delta_log/00000000000000000001.json"),
    )
    .unwrap();
    assert!(
        log.contains(r#""appId":"txpipe-stream-a-0","version":10"#),
        "{log}"
    );
    assert!(
        log.contains(r#""appId":"txpipe-stream-a-0-byte","version":1234"#),
        "{log}"
    );
    assert!(log.contains(r#""txpipe":{"#), "{log}");
    let mut restarted = LakeWriter::new(lake.clone(), "stream-a", "a.jsonl");
    let positions = restarted.recover().await.unwrap();
    assert_eq!(positions[&0].next_offset, 10);
    assert_eq!(positions[&0].next_byte, Some(1234));
    // Another stream of the same lake starts from nothing.
    let mut other = LakeWriter::new(lake.clone(), "stream-b", "b.jsonl");
    assert!(other.recover().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_quarantine_commit_cut_off_by_a_crash_is_rolled_forward_once() {
    let t = tempfile::tempdir().unwrap();
    let lake = Lake::open(t.path().to_str().unwrap()).unwrap();
    let mut writer = LakeWriter::new(lake.clone(), "s", "s");
    writer.recover().await.unwrap();
    let mut b = batch(0, 10);
    b.files.push(EncodedFile {
        table: "quarantine",
        partition: "received_date=2026-11-20".into(),
        rows: 2,
        stats: r#"{"numRecords":2}"#.into(),
        data: Bytes::from_static(b"PAR1"),
    });
    let entry = writer.commit(b).await.unwrap();
    let quarantined = entry.files[1].path.clone();
    // Crash between the two commits: the quarantine's commit never happened.
    drop_last_commit(t.path(), "quarantine");
    let committed = |lake: Lake| async move {
        txpipe_core::sink::delta::committed_files(&lake, "quarantine")
            .await
            .unwrap()
    };
    assert!(committed(lake.clone()).await.is_empty());
    for _ in 0..2 {
        let mut restarted = LakeWriter::new(lake.clone(), "s", "s");
        assert_eq!(restarted.recover().await.unwrap()[&0].next_offset, 10);
        assert_eq!(committed(lake.clone()).await, vec![quarantined.clone()]);
    }
}

/// `batch(start, next)` with one quarantine file too.
fn batch_with_quarantine(start: i64, next: i64) -> EncodedBatch {
    let mut b = batch(start, next);
    b.files.push(EncodedFile {
        table: "quarantine",
        partition: "received_date=2026-11-20".into(),
        rows: 1,
        stats: r#"{"numRecords":1}"#.into(),
        data: Bytes::from_static(b"PAR1"),
    });
    b
}

/// Removes the newest commit file of `table` (a crash before that commit).
fn drop_last_commit(lake_dir: &std::path::Path, table: &str) {
    let log = lake_dir.join(table).join("_delta_log");
    let last = std::fs::read_dir(&log)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()
        .unwrap();
    std::fs::remove_file(&last).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_killed_between_its_two_commits_loses_no_quarantine_row_to_the_next_member() {
    // Member A commits a batch and dies before its quarantine commit; member
    // B, which opened the lake before, takes over the partition and commits
    // the next batch. B's quarantine commit must not skip A's files.
    let t = tempfile::tempdir().unwrap();
    let lake = Lake::open(t.path().to_str().unwrap()).unwrap();
    let mut a = LakeWriter::new(lake.clone(), "s", "s");
    let mut b = LakeWriter::new(lake.clone(), "s", "s");
    a.recover().await.unwrap();
    b.recover().await.unwrap();
    let first = a.commit(batch_with_quarantine(0, 10)).await.unwrap();
    let second = a.commit(batch_with_quarantine(10, 20)).await.unwrap();
    drop_last_commit(t.path(), "quarantine");
    // B's view is stale (it has seen no commit): its commit lands after A's.
    let third = b.commit(batch_with_quarantine(20, 30)).await.unwrap();
    assert_eq!(third.version, second.version + 1);
    let mut committed = txpipe_core::sink::delta::committed_files(&lake, "quarantine")
        .await
        .unwrap();
    committed.sort();
    let mut expected: Vec<String> = [&first, &second, &third]
        .iter()
        .map(|e| e.files[1].path.clone())
        .collect();
    expected.sort();
    assert_eq!(committed, expected, "every batch's quarantine file, once");
    // The quarantine's position is the last batch's, and a restart adds nothing.
    let mut restarted = LakeWriter::new(lake.clone(), "s", "s");
    assert_eq!(restarted.recover().await.unwrap()[&0].next_offset, 30);
    let again = txpipe_core::sink::delta::committed_files(&lake, "quarantine")
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_writer_cannot_commit_positions_someone_else_committed() {
    let lake = Lake::in_memory();
    let mut a = LakeWriter::new(lake.clone(), "s", "s");
    let mut zombie = LakeWriter::new(lake.clone(), "s", "s");
    a.recover().await.unwrap();
    zombie.recover().await.unwrap();
    a.commit(batch(0, 10)).await.unwrap();
    let before = fact_version(&lake).await;
    // The zombie still believes offset 0 is next: refused, nothing committed.
    let err = zombie.commit(batch(0, 8)).await.unwrap_err();
    assert!(
        matches!(&err, Error::CommitConflict { partitions, .. } if partitions == &vec![0]),
        "{err}"
    );
    assert_eq!(fact_version(&lake).await, before);
    assert_eq!(
        lake.list("fact_transaction")
            .await
            .unwrap()
            .iter()
            .filter(|m| m.location.as_ref().ends_with(".parquet"))
            .count(),
        1,
        "the refused batch's file is deleted"
    );
    // Having caught up, it continues where the lake is.
    assert_eq!(zombie.refresh().await.unwrap()[&0].next_offset, 10);
    let e = zombie.commit(batch(10, 12)).await.unwrap();
    assert_eq!(e.version, before + 1);
    // Interleaved writers of other streams do not conflict, and the first
    // writer notices the zombie's commit before its own next one.
    let mut other = LakeWriter::new(lake.clone(), "t", "t");
    other.commit(batch(0, 5)).await.unwrap();
    let err = a.commit(batch(10, 20)).await.unwrap_err();
    assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
    assert_eq!(a.commit(batch(12, 20)).await.unwrap().version, before + 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lake_in_the_old_format_is_refused_with_what_to_do() {
    let lake = Lake::in_memory();
    lake.put(
        "_txpipe/log/00000000000000000000.json",
        Bytes::from_static(b"{}"),
    )
    .await
    .unwrap();
    let err = LakeWriter::new(lake.clone(), "s", "s")
        .recover()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LegacyLake(_)), "{err}");
    assert!(err.to_string().contains("Delta"), "{err}");
    let ctx = txpipe_core::datafusion::prelude::SessionContext::new();
    let err = txpipe_core::read::register_lake(&ctx, &lake)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LegacyLake(_)), "{err}");
}
