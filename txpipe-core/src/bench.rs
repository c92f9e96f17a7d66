//! Throughput and memory measurements (`txpipe bench`).
//!
//! Each stage is timed on the same generated file: decode alone, decode +
//! rules, Parquet encoding (single thread each, to show per-core cost), then
//! the whole file → lake path with all workers. Peak RSS is read from
//! `/proc/self/status` (VmHWM) after resetting it through `/proc/self/clear_refs`
//! before each stage, on Linux.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::decode::TransactionDecoder;
use crate::error::{Error, Result};
use crate::fx::FxTable;
use crate::generate::{generate, GenerateOptions};
use crate::lake::Lake;
use crate::pipeline::{ingest_file, IngestOptions};
use crate::rules::RuleSet;
use crate::schema::FACT_SCHEMA;
use crate::sink::parquet::{encode, writer_properties};

/// One measured stage.
#[derive(Debug, Clone)]
pub struct StageResult {
    /// Stage name.
    pub name: &'static str,
    /// Threads used.
    pub threads: usize,
    /// Wall seconds.
    pub secs: f64,
    /// Rows processed.
    pub rows: u64,
    /// Input bytes processed.
    pub bytes: u64,
    /// Peak resident memory during the stage, MiB (Linux only).
    pub peak_rss_mib: Option<f64>,
}

impl StageResult {
    /// Rows per second.
    pub fn rows_per_sec(&self) -> f64 {
        self.rows as f64 / self.secs.max(1e-9)
    }
    /// Input megabytes (10^6) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs.max(1e-9)
    }
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process since the last reset, MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn read_chunks(
    path: &Path,
    chunk_rows: usize,
    mut f: impl FnMut(&[Vec<u8>]) -> Result<()>,
) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("opening", path, e))?;
    let mut lines = Vec::with_capacity(chunk_rows);
    for line in BufReader::with_capacity(1 << 20, file).split(b'\n') {
        lines.push(line.map_err(|e| Error::io("reading", path, e))?);
        if lines.len() == chunk_rows {
            f(&lines)?;
            lines.clear();
        }
    }
    if !lines.is_empty() {
        f(&lines)?;
    }
    Ok(())
}

/// Generates `rows` transactions under `dir` and measures every stage.
///
/// # Errors
/// Generation, reading or the lake failed.
pub async fn run(
    dir: &Path,
    rows: u64,
    opts: &IngestOptions,
    report: &mut dyn FnMut(&StageResult),
) -> Result<Vec<StageResult>> {
    let mut out = Vec::new();
    let mut stage = |r: StageResult, out: &mut Vec<StageResult>| {
        report(&r);
        out.push(r);
    };

    reset_peak_rss();
    let t = Instant::now();
    let g = generate(
        dir,
        &GenerateOptions {
            count: rows,
            bad_rate: 0.001,
            ..Default::default()
        },
        &mut |_| {},
    )?;
    stage(
        StageResult {
            name: "generate",
            threads: 1,
            secs: t.elapsed().as_secs_f64(),
            rows,
            bytes: g.bytes,
            peak_rss_mib: peak_rss_mib(),
        },
        &mut out,
    );
    let input = dir.join("transactions.jsonl");
    let fx = Arc::new(FxTable::defaults());
    let rules = Arc::new(RuleSet::defaults()?);
    let chunk = opts.batch_rows;

    // Time only the stage itself: the file is re-read per stage, outside the clock.
    for (name, with_rules, with_encode) in [
        ("decode", false, false),
        ("decode+rules", true, false),
        ("parquet encode", true, true),
    ] {
        reset_peak_rss();
        let mut secs = 0.0;
        let mut state = crate::rules::state::WindowState::new(false);
        let mut kept = Vec::new();
        let props = writer_properties();
        read_chunks(&input, chunk, |lines| {
            let t = Instant::now();
            let mut d = TransactionDecoder::with_capacity(fx.clone(), "bench", lines.len());
            for (i, l) in lines.iter().enumerate() {
                d.push(l, 0, i as i64);
            }
            let decoded = d.finish(0)?;
            if !with_rules {
                secs += t.elapsed().as_secs_f64();
                return Ok(());
            }
            let windows = rules.window_columns(&decoded.transactions, &mut state)?;
            if name == "decode+rules" {
                kept.push(decoded.transactions.clone());
            }
            let (fact, _) = rules.apply_windowed(&decoded.transactions, windows)?;
            if !with_encode {
                secs += t.elapsed().as_secs_f64();
                return Ok(());
            }
            let t = Instant::now();
            let bytes = encode(&FACT_SCHEMA, &[fact], &props)?;
            std::hint::black_box(bytes);
            secs += t.elapsed().as_secs_f64();
            Ok(())
        })?;
        stage(
            StageResult {
                name,
                threads: 1,
                secs,
                rows,
                bytes: g.bytes,
                peak_rss_mib: peak_rss_mib(),
            },
            &mut out,
        );
        if name == "decode+rules" && rules.window_plan().is_some() {
            // The in-order part of it: the window calls over the rule state,
            // timed alone over the decoded batches (best of 3, fresh state each).
            let mut window_secs = f64::INFINITY;
            for _ in 0..3 {
                let mut state = crate::rules::state::WindowState::new(false);
                let w = Instant::now();
                for batch in &kept {
                    std::hint::black_box(rules.window_columns(batch, &mut state)?);
                }
                window_secs = window_secs.min(w.elapsed().as_secs_f64());
            }
            kept.clear();
            stage(
                StageResult {
                    name: "  of which window state (in order, best of 3)",
                    threads: 1,
                    secs: window_secs,
                    rows,
                    bytes: g.bytes,
                    peak_rss_mib: None,
                },
                &mut out,
            );
        }
    }

    let lake_dir = dir.join("lake");
    let _ = std::fs::remove_dir_all(&lake_dir);
    let lake = Lake::open(&lake_dir.display().to_string())?;
    reset_peak_rss();
    let path = input.display().to_string();
    let summary = ingest_file(&lake, &path, rules.clone(), opts, &mut |_| {}).await?;
    stage(
        StageResult {
            name: "file → lake (end to end)",
            threads: opts.workers,
            secs: summary.elapsed.as_secs_f64(),
            rows: summary.counts.rows_in,
            bytes: summary.input_bytes,
            peak_rss_mib: peak_rss_mib(),
        },
        &mut out,
    );
    Ok(out)
}
