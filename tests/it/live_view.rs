//! The live analyst view in headless Chromium: a flagged transaction
//! committed after the page opened appears on it without a reload, before
//! (and without) any daily job; the customer's transactions from the lake.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::dashboard::{chromium, chromium_args};
use crate::helpers::*;
use crate::kafka_faults::{free_port, wait_for};

struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The title of the page the browser shows (from DevTools' `/json/list`).
fn page_title(devtools: &str) -> Option<String> {
    let body = devtools_get(devtools, "/json/list")?;
    let pages: serde_json::Value = serde_json::from_str(&body).ok()?;
    pages
        .as_array()?
        .iter()
        .find(|p| p["type"] == "page")
        .and_then(|p| p["title"].as_str().map(String::from))
}

/// `GET path` from DevTools' HTTP endpoint, which may keep the connection
/// open: reads the headers, then Content-Length bytes (2 s timeout).
fn devtools_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(usize::MAX);
            if body.len() >= len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// First data row of a seed CSV: its id and name columns.
fn first_row(csv: &std::path::Path) -> (String, String) {
    let text = std::fs::read_to_string(csv).unwrap();
    let row = text.lines().nth(1).unwrap();
    let mut cols = row.split(',');
    (
        cols.next().unwrap().to_string(),
        cols.next().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flagged_transaction_appears_on_the_open_page_without_a_reload() {
    let t = TestDir::new();
    generate(&t.path("in"), 3_000, 0.0, 31);
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("in")]);
    let input = t.str("in/transactions.jsonl");
    run_ok(&["ingest", "--lake", &lake, "--from-file", &input, "--quiet"]);
    // No `txpipe run`: the live view reads the fact table itself.
    let server = serve(&lake, &[]);
    let port = free_port();
    let devtools = format!("127.0.0.1:{port}");
    let mut args = chromium_args(&t.path("profile"));
    args.retain(|a| !a.starts_with("--virtual-time-budget"));
    let _browser = Browser(
        Command::new(chromium())
            .args(args)
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("http://{}/", server.addr))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut opened = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            opened = page_title(&devtools).filter(|t| t.contains(" alerts · newest "));
            opened.is_some()
        }),
        "the page did not poll its alerts: {:?}",
        page_title(&devtools)
    );
    let opened = opened.unwrap();

    // A transaction flagged on arrival (about 6 500 USD: high_amount).
    let (customer, customer_name) = first_row(&t.path("in/dim_customer.csv"));
    let (merchant, _) = first_row(&t.path("in/dim_merchant.csv"));
    let tx = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let line = format!(
        r#"{{"transaction_id":"{tx}","transaction_ts":"{now}","customer_id":"{customer}","merchant_id":"{merchant}","amount":9000000,"currency":"KRW","latitude":37.56,"longitude":126.97,"device_id":"dev-live","payment_method":"credit_card","is_foreign":false}}"#
    );
    let new = t.path("new.jsonl");
    std::fs::write(&new, format!("{line}\n")).unwrap();
    let new = new.display().to_string();
    let out = run_ok(&["ingest", "--lake", &lake, "--from-file", &new]);
    assert!(out.contains("fraud flagged 1 rows"), "{out}");

    let mut now_title = String::new();
    let shown = wait_for(Duration::from_secs(10), || {
        now_title = page_title(&devtools).unwrap_or_default();
        now_title.contains(&format!("newest {tx}"))
    });
    assert!(
        shown,
        "not on the page 10 s after its commit: was {opened:?}, now {now_title:?}"
    );

    // The row as the analyst sees it (a fresh load: same lake, same row).
    let out = Command::new(chromium())
        .args(chromium_args(&t.path("profile2")))
        .arg("--dump-dom")
        .arg(format!("http://{}/#customer={customer}", server.addr))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let row_at = dom
        .find(&format!("data-tx=\"{tx}\""))
        .unwrap_or_else(|| panic!("no row for {tx}:\n{dom}"));
    let row = &dom[row_at..row_at + dom[row_at..].find("</tr>").unwrap()];
    assert!(row.contains("high_amount"), "{row}");
    assert!(
        row.contains(&customer_name),
        "customer name from dim_customer: {row}"
    );
    assert!(
        row.contains(&format!("#customer={customer}")),
        "click-through: {row}"
    );
    // The click-through panel (opened by the URL's #customer=…).
    assert!(dom.contains("newest 100 transactions"), "{dom}");
    assert!(dom.contains("dev-live") || dom.contains("6"), "{dom}");

    let (code, body) = http_get(
        &server.addr,
        &format!("/api/customers/{customer}/transactions"),
    );
    assert_eq!(code, 200, "{body}");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rows = rows.as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 100);
    assert!(rows.iter().all(|r| r["customer_id"] == customer.as_str()));
    assert!(rows.iter().any(|r| r["transaction_id"] == tx.as_str()));
    let ts: Vec<&str> = rows
        .iter()
        .map(|r| r["transaction_ts"].as_str().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first: {ts:?}");

    // /api/alerts: flagged rows only, a cursor that moves, validated input.
    let (code, body) = http_get(&server.addr, "/api/alerts?limit=200");
    assert_eq!(code, 200);
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    let alerts = a["alerts"].as_array().unwrap();
    assert_eq!(
        alerts[0]["transaction_id"],
        tx.as_str(),
        "newest commit first"
    );
    assert!(alerts.iter().all(|r| r["is_fraud"] == true));
    let flagged = query_i64s(
        &lake,
        "SELECT COUNT(*) FROM fact_transaction WHERE is_fraud",
    )
    .await;
    assert_eq!(alerts.len() as i64, flagged[0].min(200));
    let cursor = a["cursor"].as_i64().unwrap();
    let (_, body) = http_get(&server.addr, &format!("/api/alerts?after={cursor}"));
    let later: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(later["alerts"].as_array().unwrap().len(), 0, "{later}");
    assert_eq!(http_get(&server.addr, "/api/alerts?after=x").0, 400);
    assert_eq!(
        http_get(&server.addr, "/api/customers/a'b/transactions").0,
        400
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live_view.png");
    let out = Command::new(chromium())
        .args(chromium_args(&t.path("profile3")))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("http://{}/", server.addr))
        .output()
        .unwrap();
    assert!(out.status.success());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        shot.display()
    );
}
