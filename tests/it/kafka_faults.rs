//! Kafka faults against real brokers: members killed with -9 before a drain,
//! the broker killed and restarted mid-ingest, the broker unreachable at start.
//!
//! The shared test broker is in TXPIPE_TEST_BROKERS; tests that kill or restart
//! a broker start their own Tansu (TXPIPE_TEST_TANSU, both set by tests/run.sh).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::kafka::{assert_exactly_once, brokers, ingest_args, produce_generated, topic};

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `cond` holds or `deadline` passes; returns whether it held.
pub(crate) fn wait_for(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// `txpipe ARGS` in the background, its output discarded.
pub(crate) fn spawn_quiet(args: &[&str]) -> Child {
    txpipe()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// A Tansu broker of this test's own, with SQLite storage in `dir`.
pub(crate) struct Broker {
    child: Option<Child>,
    dir: PathBuf,
    /// Port it listens on.
    pub port: u16,
    /// Port clients are told to connect to (a proxy in front of it, or `port`).
    pub advertised: u16,
    /// Extra `tansu broker` flags (e.g. `--authentication`).
    extra: Vec<String>,
}

impl Broker {
    /// The Tansu binary tests/run.sh installed.
    fn bin() -> String {
        std::env::var("TXPIPE_TEST_TANSU").expect(
            "TXPIPE_TEST_TANSU is not set: run the tests with tests/run.sh, which installs Tansu",
        )
    }

    /// Starts a broker on a free port, advertising `advertised` (None: itself).
    pub(crate) fn start(dir: &Path, advertised: Option<u16>) -> Broker {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let mut b = Broker {
            child: None,
            dir: dir.to_path_buf(),
            port,
            advertised: advertised.unwrap_or(port),
            extra: Vec::new(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("broker.log"))
            .unwrap();
        let child = Command::new(Self::bin())
            .current_dir(&self.dir)
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://127.0.0.1:{}", self.port),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", self.advertised),
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_for(Duration::from_secs(60), || accepts(port)),
            "broker on {port} did not start; log:\n{}",
            std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default()
        );
    }

    /// Address clients use.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// SIGKILL, and wait until the port is closed.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        let port = self.port;
        assert!(wait_for(Duration::from_secs(10), || !accepts(port)));
    }

    /// Starts it again on the same port with the same storage.
    pub(crate) fn restart(&mut self) {
        self.spawn();
    }

    /// Restarts it with SASL authentication on (SCRAM-SHA-256/512; users are
    /// created before with [`Broker::create_user`]).
    pub(crate) fn restart_with_authentication(&mut self) {
        self.kill();
        self.extra = vec!["--authentication".into()];
        self.spawn();
    }

    /// `tansu user create` of a SCRAM user (`mechanism`: scram256 | scram512),
    /// through the broker's AlterUserScramCredentials API.
    pub(crate) fn create_user(&self, mechanism: &str, name: &str, password: &str) {
        let out = Command::new(Self::bin())
            .args(["user", "create", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .args(["--mechanism", mechanism, name, password])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu user create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Txpipe commit records (`commitInfo.txpipe`) in the fact table's Delta
/// log files of a lake (0 before the first commit).
pub(crate) fn commit_records(lake: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(Path::new(lake).join("fact_transaction/_delta_log")) else {
        return out;
    };
    for e in dir.flatten() {
        if e.path().extension().is_none_or(|x| x != "json") {
            continue;
        }
        // A commit file is written whole (create-if-absent); skip one being read mid-rename.
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(r) = v.get("commitInfo").and_then(|c| c.get("txpipe")) {
                    out.push(r.clone());
                }
            }
        }
    }
    out
}

/// Runs `txpipe args…` (quiet) and kills it with -9 after `wait` unless it
/// ended first; true when it was killed.
pub(crate) fn run_then_kill(args: &[&str], wait: Duration) -> bool {
    let mut child = spawn_quiet(args);
    let started = Instant::now();
    while started.elapsed() < wait && child.try_wait().unwrap().is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = child.try_wait().unwrap().is_none();
    if killed {
        child.kill().unwrap();
    }
    child.wait().unwrap();
    killed
}

/// Number of micro-batch commits in a lake (0 before the first commit).
pub(crate) fn commits(lake: &str) -> usize {
    commit_records(lake).len()
}

/// The scenario, several rounds: members of one group are killed with
/// -9 at random moments, then one more run with `--stop-when-idle 5` drains
/// the topic. The killed members are still in the group when it starts, so
/// some partitions have no live owner; a drain that stops while they have
/// pending messages would exit 0 with the lake incomplete (seen in 2 of 6 runs
/// before `--stop-when-idle` meant "the lake caught up"). Four rounds per CI
/// run (a one-in-three failure passes one run unseen with probability
/// (2/3)^4 < 20%, and every CI run rolls new kill times); set
/// TXPIPE_KILL_ROUNDS for more.
#[tokio::test(flavor = "multi_thread")]
async fn kill_dash_nine_then_drain_lands_everything_every_round() {
    let b = brokers();
    let rounds: u64 = std::env::var("TXPIPE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut rng = kill_schedule_rng();
    let n = 40_000u64;
    let t = TestDir::new();
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 5);
    let mut total_kills = 0;
    for round in 0..rounds {
        let topic = topic("drain");
        let out = produce_generated(&b, &topic, n, 5);
        assert!(out.contains(&format!("failed 0 of {n}")), "{out}");
        let lake = t.str(&format!("lake-{round}"));
        let mut args = ingest_args(&lake, &b, &topic, "crashers");
        args.extend([
            "--stop-when-idle",
            "5",
            "--batch-rows",
            "2000",
            "--batch-ms",
            "300",
        ]);
        let mut kills = 0;
        for _ in 0..4 {
            if run_then_kill(&args, Duration::from_millis(1500 + rng.below(2000))) {
                kills += 1;
            }
        }
        total_kills += kills;
        // Exactly the final run: a 5 s idle period, shorter than the
        // time the broker or the watchdog needs to route around dead members.
        let drain_started = Instant::now();
        let out = txpipe().args(&args).output().unwrap();
        assert_success(&out, &args);
        let summary = String::from_utf8_lossy(&out.stdout);
        assert!(
            summary.contains("remaining lag 0 (caught up"),
            "round {round}: {summary}"
        );
        eprintln!(
            "round {round}: {kills} kills, drain took {:.1}s",
            drain_started.elapsed().as_secs_f64()
        );
        assert_exactly_once(&lake, valid, bad).await;
    }
    assert!(
        total_kills >= rounds as usize * 2,
        "only {total_kills} kills landed mid-run"
    );
}

/// A partition with pending messages whose owner never makes progress: the
/// drain gives up after --drain-timeout, exits non-zero and names the
/// partitions and their lag (and a later run still lands everything).
#[tokio::test(flavor = "multi_thread")]
async fn a_drain_that_cannot_finish_fails_naming_the_lagging_partitions() {
    let b = brokers();
    let t = TestDir::new();
    let topic = topic("stuck");
    let n = 20_000u64;
    produce_generated(&b, &topic, n, 12);
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 12);
    let lake = t.str("lake");
    // A member that holds its partitions and lands nothing: it is paused with
    // SIGSTOP right after joining, so the group keeps it (it heartbeats from a
    // background thread only while running — stopped, it will be expired;
    // until then its partitions are owned by nobody who makes progress).
    let mut args = ingest_args(&lake, &b, &topic, "stuck");
    args.extend(["--batch-rows", "500", "--batch-ms", "200"]);
    let mut holder = spawn_quiet(&args);
    let holder_id = holder.id().to_string();
    assert!(
        wait_for(Duration::from_secs(30), || commits(&lake) > 0),
        "the first member committed something"
    );
    Command::new("kill")
        .args(["-STOP", &holder_id])
        .status()
        .unwrap();
    let mut drain = args.clone();
    drain.extend(["--stop-when-idle", "2", "--drain-timeout", "3"]);
    let out = txpipe().args(&drain).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    Command::new("kill")
        .args(["-KILL", &holder_id])
        .status()
        .unwrap();
    holder.wait().unwrap();
    if out.status.success() {
        // The broker expired the stopped member and rebalanced within the
        // drain's few seconds: then everything must be in the lake.
        assert_exactly_once(&lake, valid, bad).await;
        eprintln!("the broker rebalanced before the drain timeout; checked the lake instead");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("did not catch up with topic"), "{err}");
    assert!(err.contains("partition ") && err.contains(" lag "), "{err}");
    // Nothing was lost: a patient drain lands the rest exactly once.
    let mut patient = args.clone();
    patient.extend(["--stop-when-idle", "5"]);
    let out = txpipe().args(&patient).output().unwrap();
    assert_success(&out, &patient);
    assert_exactly_once(&lake, valid, bad).await;
}

/// The broker dies (SIGKILL) mid-ingest and comes back on the same port with
/// the same storage: the ingest keeps retrying, `/metrics` shows the brokers
/// down meanwhile, and after the restart it resumes and lands everything once.
/// Its alerts go to the same broker: after deduplication by `alert_id` they
/// are exactly the lake's flagged rows.
#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_and_restarted_mid_ingest_lands_everything_once() {
    let t = TestDir::new();
    let mut broker = Broker::start(&t.path("broker"), None);
    let b = broker.addr();
    let topic = topic("restart");
    let n = 60_000u64;
    let out = produce_generated(&b, &topic, n, 14);
    assert!(out.contains(&format!("failed 0 of {n}")), "{out}");
    let (_, valid, bad) = generate(&t.path("gen"), n, 0.01, 14);
    let lake = t.str("lake");
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let alerts = format!("{topic}-alerts");
    let mut args = ingest_args(&lake, &b, &topic, "restarts");
    args.extend([
        "--alerts-topic",
        &alerts,
        "--stop-when-idle",
        "8",
        "--batch-rows",
        "1000",
        "--batch-ms",
        "200",
        "--workers",
        "1",
        "--metrics-addr",
        &metrics_addr,
    ]);
    let ingest = txpipe()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || commits(&lake) >= 2),
        "the ingest committed batches before the broker died"
    );
    broker.kill();
    // Whichever client meets the outage first shows it: the consumer, or the
    // alerts producer (the pipeline waits on its acknowledgement meanwhile).
    let mut shown = String::new();
    let down_seen = wait_for(Duration::from_secs(45), || {
        if std::net::TcpStream::connect(&metrics_addr).is_err() {
            return false;
        }
        let down = http_get(&metrics_addr, "/metrics")
            .1
            .lines()
            .find(|l| {
                (l.starts_with("txpipe_kafka_brokers_up{") || l.starts_with("txpipe_alerts_up{"))
                    && l.ends_with(" 0")
            })
            .map(String::from);
        shown = down.clone().unwrap_or_default();
        down.is_some()
    });
    assert!(
        down_seen,
        "/metrics showed txpipe_kafka_brokers_up or txpipe_alerts_up 0 while the broker was down"
    );
    eprintln!("outage on /metrics: {shown}");
    let at_restart = commits(&lake);
    broker.restart();
    let back = Instant::now();
    assert!(
        wait_for(Duration::from_secs(120), || commits(&lake) > at_restart),
        "the ingest resumed after the broker came back"
    );
    eprintln!(
        "broker back -> first new lake commit: {:.1}s",
        back.elapsed().as_secs_f64()
    );
    let out = ingest.wait_with_output().unwrap();
    assert_success(&out, &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let consumer =
        stderr.contains("Kafka brokers unreachable") && stderr.contains("reachable again");
    let producer = stderr.contains("not acknowledged") && stderr.contains("acknowledging again");
    assert!(
        consumer || producer,
        "the outage and the recovery were reported: {stderr}"
    );
    assert_exactly_once(&lake, valid, bad).await;
    let lake_flags = crate::alerts::flagged(&lake).await;
    assert!(
        lake_flags.len() > 20,
        "too few flagged rows: {}",
        lake_flags.len()
    );
    let got = crate::alerts::consume_alerts(&b, &alerts, lake_flags.len());
    let duplicates = crate::alerts::check_alerts(&got, &lake_flags);
    eprintln!(
        "broker restart: {} alerts read, {} distinct = the lake's is_fraud rows, {duplicates} duplicates",
        got.len(),
        lake_flags.len()
    );
}

/// The topic is deleted while an ingest consumes it: the ingest fails with a
/// clear error naming the topic, and what it committed before is in the lake
/// exactly once (nothing duplicated, nothing half-written).
///
/// Ignored: against Tansu 0.6 the deletion crashes librdkafka 2.12.1 itself
/// (SIGSEGV in `rd_kafka_metadata_cache_find` ← `rd_kafka_metadata_update_op`,
/// a `strcmp` on the NULL topic name of Tansu's metadata answer for the deleted
/// topic), before txpipe can report anything; run it with `--ignored` against
/// a broker that answers with the topic's name (Apache Kafka, Redpanda).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "Tansu 0.6's metadata answer for a deleted topic crashes librdkafka 2.12.1 (NULL topic name)"]
async fn topic_deleted_mid_run_fails_clearly_and_keeps_what_was_committed() {
    let t = TestDir::new();
    let broker = Broker::start(&t.path("broker"), None);
    let b = broker.addr();
    let topic = topic("deleted");
    let n = 40_000u64;
    produce_generated(&b, &topic, n, 16);
    let lake = t.str("lake");
    let mut args = ingest_args(&lake, &b, &topic, "deleters");
    args.extend([
        "--stop-when-idle",
        "5",
        "--batch-rows",
        "500",
        "--batch-ms",
        "200",
        "--workers",
        "1",
    ]);
    let ingest = txpipe()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(60), || commits(&lake) >= 2));
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom confluent_kafka.admin import AdminClient\n\
             a = AdminClient({'bootstrap.servers': sys.argv[1]})\n\
             a.delete_topics([sys.argv[2]], operation_timeout=10)[sys.argv[2]].result()\n",
            &b,
            &topic,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ingest.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("topic {topic} no longer exists")),
        "{err}"
    );
    // What was committed is whole and unique: rows = the commit log's counts.
    let logged = committed_rows(&lake);
    assert!(logged > 0 && logged < n, "{logged}");
    let f = query_i64s(&lake, "SELECT COUNT(*), COUNT(DISTINCT source_partition * 1000000 + source_offset) FROM fact_transaction").await;
    let q = query_i64s(&lake, "SELECT COUNT(*), COUNT(DISTINCT source_partition * 1000000 + source_offset) FROM quarantine").await;
    assert_eq!(f[0], f[1], "no duplicated fact rows");
    assert_eq!(q[0], q[1], "no duplicated quarantine rows");
    assert_eq!((f[0] + q[0]) as u64, logged, "lake rows = committed counts");
}

/// Sum of `rows_in` over the lake's micro-batch commits.
pub(crate) fn committed_rows(lake: &str) -> u64 {
    commit_records(lake)
        .iter()
        .map(|r| r["counts"]["rows_in"].as_u64().unwrap_or(0))
        .sum()
}
