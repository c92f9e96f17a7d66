//! Shared test helpers: run the binary, query a lake.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use txpipe_core::arrow::array::{Array, AsArray, RecordBatch};
use txpipe_core::arrow::datatypes::Int64Type;
use txpipe_core::datafusion::prelude::SessionContext;
use txpipe_core::lake::Lake;

/// The `txpipe` binary built for these tests.
pub fn txpipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_txpipe"))
}

/// The shipped stateless rule set (`sql/rules_stateless.toml`): each of
/// high_amount, foreign and invalid_geo alone makes a row fraud.
pub fn stateless_rules() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../sql/rules_stateless.toml").to_string()
}

/// Runs `txpipe args…`, asserting success, and returns stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = output_within(txpipe().args(args), RUN_LIMIT);
    assert_success(&out, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Longest run of one command through [`output_within`] (a debug build on a
/// busy 2-core box): far above any run's time, far below CI's limit.
pub const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(900);

/// Runs `cmd` as [`Command::output`] does (stdin closed, output captured),
/// but kills it and panics with its output when it runs longer than `limit`:
/// a hang fails its own test instead of stalling the whole run.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    wait_within(child, limit, &format!("{cmd:?}"))
}

/// Waits for `child` (its output piped) as [`Child::wait_with_output`] does,
/// but kills it and panics with its output, naming it `what`, when it runs
/// longer than `limit`.
pub fn wait_within(child: Child, limit: std::time::Duration, what: &str) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for command"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let out = rx.recv().expect("the waiting thread ends");
            let out = out.expect("wait for command");
            panic!(
                "{what} did not end within {limit:?} (killed)\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Panics with the process output when it failed.
pub fn assert_success(out: &Output, args: &[&str]) {
    assert!(
        out.status.success(),
        "txpipe {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temp folder for one test.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn str(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }
}

/// `txpipe generate` into `dir`, returning the parsed summary line counts
/// (lines, valid, malformed).
pub fn generate(dir: &Path, count: u64, bad_rate: f64, seed: u64) -> (u64, u64, u64) {
    let out = run_ok(&[
        "generate",
        "--count",
        &count.to_string(),
        "--bad-rate",
        &bad_rate.to_string(),
        "--seed",
        &seed.to_string(),
        "--out",
        &dir.display().to_string(),
        "--quiet",
    ]);
    // "wrote N lines (V valid, B malformed, ..."
    let nums: Vec<u64> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(3)
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[1], nums[2])
}

/// Runs one SQL query over the lake and returns the batches.
pub async fn query(lake: &str, sql: &str) -> Vec<RecordBatch> {
    let lake = Lake::open(lake).unwrap();
    let ctx = SessionContext::new();
    txpipe_core::read::register_lake(&ctx, &lake).await.unwrap();
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap()
}

/// Runs a query returning one row of BIGINT columns.
pub async fn query_i64s(lake: &str, sql: &str) -> Vec<i64> {
    let batches = query(lake, sql).await;
    let b = &batches[0];
    (0..b.num_columns())
        .map(|i| {
            let c = txpipe_core::arrow::compute::cast(
                b.column(i),
                &txpipe_core::arrow::datatypes::DataType::Int64,
            )
            .unwrap();
            let c = c.as_primitive::<Int64Type>();
            if c.is_null(0) {
                0
            } else {
                c.value(0)
            }
        })
        .collect()
}

/// Parses every line of a JSON-lines file as a `serde_json::Value` (test oracle only).
pub fn read_jsonl(path: &Path) -> Vec<Option<serde_json::Value>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// The whole-history marts of the built-in project.
pub const MARTS: &[&str] = &[
    "daily_sales_summary",
    "customer_kpis",
    "merchant_analytics",
    "category_analytics",
    "country_analytics",
    "fraud_by_rule",
];

/// A running `txpipe serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `txpipe serve --lake LAKE --addr 127.0.0.1:0 EXTRA…` and reads its address.
pub fn serve(lake: &str, extra: &[&str]) -> Server {
    let mut child = txpipe()
        .args(["serve", "--lake", lake, "--addr", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("dashboard on http://")
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Server { child, addr }
}

/// `GET path` over plain HTTP/1.1: status code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp[9..12].parse().unwrap();
    (code, resp.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// A random generator for kill schedules, seeded from the clock (the seed is
/// printed, so a failing schedule can be read back).
pub fn kill_schedule_rng() -> txpipe_core::generate::Rng {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    eprintln!("kill schedule seed: {seed}");
    txpipe_core::generate::Rng::new(seed)
}

/// Parquet files under the fact and quarantine folders of a local lake that
/// no Delta snapshot references (lake-relative paths).
pub async fn orphan_files(lake: &str) -> Vec<String> {
    let l = Lake::open(lake).unwrap();
    let mut committed = std::collections::BTreeSet::new();
    for table in ["fact_transaction", "quarantine"] {
        committed.extend(
            txpipe_core::sink::delta::committed_files(&l, table)
                .await
                .unwrap(),
        );
    }
    let root = std::path::Path::new(lake);
    ["fact_transaction", "quarantine"]
        .iter()
        .flat_map(|t| crate::file_to_lake::walk(&root.join(t)))
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .filter(|p| p.ends_with(".parquet") && !p.contains("_delta_log"))
        .filter(|p| !committed.contains(p))
        .collect()
}

/// The one data file of a published mart (`LAKE/marts/<model>/part-….parquet`),
/// if the mart exists; panics when the folder holds more than one.
pub fn mart_file(lake: &Path, model: &str) -> Option<PathBuf> {
    let dir = lake.join("marts").join(model);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert!(
        files.len() <= 1,
        "{} holds several files: {files:?}",
        dir.display()
    );
    files.into_iter().next()
}

/// Every Parquet file of a published mart, also inside the `event_date=…/`
/// folders of an incremental mart (not the Delta log).
pub fn mart_files(lake: &Path, model: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.ends_with("_delta_log") {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&lake.join("marts").join(model), &mut out);
    out
}

/// Copies the workspace's `sql/` project to `dir` with `sources` appended to
/// its tests.toml.
pub fn project_with_sources(dir: &Path, sources: &str) {
    let sql = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql");
    for sub in ["models", "tests"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(sql.join(sub)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(sub).join(p.file_name().unwrap())).unwrap();
        }
    }
    let tests = std::fs::read_to_string(sql.join("tests.toml")).unwrap();
    std::fs::write(dir.join("tests.toml"), tests + sources).unwrap();
}
