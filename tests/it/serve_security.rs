//! `txpipe serve` hardening: loopback-only by default, bearer token, secret
//! hygiene, query validation and request size limits — over real HTTP against
//! the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::helpers::*;

const TOKEN: &str = "s3cr3t-TOKEN-xyz";

/// A lake with generated data, seeded, ingested and through `txpipe run`, so
/// every panel has data.
fn built_lake(t: &TestDir) -> String {
    run_ok(&[
        "generate",
        "--count",
        "1000",
        "--merchants",
        "20",
        "--customers",
        "50",
        "--seed",
        "9",
        "--bad-rate",
        "0.01",
        "--out",
        &t.str("in"),
        "--quiet",
    ]);
    let lake = t.str("lake");
    run_ok(&["seed", "--lake", &lake, "--dir", &t.str("in")]);
    let input = t.str("in/transactions.jsonl");
    run_ok(&["ingest", "--lake", &lake, "--from-file", &input, "--quiet"]);
    run_ok(&["run", "--lake", &lake, "--retries", "0"]);
    lake
}

/// A running `txpipe serve` whose whole stdout and stderr are kept; killed on drop.
struct Running {
    child: Child,
    /// Address to connect to (an unspecified bind address is replaced by 127.0.0.1).
    addr: String,
    out: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops the server and returns everything it printed (stdout + stderr).
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let s = self.out.lock().unwrap().clone();
        s
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(r: impl Read + Send + 'static, out: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            out.lock().unwrap().push_str(&line);
            line.clear();
        }
    })
}

/// `txpipe serve --lake LAKE ARGS…` with `envs`, waiting for its address line.
fn start(lake: &str, args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut child = txpipe()
        .args(["serve", "--lake", lake])
        .args(args)
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(String::new()));
    let err_reader = collect(child.stderr.take().unwrap(), out.clone());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    out.lock().unwrap().push_str(&line);
    let addr = match line
        .strip_prefix("dashboard on http://")
        .and_then(|s| s.split('/').next())
    {
        Some(a) => a.replace("0.0.0.0:", "127.0.0.1:"),
        None => {
            let _ = child.kill();
            let _ = err_reader.join();
            panic!(
                "unexpected first line {line:?}; output:\n{}",
                out.lock().unwrap()
            );
        }
    };
    let out_reader = collect(stdout.into_inner(), out.clone());
    Running {
        child,
        addr,
        out,
        readers: vec![err_reader, out_reader],
    }
}

/// `txpipe serve …` that is expected to exit at once: (success, stdout + stderr).
fn serve_exits(lake: &str, args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd: Command = txpipe();
    cmd.args(["serve", "--lake", lake]).args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A parsed HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    /// Header lines, lower-cased names: "name: value".
    headers: Vec<String>,
    body: String,
    /// The whole response as received.
    raw: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.headers.iter().find_map(|h| h.strip_prefix(&prefix))
    }
}

/// Sends `head` (request line and headers, without the blank line), then
/// `body`, and reads the response; `Err` when the server closed or reset the
/// connection without an answer. Never waits more than 20 s.
fn send(addr: &str, head: &str, body: &[u8]) -> Result<Resp, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    // The server may answer and close before reading the body: ignore write errors.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let r = s.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(format!("no response ({r:?})"));
    }
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad response {raw:?}"))?;
    let headers = lines
        .map(|l| match l.split_once(':') {
            Some((k, v)) => format!("{}: {}", k.to_ascii_lowercase(), v.trim()),
            None => l.to_string(),
        })
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_string(),
        raw: raw.clone(),
    })
}

/// `GET path` with extra header lines (each without CRLF).
fn get(addr: &str, path: &str, headers: &[String]) -> Resp {
    let mut head = format!("GET {path} HTTP/1.1");
    for h in headers {
        head.push_str("\r\n");
        head.push_str(h);
    }
    send(addr, &head, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn bearer(t: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {t}")]
}

#[test]
fn non_loopback_address_needs_a_token_or_insecure_public() {
    let t = TestDir::new();
    let lake = t.str("lake");
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.10:8080"] {
        let (ok, out) = serve_exits(&lake, &["--addr", addr], &[]);
        assert!(!ok, "serve --addr {addr} started:\n{out}");
        for needle in [addr, "--token", "--insecure-public", "not a loopback"] {
            assert!(
                out.contains(needle),
                "{needle:?} missing for {addr}:\n{out}"
            );
        }
    }
    // Names are resolved: localhost is loopback.
    let mut s = start(&lake, &["--addr", "localhost:0"], &[]);
    assert!(s.alive());
    assert_eq!(get(&s.addr, "/healthz", &[]).status, 200);
    drop(s);

    // --insecure-public starts, warns, and serves without a token.
    let s = start(&lake, &["--addr", "0.0.0.0:0", "--insecure-public"], &[]);
    let r = get(&s.addr, "/healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");
    assert_eq!(get(&s.addr, "/", &[]).status, 200);
    std::thread::sleep(Duration::from_millis(200));
    let out = s.stop();
    assert!(
        out.contains("WARNING") && out.contains("without authentication"),
        "no warning:\n{out}"
    );

    // A token makes a public address acceptable (from the flag or the environment).
    let s = start(&lake, &["--addr", "0.0.0.0:0", "--token", TOKEN], &[]);
    assert_eq!(get(&s.addr, "/healthz", &[]).status, 200);
    assert_eq!(get(&s.addr, "/", &[]).status, 401);
    drop(s);
    let s = start(
        &lake,
        &["--addr", "0.0.0.0:0"],
        &[("TXPIPE_SERVE_TOKEN", TOKEN)],
    );
    assert_eq!(get(&s.addr, "/metrics", &[]).status, 401);
    assert_eq!(get(&s.addr, "/metrics", &bearer(TOKEN)).status, 200);
}

#[test]
fn token_guards_every_route_but_healthz() {
    let t = TestDir::new();
    let lake = built_lake(&t);
    let s = start(&lake, &["--addr", "127.0.0.1:0", "--token", TOKEN], &[]);
    let a = &s.addr;

    let r = get(a, "/healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"), "{r:?}");

    let paths = [
        "/",
        "/api/daily",
        "/api/fraud_by_rule",
        "/api/categories",
        "/api/countries",
        "/api/top_merchants?by=fraud_rate",
        "/api/risky_customers",
        "/api/ingest",
        "/api/runs/latest",
        "/metrics",
    ];
    let wrong = [
        vec![],
        bearer("s3cr3t-TOKEN-xyZ"),
        bearer("s3cr3t-TOKEN-xy"),
        bearer(&format!("{TOKEN}x")),
        vec![format!("Authorization: Basic {TOKEN}")],
        vec![format!("Cookie: txpipe_session={TOKEN}")],
    ];
    for p in paths {
        for h in &wrong {
            let r = get(a, p, h);
            assert_eq!(r.status, 401, "{p} with {h:?}: {r:?}");
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{p}: {r:?}"
            );
            assert!(r.body.contains("Authorization: Bearer"), "{p}: {r:?}");
        }
        let r = get(a, p, &bearer(TOKEN));
        assert_eq!(r.status, 200, "{p} with the token: {r:?}");
        let r = get(a, p, &[format!("authorization: bearer {TOKEN}")]);
        assert_eq!(r.status, 200, "{p} lower-case scheme: {r:?}");
    }
    // Unknown paths need the token too (no probing).
    assert_eq!(get(a, "/nope", &[]).status, 401);
    assert_eq!(get(a, "/nope", &bearer(TOKEN)).status, 404);

    // Browser flow: /?token= sets a session cookie (not the token) and redirects.
    assert_eq!(get(a, "/?token=wrong-token-0123456", &[]).status, 401);
    assert_eq!(
        get(a, &format!("/api/daily?token={TOKEN}"), &[]).status,
        401
    );
    let r = get(a, &format!("/?token={TOKEN}"), &[]);
    assert_eq!(r.status, 303, "{r:?}");
    assert_eq!(r.header("location"), Some("/"));
    let cookie = r
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_string();
    for p in paths {
        let r = get(a, p, &[format!("Cookie: other=1; {pair}")]);
        assert_eq!(r.status, 200, "{p} with the cookie: {r:?}");
    }
    let r = get(a, "/api/daily", &[format!("Cookie: {pair}x")]);
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn the_token_is_never_printed_or_served() {
    let t = TestDir::new();
    let lake = built_lake(&t);
    let env = [("TXPIPE_SERVE_TOKEN", TOKEN)];

    // --help documents the variable, never its value.
    let help = txpipe()
        .args(["serve", "--help"])
        .env("TXPIPE_SERVE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(help.status.success());
    let help =
        String::from_utf8_lossy(&help.stdout).into_owned() + &String::from_utf8_lossy(&help.stderr);
    assert!(
        help.contains("TXPIPE_SERVE_TOKEN") && help.contains("--insecure-public"),
        "{help}"
    );
    assert!(!help.contains(TOKEN), "{help}");

    // Errors do not echo a token either: invalid ones, or valid ones with another failure.
    for (args, envs) in [
        (vec!["--token", "s3cr3t TOKEN xyz with spaces"], vec![]),
        (vec!["--token", "s3cr3t"], vec![]),
        (vec![], vec![("TXPIPE_SERVE_TOKEN", "s3cr3t")]),
        (vec!["--addr", "256.0.0.1:80"], env.to_vec()),
        (vec!["--addr", "127.0.0.1:80:80", "--token", TOKEN], vec![]),
    ] {
        let (ok, out) = serve_exits(&lake, &args, &envs);
        assert!(!ok, "{args:?} started:\n{out}");
        assert!(!out.contains("s3cr3t"), "{args:?}:\n{out}");
    }

    // Token from the environment: every response, headers included, is clean.
    let s = start(&lake, &["--addr", "127.0.0.1:0"], &env);
    let auth = bearer(TOKEN);
    let mut responses = Vec::new();
    for p in [
        "/healthz",
        "/",
        "/api/daily",
        "/api/fraud_by_rule",
        "/api/categories",
        "/api/countries",
        "/api/top_merchants",
        "/api/top_merchants?by=bogus",
        "/api/risky_customers?limit=3",
        "/api/ingest",
        "/api/runs/latest",
        "/metrics",
        "/nope",
    ] {
        responses.push(get(&s.addr, p, &auth));
        responses.push(get(&s.addr, p, &bearer("s3cr3t-TOKEN-wrong")));
    }
    responses.push(get(&s.addr, &format!("/?token={TOKEN}"), &[]));
    assert!(responses.iter().any(|r| r.status == 200));
    for r in &responses {
        assert!(!r.raw.contains(TOKEN), "token in a response: {r:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = s.stop();
    assert!(out.contains("dashboard on http://"), "{out}");
    assert!(!out.contains("s3cr3t"), "token in serve's output:\n{out}");
}

#[test]
fn bad_query_parameters_are_400_naming_the_parameter() {
    let t = TestDir::new();
    let lake = built_lake(&t);
    let s = start(&lake, &[], &[]);
    let a = &s.addr;
    let cases = [
        ("/api/top_merchants?by=bogus", "by", "fraud_rate"),
        (
            "/api/top_merchants?by=revenue%20DESC;%20DROP%20TABLE%20x",
            "by",
            "revenue",
        ),
        (
            "/api/top_merchants?by=revenue&by=fraud_rate",
            "by",
            "more than once",
        ),
        ("/api/top_merchants?limit=abc", "limit", "1 to 100"),
        ("/api/top_merchants?limit=100000", "limit", "1 to 100"),
        ("/api/top_merchants?limit=0", "limit", "1 to 100"),
        ("/api/top_merchants?limit=-5", "limit", "1 to 100"),
        ("/api/top_merchants?sort=x", "sort", "by, limit"),
        ("/api/risky_customers?limit=1e3", "limit", "1 to 100"),
        ("/api/risky_customers?by=revenue", "by", "limit"),
        (
            "/api/daily?day=2026-01-01",
            "day",
            "from, to, country, category",
        ),
        ("/api/daily?from=2026-13-01", "from", "YYYY-MM-DD"),
        ("/api/countries?country=us", "country", "upper-case"),
        ("/api/ingest?x", "x", "no query parameters"),
    ];
    for (path, param, accepted) in cases {
        let r = get(a, path, &[]);
        assert_eq!(r.status, 400, "{path}: {r:?}");
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {r:?}"));
        assert_eq!(v["parameter"], param, "{path}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(param), "{path}: {v}");
        assert!(
            msg.contains(accepted) || v["accepted"].as_str().unwrap_or("").contains(accepted),
            "{path}: {v}"
        );
    }
    // Valid values still work.
    for (path, rows) in [
        ("/api/top_merchants?by=revenue", 10),
        ("/api/top_merchants?by=fraud_rate&limit=3", 3),
        ("/api/top_merchants", 10),
        ("/api/risky_customers?limit=2", 2),
    ] {
        let r = get(a, path, &[]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v.as_array().map(Vec::len), Some(rows), "{path}: {v}");
    }
}

#[test]
fn oversized_headers_and_bodies_are_refused_and_the_server_lives() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let mut s = start(&lake, &["--token", TOKEN], &[]);
    let a = s.addr.clone();
    let auth = format!("Authorization: Bearer {TOKEN}");

    // A 100 KB header: 431 (or the connection closed), never a hang.
    let big = format!("X-Big: {}", "a".repeat(100 * 1024));
    match send(&a, &format!("GET /healthz HTTP/1.1\r\n{big}"), b"") {
        Ok(r) => assert_eq!(r.status, 431, "{:?}", r.headers),
        Err(e) => eprintln!("100 KB header: connection closed ({e})"),
    }
    // Many headers adding up to 100 KB, authenticated.
    let many: Vec<String> = (0..90)
        .map(|i| format!("X-H{i}: {}", "b".repeat(1100)))
        .collect();
    match send(
        &a,
        &format!("GET /metrics HTTP/1.1\r\n{auth}\r\n{}", many.join("\r\n")),
        b"",
    ) {
        Ok(r) => assert_eq!(r.status, 431, "{:?}", r.headers),
        Err(e) => eprintln!("many headers: connection closed ({e})"),
    }

    // A 10 MB body, declared: 413 before it is read (and with any method).
    let body = vec![b'x'; 10 * 1024 * 1024];
    for method in ["POST", "GET", "PUT"] {
        for path in ["/", "/api/daily", "/healthz"] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\n{auth}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}",
                body.len()
            );
            // Headers only: the answer must not wait for the body.
            let r = send(&a, &head, b"").unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            assert_eq!(r.status, 413, "{method} {path}: {r:?}");
            // With the body: refused, or the connection cut.
            match send(&a, &head, &body) {
                Ok(r) => assert_eq!(r.status, 413, "{method} {path}: {r:?}"),
                Err(e) => eprintln!("{method} {path} 10 MB: connection closed ({e})"),
            }
        }
    }
    // A chunked 10 MB body on a GET route is never buffered.
    let mut chunked = Vec::new();
    for _ in 0..160 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 * 1024).as_bytes());
        chunked.extend_from_slice(&body[..64 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!("POST /api/daily HTTP/1.1\r\n{auth}\r\nTransfer-Encoding: chunked");
    match send(&a, &head, &chunked) {
        Ok(r) => assert!(matches!(r.status, 405 | 413), "{r:?}"),
        Err(e) => eprintln!("chunked 10 MB: connection closed ({e})"),
    }

    assert!(s.alive(), "the server died");
    let r = get(&a, "/healthz", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    assert_eq!(get(&a, "/metrics", &[auth]).status, 200);
}

#[test]
fn without_a_token_only_loopback_host_names_are_answered() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let s = start(&lake, &[], &[]);
    let a = &s.addr;
    // DNS rebinding: the browser sends the attacker's name in Host.
    let mut sock = TcpStream::connect(a).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        sock,
        "GET /metrics HTTP/1.1\r\nHost: rebind.attacker.example:8080\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    sock.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 403"), "{resp}");
    assert_eq!(get(a, "/metrics", &[]).status, 200);
    let r = get(a, "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}
