//! Building incremental models: which ones can be maintained incrementally in
//! this run, the session that sees only the touched dates of the fact table,
//! and the merge of the recomputed dates into the published mart.
//!
//! The recomputed rows come from the model's own SQL run over the fact table
//! narrowed to the touched `event_date`s (the views in between are inlined, so
//! the narrowing reaches the Parquet scan and prunes partitions). The mart is
//! a Delta table partitioned by `event_date`; publishing replaces exactly the
//! recomputed dates' partitions in one commit (Delta's replaceWhere), and the
//! models downstream read the old mart without those dates plus the new rows.
//! Its cost follows the touched dates, not the fact table or the mart.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use super::incremental::{touched_since, ModelState, Touched};
use super::model::{Materialized, Model};
use super::project::Project;
use super::runner::{
    build_table, compute, mart_table, model_error, BuiltMart, IncrementalInfo, RunOptions, Staged,
    StagedMart,
};
use crate::error::Result;
use crate::lake::Lake;
use crate::read::LAKE_TABLES;
use crate::schema::{EVENT_DATE, FACT_TABLE};
use crate::sink::replace_where::{date_in_list, partition_columns, Replace};

/// How each selected incremental model is built in this run.
#[derive(Debug)]
pub(crate) struct IncrementalPlan {
    /// Model → the fact version it was last built at (incremental), or why
    /// it is built in full.
    modes: BTreeMap<String, std::result::Result<u64, String>>,
    /// Dates touched since the oldest of those versions (`None`: no model is
    /// built incrementally).
    pub touched: Option<Touched>,
    /// The fact table version the touched dates were read up to.
    upto: u64,
}

impl IncrementalPlan {
    /// Decides, for every selected incremental model, incremental or full.
    ///
    /// # Errors
    /// The store failed.
    pub async fn new(
        lake: &Lake,
        project: &Project,
        selected: &BTreeSet<String>,
        opts: &RunOptions,
        fact_now: Option<u64>,
    ) -> Result<Self> {
        let mut modes = BTreeMap::new();
        for m in &project.models {
            if m.materialized != Materialized::Incremental || !selected.contains(&m.name) {
                continue;
            }
            let mode = match (opts.full_refresh, fact_now) {
                (true, _) => Err("--full-refresh".to_string()),
                (false, None) => Err("the lake has no fact table yet".to_string()),
                (false, Some(_)) => match ModelState::read(lake, &m.name).await? {
                    None => Err("first incremental build (no state)".to_string()),
                    Some(s) if s.fingerprint != m.fingerprint(&opts.rules) => Err(
                        "the model's SQL (its file or the rules it expands) changed since its \
                         last build"
                            .to_string(),
                    ),
                    Some(s) => match partition_columns(lake, &mart_table(&m.name)).await? {
                        None => Err("its mart does not exist".to_string()),
                        Some(p) if p != [EVENT_DATE] => Err(format!(
                            "its mart is not partitioned by {EVENT_DATE} (built by an earlier \
                             txpipe)"
                        )),
                        Some(_) => Ok(s.fact_version),
                    },
                },
            };
            modes.insert(m.name.clone(), mode);
        }
        let upto = fact_now.unwrap_or(0);
        let oldest = modes
            .values()
            .filter_map(|m| m.as_ref().ok())
            .min()
            .copied();
        let mut touched = None;
        if let Some(after) = oldest {
            match touched_since(lake, after, upto).await? {
                Some(t) => touched = Some(t),
                None => {
                    for mode in modes.values_mut().filter(|m| m.is_ok()) {
                        *mode = Err(format!(
                            "the fact table's log no longer holds every commit since version \
                             {after} (log cleanup)"
                        ));
                    }
                }
            }
        }
        Ok(Self {
            modes,
            touched,
            upto,
        })
    }
}

/// `event_date IN (DATE '…', …)` for `dates` (`FALSE` when there are none);
/// its negation when `negate`.
pub(crate) fn date_filter(dates: &BTreeSet<String>, negate: bool) -> String {
    match (date_in_list(EVENT_DATE, dates), negate) {
        (None, false) => "FALSE".into(),
        (None, true) => "TRUE".into(),
        (Some(f), false) => f,
        (Some(f), true) => format!("NOT ({f})"),
    }
}

/// A session over the same lake tables as `full` (the same snapshots, not
/// opened again) whose `fact_transaction` holds only the rows of `dates` (a
/// filter on the partition column: other dates are never read).
///
/// # Errors
/// A table could not be registered.
pub(crate) async fn slice_context(
    full: &SessionContext,
    dates: &BTreeSet<String>,
) -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config_rt(full.copied_config(), full.runtime_env());
    super::functions::register(&ctx);
    for name in LAKE_TABLES {
        if full.table_exist(name)? {
            ctx.register_table(name, full.table_provider(name).await?)?;
        }
    }
    if ctx.table_exist(FACT_TABLE)? {
        let df = ctx
            .sql(&format!(
                "SELECT * FROM {FACT_TABLE} WHERE {}",
                date_filter(dates, false)
            ))
            .await?;
        let view = df.into_view();
        ctx.deregister_table(FACT_TABLE)?;
        ctx.register_table(FACT_TABLE, view)?;
    }
    Ok(ctx)
}

/// Builds incremental model `m`: the touched dates recomputed in `slice` and
/// merged into its published mart, or in full in `full` (first build, file
/// changed, `--full-refresh`, log cleaned up). The outer error is a store
/// failure; the inner one the model's own (reported as its result).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn build_incremental(
    full: &SessionContext,
    slice: Option<&SessionContext>,
    contexts: &[&SessionContext],
    lake: &Lake,
    m: &Model,
    opts: &RunOptions,
    plan: &IncrementalPlan,
    run_id: &str,
) -> Result<(Result<BuiltMart>, IncrementalInfo)> {
    let mode = plan
        .modes
        .get(&m.name)
        .cloned()
        .unwrap_or_else(|| Err("not planned".into()));
    let (after, slice, touched) = match (mode, slice, &plan.touched) {
        (Ok(after), Some(slice), Some(t)) => (after, slice, t),
        (mode, _, _) => {
            let info = IncrementalInfo {
                mode: "full",
                reason: mode.err().unwrap_or_else(|| "no touched dates".into()),
                partitions: Vec::new(),
                commits: Vec::new(),
            };
            let sql = m.render(&opts.rules);
            return Ok((
                build_table(full, contexts, lake, m, &sql, run_id).await,
                info,
            ));
        }
    };
    let info = IncrementalInfo {
        mode: "incremental",
        reason: format!(
            "fact table commits after version {after} up to {}",
            plan.upto
        ),
        partitions: touched.dates.iter().cloned().collect(),
        commits: touched
            .commits
            .iter()
            .copied()
            .filter(|v| *v > after)
            .collect(),
    };
    let built = merge(full, slice, contexts, lake, m, opts, &touched.dates).await;
    Ok((built, info))
}

/// `m` recomputed for `dates` in `slice`, staged to replace exactly those
/// partitions of its mart. The models downstream see the old mart without
/// `dates` plus the recomputed rows (a view: nothing else is read or written).
#[allow(clippy::too_many_arguments)]
async fn merge(
    full: &SessionContext,
    slice: &SessionContext,
    contexts: &[&SessionContext],
    lake: &Lake,
    m: &Model,
    opts: &RunOptions,
    dates: &BTreeSet<String>,
) -> Result<BuiltMart> {
    let err = |e: datafusion::error::DataFusionError| model_error(&m.name, e);
    let (schema, fresh) = compute(slice, m, &m.render(&opts.rules)).await?;
    let rows = fresh.iter().map(|b| b.num_rows() as u64).sum();
    let (new_name, old_name) = (
        format!("__txpipe_new_{}", m.name),
        format!("__txpipe_old_{}", m.name),
    );
    let table = MemTable::try_new(schema.clone(), vec![fresh.clone()]).map_err(err)?;
    full.register_table(new_name.as_str(), Arc::new(table))
        .map_err(err)?;
    crate::read::register_table(full, lake, &old_name, &mart_table(&m.name))
        .await
        .map_err(|e| model_error(&m.name, e))?;
    let cols: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("\"{}\"", f.name().replace('"', "\"\"")))
        .collect();
    let cols = cols.join(", ");
    let sql = format!(
        "SELECT {cols} FROM {old_name} WHERE {} UNION ALL SELECT {cols} FROM {new_name}",
        date_filter(dates, true)
    );
    let merged = full.sql(&sql).await.map(|df| df.into_view());
    let _ = full.deregister_table(new_name.as_str());
    let _ = full.deregister_table(old_name.as_str());
    let merged = merged.map_err(err)?;
    for c in contexts {
        let _ = c.deregister_table(m.name.as_str());
        c.register_table(m.name.as_str(), merged.clone())
            .map_err(err)?;
    }
    Ok(BuiltMart {
        rows,
        staged: StagedMart {
            model: m.name.clone(),
            schema,
            kind: Staged::Partitions {
                batches: fresh,
                replace: Replace::Partitions(dates.clone()),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_filters_quote_only_dates() {
        let dates: BTreeSet<String> = ["2026-11-01", "x'; DROP", "2026-11-03"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            date_filter(&dates, false),
            "event_date IN (DATE '2026-11-01', DATE '2026-11-03')"
        );
        assert_eq!(date_filter(&BTreeSet::new(), false), "FALSE");
        assert_eq!(date_filter(&BTreeSet::new(), true), "TRUE");
    }
}
