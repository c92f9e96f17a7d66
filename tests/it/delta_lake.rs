//! The lake as Delta tables: checkpoints and restart, compaction while an
//! ingest commits, Z-order compaction, vacuum, and a damaged log.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::helpers::*;

fn log_dir(t: &TestDir, table: &str) -> std::path::PathBuf {
    t.path(&format!("lake/{table}/_delta_log"))
}

fn log_files(t: &TestDir, table: &str, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(log_dir(t, table))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    v.sort();
    v
}

async fn source_offsets(lake: &str, table: &str) -> Vec<i64> {
    let mut v = crate::crash_resume::offsets(lake, table).await;
    v.sort_unstable();
    v
}

fn ingest(lake: &str, input: &str, extra: &[&str]) -> String {
    let mut args = vec!["ingest", "--lake", lake, "--from-file", input, "--quiet"];
    args.extend(extra);
    run_ok(&args)
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_bound_the_log_a_restart_reads() {
    let t = TestDir::new();
    let (lines, valid, bad) = generate(&t.path("gen"), 2_300, 0.02, 21);
    let lake = t.str("lake");
    let input = t.str("gen/transactions.jsonl");
    ingest(
        &lake,
        &input,
        &["--batch-rows", "100", "--checkpoint-interval", "2"],
    );
    // A checkpoint at every version v with (v + 1) % 2 == 0 (batches that
    // were ready together share a commit, so count the commits).
    let commits = log_files(&t, "fact_transaction", ".json").len() as u64;
    let checkpoints = log_files(&t, "fact_transaction", ".checkpoint.parquet");
    assert!(commits >= 4, "{commits} commits");
    assert_eq!(checkpoints.len() as u64, commits / 2, "{checkpoints:?}");
    assert!(log_dir(&t, "fact_transaction")
        .join("_last_checkpoint")
        .exists());
    // Log cleanup removes the commits before a checkpoint (here: all of them,
    // by hand, as delta-rs' cleanup would); a restart needs only the
    // checkpoint and the commits from its version on.
    let newest: u64 = checkpoints.last().unwrap()[..20].parse().unwrap();
    for f in log_files(&t, "fact_transaction", ".json") {
        if f[..20].parse::<u64>().unwrap() < newest {
            std::fs::remove_file(log_dir(&t, "fact_transaction").join(f)).unwrap();
        }
    }
    let again = ingest(&lake, &input, &[]);
    assert!(again.contains("nothing new"), "{again}");
    // Appending more lines resumes right after the last committed one.
    let all = std::fs::read_to_string(&input).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        all.lines()
            .take(50)
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    )
    .unwrap();
    drop(f);
    ingest(&lake, &input, &[]);
    let fact = source_offsets(&lake, "fact_transaction").await;
    let quarantine = source_offsets(&lake, "quarantine").await;
    let got: BTreeSet<i64> = fact.iter().chain(&quarantine).copied().collect();
    assert_eq!(
        fact.len() + quarantine.len(),
        lines as usize + 50,
        "no row twice"
    );
    assert_eq!(got, (0..lines as i64 + 50).collect(), "every line once");
    assert!(fact.len() as u64 > valid && quarantine.len() as u64 >= bad);
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_while_an_ingest_commits_loses_and_duplicates_nothing() {
    let t = TestDir::new();
    let (lines, valid, _) = generate(&t.path("gen"), 60_000, 0.01, 22);
    let lake = t.str("lake");
    let input = t.str("gen/transactions.jsonl");
    let mut child = txpipe()
        .args([
            "ingest",
            "--lake",
            &lake,
            "--from-file",
            &input,
            "--batch-rows",
            "400",
            "--quiet",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Compact over and over while batches keep landing.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut compactions = 0;
    let mut removed_total = 0u64;
    loop {
        let running = child.try_wait().unwrap().is_none();
        if t.path("lake/fact_transaction/_delta_log").exists() {
            let out = run_ok(&["compact", "--lake", &lake, "--target-size", "1MiB"]);
            compactions += 1;
            removed_total += out
                .lines()
                .filter(|l| l.starts_with("fact_transaction:"))
                .filter_map(|l| l.split("; ").nth(1))
                .filter_map(|s| s.split(' ').next())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
        if !running {
            break;
        }
        assert!(Instant::now() < deadline, "ingest did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the ingest failed next to compaction:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(compactions >= 2, "compacted {compactions} times");
    assert!(removed_total > 0, "no compaction rewrote anything");
    let fact = source_offsets(&lake, "fact_transaction").await;
    assert_eq!(fact.len() as u64, valid, "fact rows");
    assert_eq!(
        fact.iter().copied().collect::<BTreeSet<_>>().len() as u64,
        valid,
        "no duplicated fact row"
    );
    let q = source_offsets(&lake, "quarantine").await;
    assert_eq!(fact.len() + q.len(), lines as usize);
    // A final compaction leaves one file per day partition (they are small).
    run_ok(&["compact", "--lake", &lake]);
    let l = txpipe_core::lake::Lake::open(&lake).unwrap();
    let files = txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
        .await
        .unwrap();
    let days: BTreeSet<&str> = files.iter().map(|f| f.split('/').nth(1).unwrap()).collect();
    assert_eq!(files.len(), days.len(), "{files:?}");
    assert_eq!(source_offsets(&lake, "fact_transaction").await, fact);
}

/// The `customer_id` values of one Parquet file, in file order.
fn customer_ids(file: &std::path::Path) -> Vec<String> {
    use txpipe_core::arrow::array::AsArray;
    use txpipe_core::arrow::datatypes::DataType;
    use txpipe_core::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use txpipe_core::parquet::arrow::ProjectionMask;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let idx = builder
        .schema()
        .index_of("customer_id")
        .expect("customer_id column");
    let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
    let mut out = Vec::new();
    for batch in builder.with_projection(mask).build().unwrap() {
        let col =
            txpipe_core::arrow::compute::cast(batch.unwrap().column(0), &DataType::Utf8).unwrap();
        out.extend(
            col.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap().to_string()),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn zorder_compaction_sorts_each_day_by_customer_and_keeps_every_row() {
    let t = TestDir::new();
    let (lines, valid, _) = generate(&t.path("gen"), 3_000, 0.01, 29);
    let lake = t.str("lake");
    ingest(
        &lake,
        &t.str("gen/transactions.jsonl"),
        &["--batch-rows", "200"],
    );
    let before = source_offsets(&lake, "fact_transaction").await;
    assert_eq!(before.len() as u64, valid);
    let l = txpipe_core::lake::Lake::open(&lake).unwrap();
    let files = txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
        .await
        .unwrap();
    // Arrival order: some day's file is not sorted by customer before.
    assert!(
        files.iter().any(|f| {
            let ids = customer_ids(&t.path(&format!("lake/{f}")));
            ids.windows(2).any(|w| w[0] > w[1])
        }),
        "the ingest already wrote sorted files: the test would prove nothing"
    );

    // Refusals fail and say why; nothing is rewritten.
    let refused = |args: &[&str], words: &[&str]| {
        let out = txpipe().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && words.iter().all(|w| err.contains(w)),
            "{args:?}: {err}"
        );
    };
    for (column, why) in [
        ("no_such_column", "no such column"),
        ("event_date", "partition column"),
    ] {
        refused(
            &[
                "compact",
                "--lake",
                &lake,
                "--table",
                "fact_transaction",
                "--zorder-by",
                column,
            ],
            &[column, why],
        );
    }
    // Without --table the Z-order would also reach the quarantine (no customer_id).
    refused(
        &["compact", "--lake", &lake, "--zorder-by", "customer_id"],
        &["needs the table"],
    );
    let unchanged = txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
        .await
        .unwrap();
    assert_eq!(unchanged, files);

    let out = run_ok(&[
        "compact",
        "--lake",
        &lake,
        "--table",
        "fact_transaction",
        "--zorder-by",
        "customer_id",
    ]);
    assert!(out.contains("fact_transaction:"), "{out}");
    let after = txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
        .await
        .unwrap();
    let days: BTreeSet<&str> = after.iter().map(|f| f.split('/').nth(1).unwrap()).collect();
    assert_eq!(after.len(), days.len(), "one file per day: {after:?}");
    for f in &after {
        let ids = customer_ids(&t.path(&format!("lake/{f}")));
        assert!(!ids.is_empty(), "{f}");
        assert!(
            ids.windows(2).all(|w| w[0] <= w[1]),
            "{f} is not sorted by customer_id"
        );
    }
    // Every row once, none changed: same offsets, same totals.
    assert_eq!(source_offsets(&lake, "fact_transaction").await, before);
    let q = source_offsets(&lake, "quarantine").await;
    assert_eq!(before.len() + q.len(), lines as usize);
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuum_dry_run_lists_only_unreferenced_files_then_removes_them() {
    let t = TestDir::new();
    let (_, valid, _) = generate(&t.path("gen"), 3_000, 0.0, 23);
    let lake = t.str("lake");
    let input = t.str("gen/transactions.jsonl");
    ingest(&lake, &input, &["--batch-rows", "50"]);
    let l = txpipe_core::lake::Lake::open(&lake).unwrap();
    let before: BTreeSet<String> =
        txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
            .await
            .unwrap()
            .into_iter()
            .collect();
    // An uncommitted file (a crash before the commit) and compaction leftovers.
    let first = before.iter().next().unwrap().clone();
    let orphan = first.replace("part-", "part-orphan-");
    std::fs::copy(
        t.path(&format!("lake/{first}")),
        t.path(&format!("lake/{orphan}")),
    )
    .unwrap();
    run_ok(&["compact", "--lake", &lake]);
    let after: BTreeSet<String> = txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
        .await
        .unwrap()
        .into_iter()
        .collect();
    // Compaction removed the files of every partition that had several.
    let removed: BTreeSet<String> = before.difference(&after).cloned().collect();
    assert!(removed.len() > before.len() / 2, "{removed:?}");
    // The default retention (7 days) keeps everything this young.
    let out = run_ok(&["vacuum", "--lake", &lake, "--dry-run"]);
    assert!(out.lines().all(|l| !l.ends_with(".parquet")), "{out}");
    let dry = run_ok(&["vacuum", "--lake", &lake, "--retain", "0h", "--dry-run"]);
    let listed: BTreeSet<String> = dry
        .lines()
        .filter(|l| l.ends_with(".parquet"))
        .map(String::from)
        .collect();
    let mut expected: BTreeSet<String> = removed.clone();
    expected.insert(orphan.clone());
    assert_eq!(
        listed, expected,
        "dry run lists exactly the unreferenced files"
    );
    assert!(
        t.path(&format!("lake/{orphan}")).exists(),
        "a dry run deletes nothing"
    );
    run_ok(&["vacuum", "--lake", &lake, "--retain", "0h"]);
    assert!(!t.path(&format!("lake/{orphan}")).exists());
    for f in &removed {
        assert!(!t.path(&format!("lake/{f}")).exists(), "{f}");
    }
    for f in &after {
        assert!(t.path(&format!("lake/{f}")).exists(), "{f}");
    }
    assert_eq!(
        query_i64s(&lake, "SELECT COUNT(*) FROM fact_transaction").await,
        vec![valid as i64]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_log_is_a_clear_error_naming_the_file_not_a_panic() {
    let t = TestDir::new();
    generate(&t.path("gen"), 1_000, 0.0, 24);
    let lake = t.str("lake");
    // Five sources, one commit each at least: versions 1..=5 after the create.
    let all = std::fs::read_to_string(t.path("gen/transactions.jsonl")).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    for (i, chunk) in lines.chunks(200).enumerate() {
        let part = t.str(&format!("gen/part-{i}.jsonl"));
        std::fs::write(&part, chunk.join("\n") + "\n").unwrap();
        ingest(&lake, &part, &[]);
    }
    let input = t.str("gen/part-0.jsonl");
    let dir = log_dir(&t, "fact_transaction");
    let commit = dir.join("00000000000000000003.json");
    let good = std::fs::read(&commit).unwrap();
    for (damage, expect) in [
        ("corrupt", "00000000000000000003.json"),
        ("missing", "00000000000000000003.json"),
    ] {
        if damage == "corrupt" {
            std::fs::write(&commit, b"{\"add\": {\"path\": truncated").unwrap();
        } else {
            std::fs::remove_file(&commit).unwrap();
        }
        for args in [
            vec!["ingest", "--lake", &lake, "--from-file", &input],
            vec!["models", "run", "--lake", &lake],
        ] {
            let out = txpipe().args(&args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{damage} log, {args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(err.contains("fact_transaction"), "{damage}: {err}");
            assert!(err.contains(expect), "{damage} log names the file: {err}");
        }
        std::fs::write(&commit, &good).unwrap();
    }
    let again = ingest(&lake, &input, &[]);
    assert!(again.contains("nothing new"), "{again}");
}
