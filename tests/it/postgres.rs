//! `txpipe serve --pg-addr`: the lake over the Postgres wire protocol, checked
//! with the clients BI tools are built on — psql, psycopg 3, SQLAlchemy's
//! inspector, pandas, pgjdbc (Metabase, DBeaver, Tableau) — over real sockets
//! against the real binary.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use crate::external_readers::delta_python;
use crate::helpers::*;

/// A running `txpipe serve --pg-addr …`, killed on drop.
pub(crate) struct PgServe {
    child: Child,
    /// The dashboard's host:port.
    pub(crate) http: String,
    /// The Postgres endpoint's port.
    pub(crate) port: u16,
    pub(crate) stderr: std::path::PathBuf,
}

impl Drop for PgServe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn pg_serve(lake: &str, dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> PgServe {
    let stderr = dir.join(format!("serve-{}.err", uuid::Uuid::new_v4()));
    let default_pg: &[&str] = if extra.contains(&"--pg-addr") {
        &[]
    } else {
        &["--pg-addr", "127.0.0.1:0"]
    };
    let mut child = txpipe()
        .args(["serve", "--lake", lake, "--addr", "127.0.0.1:0"])
        .args(default_pg)
        .args(extra)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (mut first, mut second) = (String::new(), String::new());
    out.read_line(&mut first).unwrap();
    out.read_line(&mut second).unwrap();
    let http = first
        .strip_prefix("dashboard on http://")
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| {
            panic!(
                "unexpected output {first:?} (stderr: {})",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        })
        .to_string();
    let port = second
        .strip_prefix("postgres on ")
        .and_then(|s| s.split(' ').next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"));
    PgServe {
        child,
        http,
        port,
        stderr,
    }
}

/// A lake with generated data, seeded, ingested and through `txpipe run`.
pub(crate) fn built_lake(t: &TestDir, count: u64) -> String {
    generate(&t.path("in"), count, 0.01, 33);
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("in")]);
    let input = t.str("in/transactions.jsonl");
    run_ok(&["ingest", "--lake", &lake, "--from-file", &input, "--quiet"]);
    run_ok(&["run", "--lake", &lake, "--retries", "0"]);
    lake
}

fn psql(port: u16, sql: &str) -> Output {
    psql_session(port, &[sql])
}

fn psql_ok(port: u16, sql: &str) -> String {
    let out = psql(port, sql);
    assert!(
        out.status.success(),
        "psql -c {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn script(name: &str) -> String {
    format!("{}/../tests/it/pg/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs a script of tests/it/pg with the Delta readers' Python and returns
/// its JSON output.
pub(crate) fn py(name: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(delta_python())
        .arg(script(name))
        .args(args)
        .output()
        .expect("the Delta readers' python (tests/run.sh creates the venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{name} {}: {}", args.first().unwrap_or(&""), stdout.trim());
    serde_json::from_str(stdout.trim()).unwrap()
}

pub(crate) fn healthy(s: &PgServe) {
    let (code, body) = http_get(&s.http, "/healthz");
    assert_eq!(
        (code, body.trim()),
        (200, "ok"),
        "the dashboard in the same process"
    );
}

fn marts_in(lake: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(lake).join("marts"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("_delta_log").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_python_clients_and_pgjdbc_read_the_lake_exactly() {
    let t = TestDir::new();
    let lake = built_lake(&t, 5_000);
    let s = pg_serve(&lake, &t.path(""), &[], &[]);

    // psql: \dt lists the seed's tables and the marts, \d shows Postgres types.
    let dt = psql_ok(s.port, "\\dt");
    for name in [
        "fact_transaction",
        "dim_customer",
        "dim_merchant",
        "fx_rate",
        "quarantine",
    ]
    .iter()
    .chain(MARTS)
    {
        assert!(
            dt.contains(&format!("|{name}|")),
            "\\dt misses {name}:\n{dt}"
        );
    }
    let d = psql_ok(s.port, "\\d fact_transaction");
    for (col, ty) in [
        ("amount_usd", "numeric(18,2)"),
        ("transaction_ts", "timestamp with time zone"),
        ("fraud_reasons", "text[]"),
        ("is_fraud", "boolean"),
        ("event_date", "date"),
    ] {
        assert!(
            d.lines().any(|l| l.starts_with(&format!("{col}|{ty}|"))),
            "\\d fact_transaction: {col} should be {ty}:\n{d}"
        );
    }
    let rows = query_i64s(&lake, "SELECT count(*) FROM fact_transaction").await[0];
    let via_psql = psql_ok(s.port, "SELECT count(*) FROM fact_transaction");
    assert_eq!(via_psql.lines().nth(1), Some(rows.to_string().as_str()));
    let mart = psql_ok(s.port, "SELECT sum(txn_count) FROM daily_sales_summary");
    assert_eq!(
        mart.lines().nth(1),
        Some(rows.to_string().as_str()),
        "{mart}"
    );

    // The README's Metabase questions (examples/pg_questions.sql) all run.
    let questions = format!(
        "{}/../examples/pg_questions.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &s.port.to_string(),
            "-d",
            "txpipe",
            "-X",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-f", &questions])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        printed.matches(" rows)").count() + printed.matches(" row)").count(),
        8,
        "{printed}"
    );
    assert!(
        printed.contains("(30 rows)"),
        "one row per day of the daily question:\n{printed}"
    );

    // psycopg, SQLAlchemy, pandas, DuckDB.
    let marts = marts_in(&lake);
    let mut args = vec!["127.0.0.1".to_string(), s.port.to_string(), lake.clone()];
    args.extend(marts.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let seen = py("clients.py", &args);
    assert_eq!(seen["marts_equal"].as_object().unwrap().len(), marts.len());
    assert!(seen["days_equal_to_duckdb"].as_u64().unwrap() >= 1);
    assert!(seen["point_lookup_rows"].as_u64().unwrap() >= 1);

    // pgjdbc, as Metabase's sync and questions use it.
    let url = format!("jdbc:postgresql://127.0.0.1:{}/txpipe?user=txpipe", s.port);
    let out = Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(script("PgJdbcCheck.java"))
        .arg(&url)
        .output()
        .expect("java (default-jdk-headless) and pgjdbc (libpostgresql-jdbc-java)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("pgjdbc: {stdout}");
    assert!(
        out.status.success() && stdout.trim_end().ends_with("ok"),
        "pgjdbc: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("daily_sales_summary_count={rows}")),
        "{stdout}"
    );
    healthy(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_after_a_commit_sees_it_even_through_a_prepared_statement() {
    let t = TestDir::new();
    generate(&t.path("a"), 2_000, 0.0, 5);
    generate(&t.path("b"), 1_000, 0.0, 6);
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("a")]);
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &t.str("a/transactions.jsonl"),
        "--quiet",
    ]);
    run_ok(&["run", "--lake", &lake, "--retries", "0"]);
    let s = pg_serve(&lake, &t.path(""), &[], &[]);
    // The busiest customer of the first file (rows in the lake, read into
    // the lookups' cache before the commit; the second file, another seed,
    // has other customers) and a customer of the second file (no rows until
    // the commit below adds theirs).
    let customer_of = |line: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["customer_id"].as_str().unwrap().to_string()
    };
    let first = std::fs::read_to_string(t.path("a/transactions.jsonl")).unwrap();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for line in first.lines() {
        *counts.entry(customer_of(line)).or_default() += 1;
    }
    let (busiest, in_first) = counts.into_iter().max_by_key(|(_, n)| *n).unwrap();
    let second = std::fs::read_to_string(t.path("b/transactions.jsonl")).unwrap();
    let customer = customer_of(second.lines().next().unwrap());

    // One connection holds a statement prepared before the commit; the same
    // connection also sends a point lookup unprepared every time (parsed
    // again each time: its plan is kept from one Parse to the next) and the
    // same rows through DataFusion's scan (`AND TRUE`).
    let mut held = Command::new(delta_python())
        .arg("-c")
        .arg(
            r#"
import sys, decimal, psycopg
conn = psycopg.connect(host="127.0.0.1", port=int(sys.argv[1]), dbname="txpipe", user="txpipe", autocommit=True)
q = "SELECT count(*), (SELECT sum(txn_count) FROM daily_sales_summary) FROM fact_transaction WHERE amount_usd >= %s"
lookup = "SELECT transaction_id, transaction_ts FROM fact_transaction WHERE customer_id = %s{} ORDER BY transaction_ts DESC"
for line in sys.stdin:
    n, m = conn.execute(q, (decimal.Decimal("0.00"),), prepare=True).fetchone()
    out = [n, m]
    for customer in sys.argv[2:]:
        looked_up = conn.execute(lookup.format(""), (customer,), prepare=False).fetchall()
        scanned = conn.execute(lookup.format(" AND TRUE"), (customer,), prepare=False).fetchall()
        # Same rows, newest first (rows of equal time in either order).
        if sorted(looked_up) != sorted(scanned) or [r[1] for r in looked_up] != [r[1] for r in scanned]:
            out = ["lookup", looked_up, "differs from scan", scanned]
            break
        out.append(len(looked_up))
    print(*out, flush=True)
"#,
        )
        .arg(s.port.to_string())
        .arg(&busiest)
        .arg(&customer)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to = held.stdin.take().unwrap();
    let mut from = BufReader::new(held.stdout.take().unwrap());
    let mut lookups = Vec::new();
    let mut ask = || -> (i64, i64) {
        writeln!(to).unwrap();
        let mut line = String::new();
        from.read_line(&mut line).unwrap();
        let v: Vec<i64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap_or_else(|_| panic!("{line}")))
            .collect();
        assert_eq!(v.len(), 4, "{line:?}");
        lookups.push((v[2], v[3]));
        (v[0], v[1])
    };
    assert_eq!(ask(), (2_000, 2_000));
    assert_eq!(
        ask(),
        (2_000, 2_000),
        "the prepared path (second execution)"
    );

    // An ingest commits 1 000 more rows; the very next query sees them.
    run_ok(&[
        "ingest",
        "--lake",
        &lake,
        "--from-file",
        &t.str("b/transactions.jsonl"),
        "--quiet",
    ]);
    assert_eq!(
        ask(),
        (3_000, 2_000),
        "fact table: next commit visible, mart unchanged"
    );
    let via_psql = psql_ok(s.port, "SELECT count(*) FROM fact_transaction");
    assert_eq!(via_psql.lines().nth(1), Some("3000"));

    // A models run republishes the marts; the next query sees the new mart.
    // (`models run`: the second file's customers are not in the dims.)
    run_ok(&["models", "run", "--lake", &lake]);
    assert_eq!(ask(), (3_000, 3_000), "marts: the run's commit visible");
    drop(ask);
    // The lookup equalled the scan every time, and saw the commit at once.
    let in_second = second.lines().filter(|l| l.contains(&customer)).count() as i64;
    let in_first = in_first as i64;
    assert_eq!(lookups[0], (in_first, 0), "{lookups:?}");
    assert_eq!(lookups[1], lookups[0]);
    assert_eq!(lookups[2], (in_first, in_second), "{lookups:?}");
    assert_eq!(lookups[3], lookups[2]);
    drop(to);
    let _ = held.wait();
}

/// Every file under the lake with its size (what a write would change).
fn lake_files(lake: &str) -> Vec<(String, u64)> {
    fn walk(dir: &Path, out: &mut Vec<(String, u64)>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push((p.display().to_string(), e.metadata().unwrap().len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(lake), &mut out);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_and_ddl_are_refused_and_leave_the_lake_untouched() {
    let t = TestDir::new();
    let lake = built_lake(&t, 1_000);
    let before = lake_files(&lake);
    let s = pg_serve(&lake, &t.path(""), &[], &[]);
    newest_rows_are_exact(s.port);
    let seen = py("bounds.py", &["readonly", "127.0.0.1", &s.port.to_string()]);
    assert_eq!(seen["refused"].as_object().unwrap().len(), 9, "{seen}");
    let out = psql(s.port, "DROP TABLE fact_transaction");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot execute DROP TABLE in a read-only transaction"),
        "{err}"
    );
    assert!(!Path::new("/tmp/txpipe-pg-evil.csv").exists());
    assert_eq!(lake_files(&lake), before, "no lake file changed");
    healthy(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_cancelled_oversized_and_broken_queries_end_alone() {
    let t = TestDir::new();
    let lake = built_lake(&t, 2_000);
    let s = pg_serve(
        &lake,
        &t.path(""),
        &["--pg-statement-timeout", "3", "--pg-max-connections", "3"],
        &[],
    );
    let port = s.port.to_string();
    let timeout = py("bounds.py", &["timeout", "127.0.0.1", &port]);
    assert_eq!(timeout["sqlstate"], "57014");
    let secs = timeout["seconds"].as_f64().unwrap();
    assert!((2.5..60.0).contains(&secs), "timed out after {secs} s");
    healthy(&s);
    let cancel = py("bounds.py", &["cancel", "127.0.0.1", &port]);
    assert_eq!(cancel["sqlstate"], "57014");
    healthy(&s);
    let disconnect = py("bounds.py", &["disconnect", "127.0.0.1", &port]);
    assert!(disconnect["read_bytes_before_hangup"].as_u64().unwrap() >= 256 * 1024);
    py("bounds.py", &["malformed", "127.0.0.1", &port]);
    py("bounds.py", &["maxconn", "127.0.0.1", &port, "3"]);
    healthy(&s);
    drop(s);

    // One MiB per statement: an aggregate that cannot spill does not fit.
    let s = pg_serve(&lake, &t.path(""), &["--pg-memory-limit", "1"], &[]);
    let memory = py("bounds.py", &["memory", "127.0.0.1", &s.port.to_string()]);
    assert_eq!(memory["sqlstate"], "53200", "{memory}");
    let count = psql_ok(s.port, "SELECT count(*) FROM fact_transaction");
    assert!(count.lines().nth(1).unwrap().parse::<u64>().unwrap() > 1_900);

    // Statements reuse idle sessions: a SET in one (DataFusion's runtime or
    // SQL settings) must not reach the next, in the same connection or not.
    let out = psql_session(
        s.port,
        &[
            "SET datafusion.runtime.memory_limit = '64G'",
            "SET datafusion.sql_parser.enable_ident_normalization = false",
            "SELECT 1 AS Foo",
            "SELECT cardinality(array_agg(a.transaction_id)) \
             FROM fact_transaction a CROSS JOIN fact_transaction b",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("foo\n1\n"), "{stdout}");
    assert!(!out.status.success(), "the memory limit held: {stdout}");
    assert!(stderr.contains("Resources exhausted"), "{stderr}");
    let after = psql_ok(s.port, "SELECT 2 AS Bar");
    assert!(after.starts_with("bar\n2\n"), "{after}");
    // A client's own settings do reach the rows (and stay with its connection).
    let german = psql_session(
        s.port,
        &[
            "SET datestyle = 'German'",
            "SELECT CAST('2024-01-02' AS DATE) AS d",
        ],
    );
    let german = String::from_utf8_lossy(&german.stdout).to_string();
    assert!(german.contains("d\n02.01.2024\n"), "{german}");
    let iso = psql_ok(s.port, "SELECT CAST('2024-01-02' AS DATE) AS d");
    assert!(iso.starts_with("d\n2024-01-02\n"), "{iso}");
    healthy(&s);
}

/// `psql` running `statements` one after another in one session (each its
/// own simple query), stopping at the first error.
fn psql_session(port: u16, statements: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-d",
        "txpipe",
        "-U",
        "txpipe",
    ])
    .args(["-X", "-v", "ON_ERROR_STOP=1", "-A"])
    .env("PGCONNECT_TIMEOUT", "10");
    for sql in statements {
        cmd.args(["-c", sql]);
    }
    cmd.output()
        .expect("psql (Debian postgresql-client; tests/run.sh installs it)")
}

/// The newest rows of the busiest customer through `ORDER BY … LIMIT` (the
/// TopK over Parquet, our row encoder) equal all of its rows sorted here.
fn newest_rows_are_exact(port: u16) {
    let busiest = psql_ok(
        port,
        "SELECT customer_id FROM fact_transaction GROUP BY customer_id \
         ORDER BY count(*) DESC, customer_id LIMIT 1",
    );
    let customer = busiest.lines().nth(1).unwrap().to_string();
    let rows = |sql: &str| -> Vec<String> {
        psql_ok(port, sql)
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with('('))
            .map(str::to_string)
            .collect()
    };
    let mut all = rows(&format!(
        "SELECT transaction_ts, transaction_id FROM fact_transaction WHERE customer_id = '{customer}'"
    ));
    assert!(
        all.len() >= 3,
        "the busiest customer has {} rows",
        all.len()
    );
    all.sort_by(|a, b| b.cmp(a));
    let newest = rows(&format!(
        "SELECT transaction_ts, transaction_id FROM fact_transaction WHERE customer_id = '{customer}' \
         ORDER BY transaction_ts DESC, transaction_id DESC LIMIT 3"
    ));
    assert_eq!(newest, all[..3].to_vec());
}
