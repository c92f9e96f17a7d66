//! kill -9 at random moments, restart, and the lake still holds every line exactly once.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use txpipe_core::arrow::array::AsArray;
use txpipe_core::arrow::datatypes::Int64Type;

use crate::file_to_lake::walk;
use crate::helpers::*;

/// `source_offset` of every row of `table`, in scan order.
pub(crate) async fn offsets(lake: &str, table: &str) -> Vec<i64> {
    let mut v = Vec::new();
    for b in query(lake, &format!("SELECT source_offset FROM {table}")).await {
        v.extend(
            b.column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .copied(),
        );
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_mid_ingest_then_resume_loses_and_duplicates_nothing() {
    let t = TestDir::new();
    let (lines, valid, bad) = generate(&t.path("gen"), 400_000, 0.01, 11);
    let lake = t.str("lake");
    let input = t.str("gen/transactions.jsonl");
    let args = [
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &input,
        "--batch-rows",
        "2500",
        "--quiet",
    ];
    let mut rng = kill_schedule_rng();
    let mut kills = 0;
    for _ in 0..5 {
        let mut child = txpipe()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(100 + rng.below(500));
        let started = Instant::now();
        while started.elapsed() < wait {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        let status = child.wait().unwrap();
        if status.success() {
            break;
        }
    }
    assert!(
        kills >= 1,
        "the ingest was never killed mid-run; make the input bigger"
    );
    // Finish the job.
    run_ok(&args);

    let landed = offsets(&lake, "fact_transaction").await;
    let quarantined = offsets(&lake, "quarantine").await;
    let landed_set: BTreeSet<i64> = landed.iter().copied().collect();
    let quarantined_set: BTreeSet<i64> = quarantined.iter().copied().collect();
    assert_eq!(landed.len(), landed_set.len(), "duplicated fact rows");
    assert_eq!(
        quarantined.len(),
        quarantined_set.len(),
        "duplicated quarantine rows"
    );
    assert_eq!(landed.len() as u64, valid, "fact rows after {kills} kills");
    assert_eq!(
        quarantined.len() as u64,
        bad,
        "quarantine rows after {kills} kills"
    );
    assert!(landed_set.is_disjoint(&quarantined_set));
    let all: BTreeSet<i64> = landed_set.union(&quarantined_set).copied().collect();
    assert_eq!(
        all,
        (0..lines as i64).collect::<BTreeSet<_>>(),
        "every line exactly once"
    );
    let ids = query_i64s(
        &lake,
        "SELECT COUNT(DISTINCT transaction_id) FROM fact_transaction",
    )
    .await;
    assert_eq!(ids, vec![valid as i64]);
    // Files of batches killed before their commit are in no snapshot;
    // vacuum removes them and leaves exactly the committed files.
    let l = txpipe_core::lake::Lake::open(&lake).unwrap();
    let committed: BTreeSet<String> = [
        txpipe_core::sink::delta::committed_files(&l, "fact_transaction")
            .await
            .unwrap(),
        txpipe_core::sink::delta::committed_files(&l, "quarantine")
            .await
            .unwrap(),
    ]
    .concat()
    .into_iter()
    .collect();
    run_ok(&["vacuum", "--lake", &lake, "--retain", "0h"]);
    let on_disk: BTreeSet<String> = ["fact_transaction", "quarantine"]
        .iter()
        .flat_map(|tbl| walk(&t.path(&format!("lake/{tbl}"))))
        .map(|p| {
            p.strip_prefix(t.path("lake"))
                .unwrap()
                .display()
                .to_string()
        })
        .filter(|p| p.ends_with(".parquet") && !p.contains("_delta_log"))
        .collect();
    assert_eq!(
        on_disk, committed,
        "after vacuum only committed files remain"
    );
    assert_eq!(offsets(&lake, "fact_transaction").await.len() as u64, valid);
    // The commits' counts (commitInfo) add up to the lake's contents.
    let stats = txpipe_core::serve::LogFollower::new(l)
        .refresh()
        .await
        .unwrap();
    assert_eq!((stats.counts.rows_in, stats.counts.landed), (lines, valid));
}
