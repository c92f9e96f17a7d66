//! Kafka over TLS for real, and secrets that never leak.
//!
//! Tansu 0.6 parses `--cert`/`--key` but serves plaintext only, so the test puts
//! a TLS terminator in front of its own Tansu (a small Python asyncio proxy with
//! a certificate made by `openssl req`) and has Tansu advertise the proxy, so
//! clients never fall back to plaintext.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;
use crate::kafka::{assert_exactly_once, topic};
use crate::kafka_faults::{commits, free_port, wait_for, Broker};

const TLS_PROXY: &str = r#"
import asyncio, ssl, sys
listen, target, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass
async def handle(r, w):
    try:
        tr, tw = await asyncio.open_connection("127.0.0.1", target)
    except Exception:
        w.close()
        return
    await asyncio.gather(pipe(r, tw), pipe(tr, w))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", listen, ssl=ctx)
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"#;

/// A TLS terminator on `listen` forwarding to `target`, killed on drop.
struct TlsProxy(Child);

impl TlsProxy {
    fn start(listen: u16, target: u16, cert: &Path, key: &Path) -> TlsProxy {
        let mut child = Command::new("python3")
            .args(["-c", TLS_PROXY, &listen.to_string(), &target.to_string()])
            .arg(cert)
            .arg(key)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "TLS proxy did not start");
        TlsProxy(child)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for 127.0.0.1/localhost: (cert.pem, key.pem).
fn make_cert(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Every file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return hits;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            hits.extend(files_containing(&p, needle));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// `txpipe produce` and `txpipe ingest` over TLS (security.protocol=SSL with
/// the test CA) land everything exactly once; a client that does not trust
/// the certificate fails with a clear, bounded error. Secrets planted in the
/// config file, the environment and a flag appear in no output, no metrics,
/// no `--print-config`, and no file of the lake.
#[tokio::test(flavor = "multi_thread")]
async fn tls_produce_and_ingest_land_everything_and_secrets_never_leak() {
    let t = TestDir::new();
    let (cert, key) = make_cert(t.dir.path(), "broker");
    let (other_ca, _) = make_cert(t.dir.path(), "other");
    let tls_port = free_port();
    let broker = Broker::start(&t.path("broker"), Some(tls_port));
    let _proxy = TlsProxy::start(tls_port, broker.port, &cert, &key);
    let b = broker.addr();

    const FILE_SECRET: &str = "PLANTED-file-secret-7d1";
    const ENV_SECRET: &str = "PLANTED-env-secret-3c9";
    const FLAG_SECRET: &str = "PLANTED-flag-secret-5e2";
    let props = t.path("client.properties");
    std::fs::write(
        &props,
        format!(
            "# as a managed Kafka hands it out\nsecurity.protocol=SSL\nssl.ca.location={}\n\
             ssl.key.password={FILE_SECRET}\n",
            cert.display()
        ),
    )
    .unwrap();
    let secrets = [FILE_SECRET, ENV_SECRET, FLAG_SECRET];
    let with_secrets = |c: &mut Command| {
        c.env("TXPIPE_KAFKA_SASL_PASSWORD", ENV_SECRET)
            .env("TXPIPE_DEBUG", "1");
    };
    let flag = format!("ssl.keystore.password={FLAG_SECRET}");
    let mut outputs = String::new();

    let topic = topic("tls");
    let n = 5_000u64;
    let mut produce = txpipe();
    with_secrets(&mut produce);
    let out = produce
        .args([
            "produce",
            "--brokers",
            &b,
            "--topic",
            &topic,
            "--count",
            &n.to_string(),
        ])
        .args([
            "--bad-rate",
            "0.01",
            "--seed",
            "31",
            "--partitions",
            "2",
            "--quiet",
        ])
        .arg("--kafka-config-file")
        .arg(&props)
        .args(["--kafka-config", &flag])
        .output()
        .unwrap();
    assert_success(&out, &["produce over TLS"]);
    outputs += &String::from_utf8_lossy(&out.stdout);
    outputs += &String::from_utf8_lossy(&out.stderr);
    assert!(outputs.contains(&format!("failed 0 of {n}")), "{outputs}");
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 31);

    let lake = t.str("lake");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let props_s = props.display().to_string();
    let ingest_args = vec![
        "ingest",
        "--lake",
        &lake,
        "--brokers",
        &b,
        "--topic",
        &topic,
        "--group",
        "tls",
        "--quiet",
        "--stop-when-idle",
        "6",
        "--batch-rows",
        "500",
        "--batch-ms",
        "200",
        "--kafka-config-file",
        &props_s,
        "--kafka-config",
        &flag,
        "--kafka-config",
        "debug=security,broker",
        "--metrics-addr",
        &metrics_addr,
    ];
    let mut ingest = txpipe();
    with_secrets(&mut ingest);
    let child = ingest
        .args(&ingest_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || commits(&lake) > 0),
        "a batch was committed over TLS"
    );
    for path in ["/metrics", "/api/ingest"] {
        let (code, body) = http_get(&metrics_addr, path);
        assert_eq!(code, 200, "{path}");
        outputs += &body;
    }
    let out = child.wait_with_output().unwrap();
    assert_success(&out, &ingest_args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("remaining lag 0 (caught up"), "{stdout}");
    assert!(
        stderr.contains("librdkafka"),
        "the debug log was on: {stderr}"
    );
    outputs += &stdout;
    outputs += &stderr;
    assert_exactly_once(&lake, valid, bad).await;

    // --print-config: the effective settings, secrets redacted.
    let mut print = txpipe();
    with_secrets(&mut print);
    let out = print
        .args(&ingest_args)
        .arg("--print-config")
        .output()
        .unwrap();
    assert_success(&out, &["--print-config"]);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(printed.contains("security.protocol=SSL"), "{printed}");
    assert!(
        printed.contains("sasl.password=[redacted]  # env TXPIPE_KAFKA_SASL_PASSWORD"),
        "{printed}"
    );
    assert!(printed.contains("ssl.key.password=[redacted]"), "{printed}");
    assert!(
        printed.contains("ssl.keystore.password=[redacted]  # --kafka-config"),
        "{printed}"
    );
    assert!(
        printed.contains("group.id=tls  # txpipe default"),
        "{printed}"
    );
    outputs += &printed;
    outputs += &run_ok(&["ingest", "--help"]);
    outputs += &run_ok(&["produce", "--help"]);

    // A client that does not trust the broker's certificate fails clearly.
    let mut distrust = txpipe();
    with_secrets(&mut distrust);
    let ca = format!("ssl.ca.location={}", other_ca.display());
    let out = distrust
        .args([
            "ingest",
            "--lake",
            &t.str("lake2"),
            "--brokers",
            &b,
            "--topic",
            &topic,
        ])
        .args([
            "--group",
            "tls2",
            "--quiet",
            "--kafka-config-file",
            &props_s,
        ])
        .args(["--kafka-config", &ca, "--kafka-config", &flag])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("cannot reach Kafka brokers"), "{err}");
    outputs += &err;
    outputs += &String::from_utf8_lossy(&out.stdout);

    // librdkafka echoes a rejected setting's value in its error: scrubbed.
    let echoed = format!("sasl.oauthbearer.client.secret={FLAG_SECRET}");
    let out = txpipe()
        .args([
            "produce",
            "--brokers",
            &b,
            "--topic",
            &topic,
            "--count",
            "1",
        ])
        .args(["--kafka-config", &echoed])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("sasl.oauthbearer.client.secret [redacted]"),
        "{err}"
    );
    outputs += &err;

    for s in secrets {
        assert!(
            !outputs.contains(s),
            "secret {s} leaked into output:\n{outputs}"
        );
        let hits = files_containing(t.path("lake").as_path(), s.as_bytes());
        assert!(hits.is_empty(), "secret {s} in lake files {hits:?}");
    }
}

/// SASL/SCRAM over TLS (`SASL_SSL`, what managed Kafka services require):
/// Tansu with `--authentication` (it offers SCRAM-SHA-256 and -512; PLAIN is
/// not compiled into Tansu 0.6) behind the TLS terminator. Produce with
/// SCRAM-SHA-512, ingest with SCRAM-SHA-256, exactly once; a wrong password
/// fails with a clear error that does not contain it.
#[tokio::test(flavor = "multi_thread")]
async fn sasl_scram_over_tls_lands_everything_and_a_wrong_password_fails_clearly() {
    let t = TestDir::new();
    let (cert, key) = make_cert(t.dir.path(), "broker");
    let tls_port = free_port();
    let mut broker = Broker::start(&t.path("broker"), Some(tls_port));
    broker.create_user("scram256", "alice", "alice-pw-1234");
    broker.create_user("scram512", "bob", "bob-pw-5678");
    broker.restart_with_authentication();
    let _proxy = TlsProxy::start(tls_port, broker.port, &cert, &key);
    let b = broker.addr();
    let ca = format!("ssl.ca.location={}", cert.display());
    let sasl = |mech: &str, user: &str, pw: &str| -> Vec<String> {
        [
            "security.protocol=SASL_SSL".to_string(),
            format!("sasl.mechanism={mech}"),
            format!("sasl.username={user}"),
            format!("sasl.password={pw}"),
            ca.clone(),
        ]
        .into_iter()
        .flat_map(|kv| ["--kafka-config".to_string(), kv])
        .collect()
    };
    let topic = topic("sasl");
    let n = 3_000u64;
    let mut produce: Vec<String> = ["produce", "--brokers", &b, "--topic", &topic, "--count"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    produce.extend(
        [
            "3000",
            "--bad-rate",
            "0.01",
            "--seed",
            "33",
            "--partitions",
            "2",
            "--quiet",
        ]
        .map(String::from),
    );
    produce.extend(sasl("SCRAM-SHA-512", "bob", "bob-pw-5678"));
    let produce: Vec<&str> = produce.iter().map(String::as_str).collect();
    let out = run_ok(&produce);
    assert!(out.contains(&format!("failed 0 of {n}")), "{out}");
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 33);

    let lake = t.str("lake");
    let mut ingest: Vec<String> = crate::kafka::ingest_args(&lake, &b, &topic, "sasl")
        .iter()
        .map(|s| s.to_string())
        .collect();
    ingest.extend(["--stop-when-idle", "5", "--batch-ms", "200"].map(String::from));
    let good: Vec<String> = ingest
        .iter()
        .cloned()
        .chain(sasl("SCRAM-SHA-256", "alice", "alice-pw-1234"))
        .collect();
    let good: Vec<&str> = good.iter().map(String::as_str).collect();
    let out = run_ok(&good);
    assert!(out.contains("remaining lag 0 (caught up"), "{out}");
    assert_exactly_once(&lake, valid, bad).await;

    let wrong: Vec<String> = ingest
        .iter()
        .cloned()
        .chain(sasl("SCRAM-SHA-256", "alice", "not-alices-password"))
        .collect();
    let out = txpipe().args(&wrong).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("authentication"),
        "the error says authentication failed: {err}"
    );
    assert!(!err.contains("not-alices-password"), "{err}");
}
