//! The CLI surface: help, errors with context and exit codes, rules files, stdin.

use std::io::Write;
use std::process::Stdio;

use crate::helpers::*;

#[test]
fn help_documents_every_command_and_flag() {
    let top = run_ok(&["--help"]);
    for c in [
        "generate", "seed", "ingest", "produce", "models", "test", "bench",
    ] {
        assert!(top.contains(c), "{c} missing from --help");
    }
    let ingest = run_ok(&["ingest", "--help"]);
    for f in [
        "--lake",
        "--from-file",
        "--rules",
        "--batch-rows",
        "--batch-bytes",
        "--batch-ms",
        "--workers",
        "--brokers",
        "--topic",
        "--group",
        "--stop-when-idle",
        "--max-messages",
        "--start-offset",
        "--metrics-addr",
    ] {
        assert!(ingest.contains(f), "{f} missing from ingest --help");
    }
    for args in [&["models", "run", "--help"][..], &["test", "--help"][..]] {
        let help = run_ok(args);
        for f in ["--lake", "--project", "--select", "--rules"] {
            assert!(help.contains(f), "{f} missing from {args:?}");
        }
    }
    let generate = run_ok(&["generate", "--help"]);
    for f in [
        "--count",
        "--seed",
        "--customers",
        "--merchants",
        "--days",
        "--start",
        "--bad-rate",
        "--out",
    ] {
        assert!(generate.contains(f), "{f} missing from generate --help");
    }
    assert!(run_ok(&["seed", "--help"]).contains("--dir"));
    let produce = run_ok(&["produce", "--help"]);
    for f in [
        "--brokers",
        "--topic",
        "--count",
        "--seed",
        "--rate",
        "--from-file",
        "--partitions",
        "--compression",
    ] {
        assert!(produce.contains(f), "{f} missing from produce --help");
    }
}

#[test]
fn errors_have_context_and_non_zero_exit() {
    let t = TestDir::new();
    let lake = t.str("lake");
    let out = txpipe()
        .args([
            "ingest",
            "--lake",
            &lake,
            "--from-file",
            "/nonexistent/x.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error: ingesting /nonexistent/x.jsonl") && err.contains("No such file"),
        "{err}"
    );

    std::fs::write(
        t.path("bad.toml"),
        "[[rule]]\nname = \"typo\"\nsql = \"amount_usdd > 1\"\n",
    )
    .unwrap();
    std::fs::write(t.path("in.jsonl"), "{}\n").unwrap();
    let out = txpipe()
        .args([
            "ingest",
            "--lake",
            &lake,
            "--from-file",
            &t.str("in.jsonl"),
            "--rules",
            &t.str("bad.toml"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rule 'typo'") && err.contains("amount_usdd"),
        "{err}"
    );

    let out = txpipe()
        .args(["seed", "--lake", &lake, "--dir", &t.str("missing")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dim_customer.csv"));

    let out = txpipe()
        .args([
            "generate",
            "--count",
            "1",
            "--start",
            "2026-02-30",
            "--out",
            &t.str("g"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_rules_file_and_stdin() {
    let t = TestDir::new();
    let (_, valid, _) = generate(&t.path("gen"), 3_000, 0.0, 5);
    std::fs::write(
        t.path("rules.toml"),
        "[[rule]]\nname = \"krw_wallet\"\nsql = \"currency = 'KRW' AND payment_method = 'mobile_wallet'\"\n",
    )
    .unwrap();
    let lake = t.str("lake");
    let mut child = txpipe()
        .args([
            "ingest",
            "--lake",
            &lake,
            "--from-file",
            "-",
            "--rules",
            &t.str("rules.toml"),
            "--quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(t.path("gen/transactions.jsonl")).unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("krw_wallet"), "{stdout}");
    let got = query_i64s(
        &lake,
        "SELECT COUNT(*), SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END), \
         SUM(CASE WHEN currency = 'KRW' AND payment_method = 'mobile_wallet' THEN 1 ELSE 0 END), \
         SUM(CASE WHEN array_has(fraud_reasons, 'krw_wallet') THEN 1 ELSE 0 END), MIN(source_partition) FROM fact_transaction",
    )
    .await;
    assert_eq!(got[0], valid as i64);
    assert!(got[1] > 0);
    assert_eq!(got[1], got[2]);
    assert_eq!(got[1], got[3]);
    let src = query(&lake, "SELECT DISTINCT source FROM fact_transaction").await;
    let src =
        txpipe_core::arrow::util::display::array_value_to_string(src[0].column(0), 0).unwrap();
    assert_eq!(src, "stdin");
}
