//! `txpipe serve`: the dashboard rendered by headless Chromium, the JSON panels
//! and the Prometheus metrics, over real HTTP.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::*;

pub(crate) fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("Debian's chromium is needed (tests/run.sh installs it)")
}

pub(crate) fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=8000",
        "--window-size=1400,2200",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// A lake with generated data, seeded, ingested and through `txpipe run`.
fn built_lake(t: &TestDir) -> String {
    generate(&t.path("in"), 5_000, 0.01, 21);
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("in")]);
    let input = t.str("in/transactions.jsonl");
    run_ok(&["ingest", "--lake", &lake, "--from-file", &input, "--quiet"]);
    run_ok(&["run", "--lake", &lake, "--retries", "0"]);
    lake
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_renders_every_panel_with_data_in_chromium() {
    let t = TestDir::new();
    let lake = built_lake(&t);
    let server = serve(&lake, &[]);
    let url = format!("http://{}/", server.addr);
    let out = Command::new(chromium())
        .args(chromium_args(&t.path("profile")))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "page script did not finish:\n{dom}\n{log}"
    );
    // Console errors (uncaught exceptions, failed requests) are logged as CONSOLE lines.
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console output: {console:#?}");
    assert!(
        !dom.contains("class=\"empty\""),
        "a panel has no data:\n{dom}"
    );
    // Charts as charts: two line charts of two series, bar charts for rules,
    // categories, countries and top merchants, and the risky customers table.
    assert_eq!(dom.matches("class=\"series\"").count(), 4, "{dom}");
    assert!(dom.matches("class=\"bar\"").count() >= 20, "{dom}");
    let (_, rules) = http_get(&server.addr, "/api/fraud_by_rule");
    let rules: serde_json::Value = serde_json::from_str(&rules).unwrap();
    assert!(!rules.as_array().unwrap().is_empty());
    for r in rules.as_array().unwrap() {
        let rule = r["rule"].as_str().unwrap();
        assert!(
            dom.contains(&format!(">{rule}<")),
            "fraud by rule shows {rule}"
        );
    }
    assert!(dom.contains("<tbody><tr>"), "risky customers table");
    // The quality panel: `seed` loaded the generator's fraud_labels.csv.
    assert!(
        dom.contains("precision (is_fraud)"),
        "quality panel:\n{dom}"
    );
    let (code, q) = http_get(&server.addr, "/api/quality");
    assert_eq!(code, 200);
    let q: serde_json::Value = serde_json::from_str(&q).unwrap();
    let fraud = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE is_fraud",
    )
    .await;
    assert_eq!(q["is_fraud"]["flagged"].as_i64(), Some(fraud[0]));
    assert!(q["labelled_rows"].as_i64().unwrap() > 0, "{q}");
    assert!(
        dom.contains(">compromised_card<") || dom.contains(">card_testing<"),
        "scenarios table"
    );
    // And a screenshot to look at.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let out = Command::new(chromium())
        .args(chromium_args(&t.path("profile2")))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot at {}",
        shot.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn api_and_metrics_agree_with_the_lake() {
    let t = TestDir::new();
    let lake = built_lake(&t);
    let server = serve(&lake, &[]);
    let (code, body) = http_get(&server.addr, "/api/daily");
    assert_eq!(code, 200);
    let daily: serde_json::Value = serde_json::from_str(&body).unwrap();
    let txns: i64 = daily
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["txn_count"].as_i64().unwrap())
        .sum();
    let landed = query_i64s(
        &lake,
        "SELECT COUNT(DISTINCT transaction_id) FROM fact_transaction",
    )
    .await[0];
    assert_eq!(txns, landed);

    let (code, text) = http_get(&server.addr, "/metrics");
    assert_eq!(code, 200);
    let metric = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
            .rsplit_once(' ')
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let counts = query_i64s(
        &lake,
        "SELECT (SELECT COUNT(*) FROM fact_transaction) AS landed, \
         (SELECT COUNT(*) FROM quarantine) AS quarantined, \
         (SELECT COUNT(*) FROM fact_transaction WHERE is_fraud) AS fraud",
    )
    .await;
    assert_eq!(metric("txpipe_lake_rows_landed_total"), counts[0] as f64);
    assert_eq!(
        metric("txpipe_lake_rows_quarantined_total"),
        counts[1] as f64
    );
    assert_eq!(metric("txpipe_lake_fraud_rows_total"), counts[2] as f64);
    assert_eq!(metric("txpipe_run_success"), 1.0);
    assert_eq!(
        metric("txpipe_lake_batch_latency_seconds_count"),
        metric("txpipe_lake_commits_total"),
        "every commit records its batch latency"
    );
    assert!(text.contains("txpipe_model_duration_seconds{model=\"daily_sales_summary\"}"));
    assert!(text.contains(
        "txpipe_test_failures{test=\"unique_stg_transactions_transaction_id\",status=\"pass\"} 0"
    ));
    // Every sample line parses as `series value`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = l.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "bad sample {l}");
    }
    // A mart that is not built yet is a clear 404.
    let empty = TestDir::new();
    std::fs::create_dir_all(empty.path("lake")).unwrap();
    let server2 = serve(&empty.str("lake"), &[]);
    let (code, body) = http_get(&server2.addr, "/api/categories");
    assert_eq!(code, 404);
    assert!(body.contains("has not been built yet"), "{body}");
}

/// The x labels of the line charts in a dumped DOM: (x, text, width).
fn x_labels(dom: &str) -> Vec<(f64, String, f64)> {
    let mut out = Vec::new();
    for part in dom.split("<text ").skip(1) {
        if !part.contains("class=\"xlabel\"") {
            continue;
        }
        let attr = |name: &str| -> Option<String> {
            let at = part.find(&format!(" {name}=\""))? + name.len() + 3;
            Some(part[at..at + part[at..].find('"')?].to_string())
        };
        let text = part[part.find('>').unwrap() + 1..part.find("</text>").unwrap()].to_string();
        let x = attr("x").or_else(|| {
            part.strip_prefix("x=\"")
                .map(|r| r[..r.find('"').unwrap()].to_string())
        });
        out.push((
            x.unwrap().parse().unwrap(),
            text,
            attr("data-width").unwrap().parse().unwrap(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_panels_are_kept_in_the_url_and_labels_do_not_overlap() {
    let t = TestDir::new();
    let lake = built_lake(&t);
    let server = serve(&lake, &[]);
    let days: Vec<String> = query(
        &lake,
        "SELECT DISTINCT CAST(event_date AS VARCHAR) FROM fact_transaction ORDER BY 1",
    )
    .await
    .iter()
    .flat_map(|b| {
        use txpipe_core::arrow::array::AsArray;
        let c = txpipe_core::arrow::compute::cast(
            b.column(0),
            &txpipe_core::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let c = c.as_string::<i32>();
        (0..b.num_rows())
            .map(|i| c.value(i).to_string())
            .collect::<Vec<_>>()
    })
    .collect();
    assert!(days.len() >= 10, "{days:?}");
    let (from, to) = (&days[2], &days[6]);

    // The API: a date range and a merchant country, checked against the lake.
    let (code, body) = http_get(
        &server.addr,
        &format!("/api/daily?from={from}&to={to}&country=US"),
    );
    assert_eq!(code, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let got: Vec<(String, i64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["day"].as_str().unwrap().to_string(),
                r["txn_count"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), 5, "{got:?}");
    let want = query_i64s(
        &lake,
        &format!(
            "SELECT COUNT(*) FROM fact_transaction f JOIN dim_merchant m USING (merchant_id) \
             WHERE m.country = 'US' AND f.event_date BETWEEN DATE '{from}' AND DATE '{to}'"
        ),
    )
    .await;
    assert_eq!(vec![got.iter().map(|g| g.1).sum::<i64>()], want);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        days[2..=6].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let (_, body) = http_get(&server.addr, "/api/countries?country=US");
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c[0]["name"], "US");
    for bad in [
        "from=2026-99-01",
        "country=us",
        "category=x'y",
        "from=2026-11-05&to=2026-11-01",
    ] {
        assert_eq!(
            http_get(&server.addr, &format!("/api/daily?{bad}")).0,
            400,
            "{bad}"
        );
    }

    // The page: the URL's filters fill the form and narrow the daily chart.
    let url = format!("http://{}/?from={from}&to={to}&country=US", server.addr);
    let out = Command::new(chromium())
        .args(chromium_args(&t.path("profile")))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("data-loaded=\"true\""), "{dom}");
    let labels = x_labels(&dom);
    assert!(!labels.is_empty(), "{dom}");
    for (_, l, _) in &labels {
        assert!(
            l.as_str() >= from.as_str() && l.as_str() <= to.as_str(),
            "label {l} outside the range"
        );
    }

    // Unfiltered: a month of days, labels spaced by at least their width.
    let out = Command::new(chromium())
        .args(chromium_args(&t.path("profile2")))
        .arg("--dump-dom")
        .arg(format!("http://{}/", server.addr))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let labels = x_labels(&dom);
    assert!(labels.len() >= 4, "{labels:?}");
    assert!(
        labels.iter().any(|(_, l, _)| l == days.last().unwrap()),
        "last day labelled"
    );
    for chart in labels.chunks(labels.len() / 2) {
        for w in chart.windows(2) {
            assert!(
                w[1].0 - w[0].0 >= w[0].2,
                "labels {} and {} overlap ({} px apart, {} px wide)",
                w[0].1,
                w[1].1,
                w[1].0 - w[0].0,
                w[0].2
            );
        }
    }
}
