//! `txpipe demo` end to end: in-process broker, produce, consumer-group ingest,
//! models and tests — with the default 100 k transactions.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_the_whole_stack_with_no_services() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let out = run_ok(&["demo", "--lake", &lake]);
    assert!(
        out.contains("txpipe demo: 100000 transactions through in-process mock cluster"),
        "{out}"
    );
    assert!(
        out.contains("tests 29 pass, 0 warn, 0 fail; run success"),
        "{out}"
    );
    assert!(out.contains("duckdb -c"), "{out}");
    // The lake holds every generated transaction exactly once (landed or quarantined).
    let counts = query_i64s(
        &lake,
        "SELECT (SELECT COUNT(*) FROM fact_transaction) AS f, \
         (SELECT COUNT(DISTINCT transaction_id) FROM fact_transaction) AS d, \
         (SELECT COUNT(*) FROM quarantine) AS q",
    )
    .await;
    assert_eq!(counts[0], counts[1], "no duplicates");
    assert_eq!(counts[0] + counts[2], 100_000);
    assert!(
        out.contains(&format!("landed {} + quarantined {}", counts[0], counts[2])),
        "{out}"
    );
    // Every flagged row was published as an alert (to the demo's topic).
    let fraud = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE is_fraud",
    )
    .await;
    assert!(fraud[0] > 0);
    assert!(
        out.contains(&format!("alerts    {} delivered to demo-alerts-", fraud[0])),
        "{out}"
    );
    for mart in MARTS {
        assert!(!mart_files(&t.path("lake"), mart).is_empty(), "{mart}");
    }
}
