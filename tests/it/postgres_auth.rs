//! `txpipe serve --pg-addr` with a password and TLS: SCRAM over a real
//! socket, a TLS handshake with a certificate made here, the rule that a
//! non-loopback address needs a password, and the password kept out of
//! output, logs and `/metrics`.

use std::process::Command;

use crate::helpers::*;
use crate::postgres::{built_lake, healthy, pg_serve, py, script};

const PASSWORD: &str = "pg-Secret-42-xyzzy";

#[tokio::test(flavor = "multi_thread")]
async fn a_password_tls_and_the_non_loopback_rule() {
    let t = TestDir::new();
    let lake = built_lake(&t, 500);

    // Any other address than loopback needs a password.
    let out = txpipe()
        .args([
            "serve",
            "--lake",
            &lake,
            "--addr",
            "127.0.0.1:0",
            "--pg-addr",
            "0.0.0.0:0",
        ])
        .env_remove("TXPIPE_PG_PASSWORD")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0.0.0.0"), "{err}");

    // A certificate for localhost, made here.
    let (cert, key) = (t.path("cert.pem"), t.path("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::write(t.path("pw"), format!("{PASSWORD}\n")).unwrap();

    // A bad key is an error at start, not a silent plaintext server.
    let out = txpipe()
        .args([
            "serve",
            "--lake",
            &lake,
            "--addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
        ])
        .arg("--pg-tls-cert")
        .arg(&cert)
        .arg("--pg-tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"));

    let s = pg_serve(
        &lake,
        &t.path(""),
        &[
            "--pg-addr",
            "0.0.0.0:0",
            "--pg-user",
            "analyst",
            "--pg-password-file",
            &t.str("pw"),
            "--pg-tls-cert",
            &t.str("cert.pem"),
            "--pg-tls-key",
            &t.str("key.pem"),
        ],
        &[],
    );
    let seen = py(
        "bounds.py",
        &[
            "auth",
            "127.0.0.1",
            &s.port.to_string(),
            "analyst",
            PASSWORD,
            &t.str("cert.pem"),
        ],
    );
    assert!(seen["results"]["right password"].as_u64().unwrap() > 0);
    assert_eq!(seen["results"]["tls"][0], true);

    // pgjdbc with SCRAM.
    let url = format!("jdbc:postgresql://127.0.0.1:{}/txpipe", s.port);
    let out = Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar"])
        .arg(script("PgJdbcCheck.java"))
        .args([url.as_str(), "analyst", PASSWORD])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgjdbc with SCRAM: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The password appears nowhere the server writes.
    let (_, metrics) = http_get(&s.http, "/metrics");
    assert!(!metrics.contains(PASSWORD));
    let s_err = std::fs::read_to_string(&s.stderr).unwrap();
    assert!(!s_err.contains(PASSWORD), "{s_err}");
    healthy(&s);
}
