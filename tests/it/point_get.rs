//! The Postgres endpoint's point lookups (issue 14): a customer's newest
//! transactions answered from the customer index equal what DataFusion's scan
//! returns, row for row, on a lake of many micro-batch files, after another
//! ingest (the index follows new commits) and after a compaction (files
//! removed: the index is rebuilt). Lookups the index cannot answer (more
//! rows than it keeps) are left to DataFusion.

use std::sync::Arc;

use txpipe_core::arrow::array::RecordBatch;
use txpipe_core::arrow::util::pretty::pretty_format_batches;
use txpipe_core::datafusion::prelude::SessionContext;
use txpipe_core::lake::Lake;
use txpipe_core::pg::customer_index::DEPTH;
use txpipe_core::pg::lake_session;
use txpipe_core::pg::point_get::{Customer, Latest, PointGet};

use crate::helpers::*;

/// One line per row, as `pretty_format_batches` prints it.
fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let text = pretty_format_batches(batches).unwrap().to_string();
    text.lines()
        .skip(3)
        .filter(|l| l.starts_with('|'))
        .map(str::to_string)
        .collect()
}

async fn sql(ctx: &SessionContext, q: &str) -> Vec<RecordBatch> {
    ctx.sql(q).await.unwrap().collect().await.unwrap()
}

/// Every customer in `customers`, every limit: the index's answer (when it
/// must have one) equals DataFusion's.
async fn lookups_agree(ctx: &SessionContext, pg: &PointGet, customers: &[String]) -> usize {
    let mut answered = 0;
    for customer in customers {
        let total = sql(
            ctx,
            &format!("SELECT count(*) AS n FROM fact_transaction WHERE customer_id = '{customer}'"),
        )
        .await;
        let total = lines(&total)[0]
            .trim_matches(|c| c == '|' || c == ' ')
            .parse::<usize>()
            .unwrap();
        for limit in [
            Some(0),
            Some(1),
            Some(7),
            Some(100),
            Some(DEPTH),
            Some(DEPTH + 1),
            None,
        ] {
            for columns in [
                None,
                Some(vec![
                    "transaction_id".to_string(),
                    "amount_usd".to_string(),
                    "event_date".to_string(),
                    "fraud_reasons".to_string(),
                    "transaction_ts".to_string(),
                ]),
            ] {
                let lookup = Latest {
                    columns: columns.clone(),
                    customer: Customer::Literal(customer.clone()),
                    limit,
                };
                let got = pg.rows(&lookup, customer, None).await.unwrap();
                let answerable = total <= DEPTH || limit.is_some_and(|n| n <= DEPTH);
                let Some(got) = got else {
                    assert!(
                        !answerable,
                        "{customer} ({total} rows) limit {limit:?}: no answer"
                    );
                    continue;
                };
                assert!(
                    answerable,
                    "{customer} ({total} rows) limit {limit:?}: answered"
                );
                answered += 1;
                let select = columns.map_or("*".to_string(), |c| c.join(", "));
                let limit_sql = limit.map_or(String::new(), |n| format!(" LIMIT {n}"));
                let want = sql(
                    ctx,
                    &format!(
                        "SELECT {select} FROM fact_transaction WHERE customer_id = '{customer}' \
                         ORDER BY transaction_ts DESC, transaction_id{limit_sql}"
                    ),
                )
                .await;
                let want_schema = match want.first() {
                    Some(b) => b.schema(),
                    None => continue,
                };
                for (g, w) in got.schema().fields().iter().zip(want_schema.fields()) {
                    assert_eq!(
                        (g.name(), g.data_type()),
                        (w.name(), w.data_type()),
                        "column types"
                    );
                }
                assert_eq!(got.schema().fields().len(), want_schema.fields().len());
                let (mut g, mut w) = (lines(&[got]), lines(&want));
                assert_eq!(g.len(), w.len(), "{customer} limit {limit:?}: row count");
                // Rows with the same transaction_ts may come in either order.
                g.sort();
                w.sort();
                assert_eq!(g, w, "{customer} limit {limit:?}");
            }
        }
    }
    answered
}

async fn some_customers(ctx: &SessionContext) -> Vec<String> {
    let batches = sql(
        ctx,
        "SELECT customer_id FROM fact_transaction GROUP BY customer_id \
         ORDER BY count(*) DESC, customer_id",
    )
    .await;
    let all: Vec<String> = lines(&batches)
        .iter()
        .map(|l| l.trim_matches(|c| c == '|' || c == ' ').to_string())
        .collect();
    assert!(all.len() > 10, "{} customers", all.len());
    let mut picked = vec![
        all[0].clone(),
        all[all.len() / 2].clone(),
        all[all.len() - 1].clone(),
    ];
    picked.push("no-such-customer".to_string());
    picked
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_from_the_index_equal_the_scan_through_ingests_and_compaction() {
    let t = TestDir::new();
    // Few customers: the busiest have more rows than the index keeps.
    for (dir, seed) in [("a", 5), ("b", 6)] {
        let out = txpipe()
            .args([
                "generate",
                "--count",
                "12000",
                "--customers",
                "30",
                "--days",
                "4",
            ])
            .args(["--seed", &seed.to_string(), "--out", &t.str(dir), "--quiet"])
            .output()
            .unwrap();
        assert_success(&out, &["generate"]);
    }
    let lake = t.str("lake");
    let ingest = |dir: &str| {
        let input = t.str(&format!("{dir}/transactions.jsonl"));
        run_ok(&[
            "ingest",
            "--lake",
            &lake,
            "--from-file",
            &input,
            "--batch-rows",
            "700",
            "--quiet",
        ]);
    };
    ingest("a");

    let (ctx, tables) = lake_session(&Lake::open(&lake).unwrap()).await.unwrap();
    // Without a column cache (rows read from their pages), with one too
    // small for the table (blocks evicted and read again), with a large one.
    let lookups: Vec<PointGet> = [0, 256 << 10, 64 << 20]
        .into_iter()
        .map(|bytes| PointGet::new(Arc::clone(&tables), bytes))
        .collect();
    let all_agree = |customers: Vec<String>| {
        let (ctx, lookups) = (&ctx, &lookups);
        async move {
            for pg in lookups {
                assert!(lookups_agree(ctx, pg, &customers).await > 20);
            }
        }
    };
    all_agree(some_customers(&ctx).await).await;

    // A second ingest: the next lookup sees its rows (the busiest customer's
    // newest transactions are now from file b).
    ingest("b");
    all_agree(some_customers(&ctx).await).await;

    // Compaction removes every file the index points into.
    run_ok(&["compact", "--lake", &lake]);
    all_agree(some_customers(&ctx).await).await;
}
