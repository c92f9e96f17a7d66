//! Faults of the lake side that an ingest must survive (issue 9): two ingests
//! of one file at once, a full disk, a file system gone read-only, SIGTERM at
//! random moments. Each ends with every line of the input landed exactly once
//! and a committed snapshot made only of whole, readable Parquet files.
//!
//! The disk faults mount a small tmpfs over the lake (root only); without
//! mount rights those tests print why and pass without checking anything.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use txpipe_core::generate::Rng;
use txpipe_core::lake::Lake;

use crate::file_to_lake::walk;
use crate::helpers::*;

/// Longest wait for any condition below (a debug build on a busy 2-core box).
const DEADLINE: Duration = Duration::from_secs(180);

/// Polls `cond` every few milliseconds until it holds or [`DEADLINE`] passes.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Micro-batch commits in the lake's fact table.
fn log_entries(lake: &Path) -> usize {
    crate::kafka_faults::commits(&lake.display().to_string())
}

/// A running `txpipe`, killed (SIGKILL) if the test fails before it ends.
struct Running(Option<Child>);

impl Running {
    fn spawn(args: &[&str]) -> Self {
        let child = txpipe()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn txpipe");
        Self(Some(child))
    }
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("still owned")
    }
    fn pid(&self) -> u32 {
        self.0.as_ref().expect("still owned").id()
    }
    fn is_running(&mut self) -> bool {
        self.child().try_wait().expect("try_wait").is_none()
    }
    /// Waits for the end, at most [`RUN_LIMIT`]; returns status and output.
    /// A run that hangs is killed and fails the test.
    fn finish(mut self) -> Output {
        let child = self.0.take().expect("still owned");
        wait_within(child, RUN_LIMIT, "txpipe")
    }
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {}", self.pid());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A tmpfs mounted over a folder for one test; unmounted on drop, even when
/// the test fails.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `2m`) on `dir`, or says why not.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self {
                dir: dir.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs on {} (needs root / CAP_SYS_ADMIN): {}",
                    dir.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount to create a tmpfs: {e}");
                None
            }
        }
    }

    /// `mount -o remount,OPTS`; false when the kernel refused (e.g. busy).
    fn try_remount(&self, opts: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn remount(&self, opts: &str) {
        assert!(
            self.try_remount(opts),
            "remount,{opts} {}",
            self.dir.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still has a file open there: detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// One row of BIGINTs; several aggregates over the lines of `source`.
async fn line_counts(lake: &str, source: &str) -> Vec<i64> {
    let src = source.replace('\'', "''");
    query_i64s(
        lake,
        &format!(
            "SELECT \
               (SELECT COUNT(*) FROM fact_transaction WHERE source = '{src}') AS fact, \
               (SELECT COUNT(*) FROM quarantine WHERE source = '{src}') AS quarantined, \
               COUNT(*), COUNT(DISTINCT source_offset), MIN(source_offset), MAX(source_offset), \
               (SELECT COUNT(DISTINCT transaction_id) FROM fact_transaction WHERE source = '{src}') \
                 AS ids \
             FROM (SELECT source_offset FROM fact_transaction WHERE source = '{src}' \
                   UNION ALL SELECT source_offset FROM quarantine WHERE source = '{src}')"
        ),
    )
    .await
}

/// Every line of `input` is in the lake exactly once: `valid` fact rows with
/// distinct ids, `bad` quarantined, offsets 0..lines without repeat or gap.
async fn assert_exactly_once(lake: &str, input: &Path, (lines, valid, bad): (u64, u64, u64)) {
    let source = std::fs::canonicalize(input).unwrap().display().to_string();
    let got = line_counts(lake, &source).await;
    let (lines, valid, bad) = (lines as i64, valid as i64, bad as i64);
    assert_eq!(
        got,
        vec![valid, bad, lines, lines, 0, lines - 1, valid],
        "[fact, quarantine, rows, distinct offsets, min, max, distinct ids] of {source}"
    );
}

/// The committed snapshot: every file of the fact and quarantine tables'
/// Delta snapshots is whole, readable Parquet with the rows its `Add` says.
/// Returns the number of micro-batch commits. (`_published` is from the
/// pre-Delta protocol, which could leave a commit's files staged.)
async fn assert_snapshot_whole(lake: &str, _published: bool) -> usize {
    let root = PathBuf::from(lake);
    let l = Lake::open(lake).unwrap();
    for table in ["fact_transaction", "quarantine"] {
        let Some(t) = txpipe_core::sink::delta::open(&l, table)
            .await
            .expect("every log file is whole")
        else {
            continue;
        };
        for f in t.snapshot().unwrap().log_data().iter() {
            let at = root.join(table).join(f.path().as_ref());
            let file = std::fs::File::open(&at)
                .unwrap_or_else(|err| panic!("committed file {} missing: {err}", at.display()));
            let reader = txpipe_core::parquet::file::reader::SerializedFileReader::new(file)
                .unwrap_or_else(|err| panic!("{} is not readable Parquet: {err}", at.display()));
            use txpipe_core::parquet::file::reader::FileReader;
            assert_eq!(
                Some(reader.metadata().file_metadata().num_rows()),
                f.num_records().map(|n| n as i64),
                "rows of {}",
                at.display()
            );
        }
    }
    log_entries(&root)
}

/// No interrupted upload (`file#N`) among the tables' data files.
///
/// (A kill -9 during the put of a Delta log entry can leave
/// `_delta_log/<v>.json#N`: Delta readers ignore such names.)
fn assert_no_leftovers(lake: &Path) {
    let temps: Vec<_> = walk(lake)
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "_delta_log"))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains('#'))
        })
        .collect();
    assert!(temps.is_empty(), "interrupted uploads left: {temps:?}");
}

fn ingest_args<'a>(lake: &'a str, input: &'a str) -> Vec<&'a str> {
    vec![
        "ingest",
        "--lake",
        lake,
        "--from-file",
        input,
        "--batch-rows",
        "500",
        "--quiet",
    ]
}

fn assert_clean_failure(out: &Output, expect: &[&str]) {
    let text = describe(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in expect {
        assert!(stderr.contains(e), "stderr lacks {e:?}:\n{text}");
    }
    assert!(!stderr.contains("panicked"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_ingest_of_the_same_file_is_refused_and_a_killed_holder_leaves_no_lock() {
    let t = TestDir::new();
    let counts = generate(&t.path("gen"), 300_000, 0.01, 21);
    let lake = t.str("lake");
    let input = t.str("gen/transactions.jsonl");
    let abs_input = std::fs::canonicalize(&input).unwrap().display().to_string();
    let args = ingest_args(&lake, &input);
    let mut slow = args.clone();
    slow.extend(["--workers", "1"]);

    // A is mid-run (it committed a batch, more are staged and in flight) when B starts.
    let mut a = Running::spawn(&slow);
    wait_for("the first ingest's first commit", || {
        log_entries(&t.path("lake")) > 0 || !a.is_running()
    });
    assert!(
        a.is_running(),
        "the first ingest ended before a second one could start; make the input bigger"
    );
    let b = Running::spawn(&args).finish();
    assert!(
        a.is_running(),
        "the first ingest ended before the second one was refused; make the input bigger"
    );
    assert_clean_failure(
        &b,
        &[
            &abs_input,
            "another ingest holds it",
            &format!("pid {}", a.pid()),
            "_txpipe/locks/",
        ],
    );
    eprintln!("refused: {}", String::from_utf8_lossy(&b.stderr).trim());
    let a_out = a.finish();
    assert!(a_out.status.success(), "{}", describe(&a_out));
    assert_snapshot_whole(&lake, true).await;
    assert_exactly_once(&lake, Path::new(&input), counts).await;
    assert_no_leftovers(&t.path("lake"));
    // The lock went with its holder: a rerun is allowed and lands nothing.
    let again = run_ok(&args);
    assert!(again.contains("nothing new"), "{again}");

    // kill -9 of a holder leaves no stale lock: the next run takes over at once.
    std::fs::copy(&input, t.path("gen/copy.jsonl")).unwrap();
    let copy = t.str("gen/copy.jsonl");
    let copy_args = ingest_args(&lake, &copy);
    let before = log_entries(&t.path("lake"));
    let mut holder = Running::spawn(&copy_args);
    wait_for("the copy's first commit", || {
        log_entries(&t.path("lake")) > before || !holder.is_running()
    });
    assert!(
        holder.is_running(),
        "the copy's ingest ended before kill -9; make the input bigger"
    );
    holder.signal("-KILL");
    let killed = holder.finish();
    assert!(!killed.status.success());
    run_ok(&copy_args);
    assert_snapshot_whole(&lake, true).await;
    assert_exactly_once(&lake, Path::new(&copy), counts).await;
    assert_exactly_once(&lake, Path::new(&input), counts).await;
    assert_no_leftovers(&t.path("lake"));
}

/// A tmpfs of `size` mounted at the test's `lake` folder, and its canonical
/// path (None, with a message, where mounting is not allowed).
fn tmpfs_lake(t: &TestDir, size: &str) -> Option<(Tmpfs, String)> {
    let fs = Tmpfs::mount(&t.path("lake"), size)?;
    let lake = std::fs::canonicalize(t.path("lake"))
        .ok()?
        .display()
        .to_string();
    Some((fs, lake))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_lake_disk_fails_cleanly_and_a_rerun_after_freeing_space_lands_everything_once() {
    let t = TestDir::new();
    let counts = generate(&t.path("gen"), 100_000, 0.01, 22);
    let Some((fs, lake)) = tmpfs_lake(&t, "2m") else {
        return;
    };
    let input = t.str("gen/transactions.jsonl");
    let args = ingest_args(&lake, &input);

    let full = Running::spawn(&args).finish();
    eprintln!(
        "disk full: {}",
        String::from_utf8_lossy(&full.stderr).trim()
    );
    assert_clean_failure(&full, &["No space left on device", &format!("{lake}/")]);
    // What was committed before the disk filled up is whole.
    let committed = assert_snapshot_whole(&lake, false).await;
    assert!(committed < 200, "the whole file fitted in 2 MiB?");

    fs.remount("size=200m");
    run_ok(&args);
    assert!(assert_snapshot_whole(&lake, true).await > committed);
    assert_exactly_once(&lake, Path::new(&input), counts).await;
    assert_no_leftovers(Path::new(&lake));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lake_gone_read_only_mid_run_fails_cleanly_and_a_rerun_after_remount_lands_everything_once(
) {
    let t = TestDir::new();
    let counts = generate(&t.path("gen"), 300_000, 0.01, 23);
    let Some((fs, lake)) = tmpfs_lake(&t, "200m") else {
        return;
    };
    let input = t.str("gen/transactions.jsonl");
    let args = ingest_args(&lake, &input);

    let mut run = Running::spawn(&args);
    wait_for("the first commit", || {
        log_entries(Path::new(&lake)) > 0 || !run.is_running()
    });
    // The kernel refuses the remount while a file is open for writing (an
    // upload in progress): retry until it goes through.
    wait_for("the lake to be remounted read-only", || {
        fs.try_remount("ro") || !run.is_running()
    });
    let out = run.finish();
    assert!(
        !out.status.success(),
        "the ingest finished before the lake went read-only; make the input bigger"
    );
    eprintln!("read-only: {}", String::from_utf8_lossy(&out.stderr).trim());
    assert_clean_failure(&out, &["Read-only file system", &format!("{lake}/")]);
    assert_snapshot_whole(&lake, false).await;

    // Still read-only: a rerun fails the same clean way, before doing anything.
    let again = Running::spawn(&args).finish();
    eprintln!(
        "read-only rerun: {}",
        String::from_utf8_lossy(&again.stderr).trim()
    );
    assert_clean_failure(&again, &["Read-only file system", &format!("{lake}/")]);

    fs.remount("rw");
    run_ok(&args);
    assert_snapshot_whole(&lake, true).await;
    assert_exactly_once(&lake, Path::new(&input), counts).await;
    assert_no_leftovers(Path::new(&lake));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_at_random_moments_commits_what_is_in_flight_and_exits_zero() {
    let t = TestDir::new();
    let counts = generate(&t.path("gen"), 200_000, 0.01, 24);
    let lake = t.str("lake");
    let input = t.str("gen/transactions.jsonl");
    let args = ingest_args(&lake, &input);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("SIGTERM schedule seed: {seed}");
    let mut rng = Rng::new(seed);
    let mut stopped = 0;
    for round in 0..5 {
        let before = log_entries(&t.path("lake"));
        let mut run = Running::spawn(&args);
        // The signal handler is installed before the first commit of the run.
        wait_for("a commit of this run", || {
            log_entries(&t.path("lake")) > before || !run.is_running()
        });
        // A random moment after that (this sleep only picks the moment).
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        let signalled = run.is_running();
        if signalled {
            run.signal("-TERM");
        }
        let out = run.finish();
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: a SIGTERM'd ingest exits 0 after committing\n{}",
            describe(&out)
        );
        // Whatever was in flight was committed, not left behind uncommitted.
        let orphans = orphan_files(&t.str("lake")).await;
        assert!(
            orphans.is_empty(),
            "round {round}: uncommitted files after a clean stop: {orphans:?}"
        );
        if !signalled {
            break;
        }
        stopped += 1;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("stopping: committing the batches in flight"),
            "{stderr}"
        );
    }
    assert!(
        stopped >= 1,
        "no run was stopped mid-way; make the input bigger"
    );
    eprintln!("{stopped} runs stopped by SIGTERM");
    run_ok(&args);
    assert_snapshot_whole(&lake, true).await;
    assert_exactly_once(&lake, Path::new(&input), counts).await;
    assert_no_leftovers(&t.path("lake"));
}
