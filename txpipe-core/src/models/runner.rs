//! Builds models in dependency order over the lake and publishes their marts.
//!
//! Views are registered as DataFusion views, inlined into whatever reads them
//! (so projections and filters push down to the Parquet scan). Tables are
//! computed, encoded as one zstd Parquet file and staged under
//! `_txpipe/staging/marts/<run>/`; [`ModelsRun::publish`] then moves each
//! into `marts/<model>/` and replaces the mart's Delta table with it in one
//! overwrite commit, and deletes the replaced file at once. So a Delta
//! reader never sees a half-written mart, and a plain
//! `read_parquet('LAKE/marts/<model>/*.parquet')` reads exactly the current one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::Serialize;

use super::graph;
use super::incremental::{fact_version, ModelState};
use super::incremental_build::{build_incremental, slice_context, IncrementalPlan};
use super::model::{Materialized, Model};
use super::project::Project;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::read::register_lake;
use crate::schema::EVENT_DATE;
use crate::sink::delta::{replace_with_file, TableSpec};
use crate::sink::file_stats::delta_stats;
use crate::sink::parquet::encode;
use crate::sink::replace_where::{replace_partitions, Replace};

/// Folder of the published marts.
pub const MARTS: &str = "marts";

/// Outcome of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelStatus {
    /// Built (a table) or registered (a view).
    Ok,
    /// Its SQL failed; the message says why.
    Error,
    /// Not built because a model it reads failed.
    Skipped,
}

/// What happened to one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    /// Model name.
    pub name: String,
    /// `table` or `view`.
    pub materialized: &'static str,
    /// Ok, error or skipped.
    pub status: ModelStatus,
    /// Rows of a table model.
    pub rows: Option<u64>,
    /// Parquet bytes of a table model.
    pub bytes: Option<u64>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// An incremental model: what was recomputed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalInfo>,
}

/// How an incremental model was maintained in a run.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalInfo {
    /// `incremental` (only the touched dates) or `full`.
    pub mode: &'static str,
    /// Why a full build, or which fact table versions were read.
    pub reason: String,
    /// The `event_date`s recomputed (incremental mode).
    pub partitions: Vec<String>,
    /// The fact table commits that touched them.
    pub commits: Vec<u64>,
}

/// Options of a models run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Models to build (empty: all). Their upstream views are always set up;
    /// upstream tables not selected are read from their published marts.
    pub select: Vec<String>,
    /// `txpipe run`: data tests read every partition, not only the event
    /// dates this run recomputed (`--full`).
    pub full_tests: bool,
    /// Fraud rule names, for `rule_hits()`.
    pub rules: Vec<String>,
    /// Target partitions of DataFusion (default: one per core).
    pub partitions: Option<usize>,
    /// The daily job compacts the fact and quarantine tables before it
    /// builds the models (so a long-running lake stays fast).
    pub compact: bool,
    /// Rebuild incremental models in full (dbt's `--full-refresh`).
    pub full_refresh: bool,
}

/// A finished build: results, staged marts and the session that can query them.
pub struct ModelsRun {
    /// Run id (also the staging folder's name).
    pub run_id: String,
    /// One result per model considered, in build order.
    pub results: Vec<ModelResult>,
    staged: Vec<StagedMart>,
    ctx: SessionContext,
    /// Incremental state to record per model once published (`None`: the
    /// model is a plain table now; its state is forgotten).
    states: Vec<(String, Option<ModelState>)>,
    /// The event dates recomputed, when every incremental model of the run
    /// was maintained incrementally (`None`: something was built in full).
    touched: Option<BTreeSet<String>>,
}

/// A mart built and waiting for the audit.
#[derive(Debug, Clone)]
pub(crate) struct StagedMart {
    pub(crate) model: String,
    pub(crate) schema: SchemaRef,
    pub(crate) kind: Staged,
}

/// How a built mart waits for its publication.
#[derive(Debug, Clone)]
pub(crate) enum Staged {
    /// A table model: one Parquet file under the run's staging folder, moved
    /// into the mart and committed as its whole content.
    File {
        path: String,
        bytes: u64,
        stats: String,
    },
    /// An incremental model (partitioned by `event_date`): rows kept in
    /// memory until the audit passed, then written as the partitions
    /// `replace` names, in one commit (Delta's replaceWhere).
    Partitions {
        batches: Vec<RecordBatch>,
        replace: Replace,
    },
}

impl std::fmt::Debug for ModelsRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelsRun")
            .field("run_id", &self.run_id)
            .field("results", &self.results)
            .finish()
    }
}

/// Lake-relative folder of a model's mart (a Delta table).
pub fn mart_table(model: &str) -> String {
    format!("{MARTS}/{model}")
}

fn mart_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_created_by(format!("txpipe {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A DataFusion session over the lake's tables.
///
/// # Errors
/// The store failed or a table could not be registered.
pub async fn lake_context(lake: &Lake, partitions: Option<usize>) -> Result<SessionContext> {
    let mut config = SessionConfig::new();
    if let Some(p) = partitions {
        config = config.with_target_partitions(p.max(1));
    }
    let ctx = SessionContext::new_with_config(config);
    super::functions::register(&ctx);
    register_lake(&ctx, lake).await?;
    Ok(ctx)
}

pub(crate) fn model_error(model: &str, e: impl std::fmt::Display) -> Error {
    Error::Model {
        model: model.to_string(),
        message: e.to_string(),
    }
}

/// Registers a published mart as a table; `false` when it was never built.
///
/// # Errors
/// The store failed or the mart is not readable Parquet.
pub async fn register_mart(ctx: &SessionContext, lake: &Lake, model: &str) -> Result<bool> {
    crate::read::register_table(ctx, lake, model, &mart_table(model))
        .await
        .map_err(|e| model_error(model, e))
}

/// Registers a view model in `ctx` (inlined into the models that read it).
async fn register_view(ctx: &SessionContext, model: &Model, rules: &[String]) -> Result<()> {
    let df = ctx
        .sql(&model.render(rules))
        .await
        .map_err(|e| model_error(&model.name, e))?;
    ctx.register_table(model.name.as_str(), df.into_view())
        .map_err(|e| model_error(&model.name, e))?;
    Ok(())
}

/// Sets up every model for querying without building anything: views from
/// their SQL, tables from their published marts. Returns the models that are
/// not available (tables never built, and views reading them).
///
/// # Errors
/// The store failed or a view's SQL does not plan.
pub async fn register_models(
    ctx: &SessionContext,
    lake: &Lake,
    project: &Project,
    rules: &[String],
) -> Result<BTreeSet<String>> {
    let mut missing = BTreeSet::new();
    for m in &project.models {
        if m.refs.iter().any(|r| missing.contains(r)) {
            missing.insert(m.name.clone());
            continue;
        }
        match m.materialized {
            Materialized::View => register_view(ctx, m, rules).await?,
            Materialized::Table | Materialized::Incremental => {
                if !register_mart(ctx, lake, &m.name).await? {
                    missing.insert(m.name.clone());
                }
            }
        }
    }
    Ok(missing)
}

/// Builds the selected models (all by default) in dependency order and stages
/// their marts; call [`ModelsRun::publish`] to make them visible.
///
/// A failing model is reported (its dependents are skipped) and the others
/// still build. `progress` is called after each model.
///
/// # Errors
/// An unknown selected model, an upstream table that was never built, or a
/// store failure. SQL errors of a model are results, not errors.
pub async fn build_models(
    lake: &Lake,
    project: &Project,
    opts: &RunOptions,
    progress: &mut (dyn FnMut(&ModelResult) + Send),
) -> Result<ModelsRun> {
    for s in &opts.select {
        if project.model(s).is_none() {
            return Err(Error::Project(format!(
                "--select {s}: no such model (models: {})",
                project
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    // Read before the tables are registered: their snapshots are at least this new.
    let fact_now = fact_version(lake).await?;
    let ctx = lake_context(lake, opts.partitions).await?;
    let order: Vec<String> = project.models.iter().map(|m| m.name.clone()).collect();
    let selected: BTreeSet<String> = if opts.select.is_empty() {
        order.iter().cloned().collect()
    } else {
        opts.select.iter().cloned().collect()
    };
    let needed = graph::upstream_closure(&project.models, &order, &selected);
    let plan = IncrementalPlan::new(lake, project, &selected, opts, fact_now).await?;
    let slice = match &plan.touched {
        Some(t) => Some(slice_context(&ctx, &t.dates).await?),
        None => None,
    };
    let contexts: Vec<&SessionContext> = std::iter::once(&ctx).chain(slice.as_ref()).collect();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut results: Vec<ModelResult> = Vec::new();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut staged = Vec::new();
    let mut states = Vec::new();
    for m in project.models.iter().filter(|m| needed.contains(&m.name)) {
        let build = selected.contains(&m.name);
        if !build {
            // Upstream of the selection: views are set up, tables read as published.
            match m.materialized {
                Materialized::View => {
                    for c in &contexts {
                        register_view(c, m, &opts.rules).await?;
                    }
                }
                Materialized::Table | Materialized::Incremental => {
                    let mut found = true;
                    for c in &contexts {
                        found &= register_mart(c, lake, &m.name).await?;
                    }
                    if !found {
                        return Err(Error::Project(format!(
                            "model {} has not been built yet and the selection reads it; \
                             select it too or run all models",
                            m.name
                        )));
                    }
                }
            }
            continue;
        }
        let started = Instant::now();
        let mut result = ModelResult {
            name: m.name.clone(),
            materialized: m.materialized.as_str(),
            status: ModelStatus::Ok,
            rows: None,
            bytes: None,
            duration_ms: 0,
            error: None,
            incremental: None,
        };
        if let Some(bad) = m.refs.iter().find(|r| failed.contains(*r)) {
            result.status = ModelStatus::Skipped;
            result.error = Some(format!("upstream model {bad} failed"));
            failed.insert(m.name.clone());
        } else {
            let outcome = match m.materialized {
                Materialized::View => {
                    let mut r = Ok(None);
                    for c in &contexts {
                        if let Err(e) = register_view(c, m, &opts.rules).await {
                            r = Err(e);
                        }
                    }
                    r
                }
                Materialized::Table => {
                    states.push((m.name.clone(), None));
                    let sql = m.render(&opts.rules);
                    build_table(&ctx, &contexts, lake, m, &sql, &run_id)
                        .await
                        .map(Some)
                }
                Materialized::Incremental => {
                    let (built, info) = build_incremental(
                        &ctx,
                        slice.as_ref(),
                        &contexts,
                        lake,
                        m,
                        opts,
                        &plan,
                        &run_id,
                    )
                    .await?;
                    result.incremental = Some(info);
                    if built.is_ok() {
                        states.push((
                            m.name.clone(),
                            fact_now.map(|v| ModelState {
                                fact_version: v,
                                fingerprint: m.fingerprint(&opts.rules),
                            }),
                        ));
                    }
                    built.map(Some)
                }
            };
            match outcome {
                Ok(Some(mart)) => {
                    result.rows = Some(mart.rows);
                    if let Staged::File { bytes, .. } = &mart.staged.kind {
                        result.bytes = Some(*bytes);
                    }
                    staged.push(mart.staged);
                }
                Ok(None) => {}
                Err(e) => {
                    result.status = ModelStatus::Error;
                    result.error = Some(match e {
                        Error::Model { message, .. } => message,
                        other => other.to_string(),
                    });
                    failed.insert(m.name.clone());
                }
            }
        }
        result.duration_ms = started.elapsed().as_millis() as u64;
        progress(&result);
        results.push(result);
    }
    let all_incremental = results
        .iter()
        .filter_map(|r| r.incremental.as_ref())
        .all(|i| i.mode == "incremental");
    let touched = match &plan.touched {
        Some(t) if all_incremental && !opts.full_refresh => Some(t.dates.clone()),
        _ => None,
    };
    Ok(ModelsRun {
        run_id,
        results,
        staged,
        ctx,
        states,
        touched,
    })
}

/// A built table model: its rows (for an incremental one: the rows
/// recomputed) and what waits for publication.
pub(crate) struct BuiltMart {
    pub(crate) rows: u64,
    pub(crate) staged: StagedMart,
}

/// Runs `sql` in `ctx`: the schema and the rows.
pub(crate) async fn compute(
    ctx: &SessionContext,
    m: &Model,
    sql: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let df = ctx.sql(sql).await.map_err(|e| model_error(&m.name, e))?;
    let declared: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches: Vec<RecordBatch> = df.collect().await.map_err(|e| model_error(&m.name, e))?;
    let schema = batches.first().map_or(declared, RecordBatch::schema);
    Ok((schema, batches))
}

/// Computes a table model's `sql` in `ctx`, stages it (a Parquet file; an
/// incremental model's rows, to replace its whole partitioned mart) and
/// registers the result in memory in every one of `contexts` for the models
/// downstream.
pub(crate) async fn build_table(
    ctx: &SessionContext,
    contexts: &[&SessionContext],
    lake: &Lake,
    m: &Model,
    sql: &str,
    run_id: &str,
) -> Result<BuiltMart> {
    let (schema, batches) = compute(ctx, m, sql).await?;
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let table = Arc::new(
        MemTable::try_new(schema.clone(), vec![batches.clone()])
            .map_err(|e| model_error(&m.name, e))?,
    );
    for c in contexts {
        let _ = c.deregister_table(m.name.as_str());
        c.register_table(m.name.as_str(), table.clone())
            .map_err(|e| model_error(&m.name, e))?;
    }
    if m.materialized == Materialized::Incremental {
        return Ok(BuiltMart {
            rows,
            staged: StagedMart {
                model: m.name.clone(),
                schema,
                kind: Staged::Partitions {
                    batches,
                    replace: Replace::All,
                },
            },
        });
    }
    let data = encode(&schema, &batches, &mart_properties())?;
    let bytes = data.len() as u64;
    let stats = delta_stats(&batches);
    let path = format!("_txpipe/staging/{MARTS}/{run_id}/{}.parquet", m.name);
    lake.put(&path, Bytes::from(data)).await?;
    Ok(BuiltMart {
        rows,
        staged: StagedMart {
            model: m.name.clone(),
            schema,
            kind: Staged::File { path, bytes, stats },
        },
    })
}

impl ModelsRun {
    /// The session with the lake's tables and this run's models registered
    /// (tests run here before the marts are published).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The event dates this run recomputed, when every incremental model was
    /// maintained incrementally (`None`: a model was built in full, or the
    /// run had no incremental model): the partitions the daily job's data
    /// tests read by default.
    pub fn touched_dates(&self) -> Option<&BTreeSet<String>> {
        self.touched.as_ref()
    }

    /// True when every model built.
    pub fn ok(&self) -> bool {
        self.results.iter().all(|r| r.status == ModelStatus::Ok)
    }

    /// Publishes the staged marts of the models that built.
    ///
    /// # Errors
    /// The store failed (marts already moved stay published; the others stay staged).
    pub async fn publish(&mut self, lake: &Lake) -> Result<Vec<String>> {
        let mut published = Vec::new();
        for mart in std::mem::take(&mut self.staged) {
            let table = mart_table(&mart.model);
            let spec = TableSpec::new(mart.schema.clone());
            match mart.kind {
                Staged::File { path, bytes, stats } => {
                    let name = format!("part-{}.parquet", uuid::Uuid::new_v4());
                    lake.rename(&path, &format!("{table}/{name}")).await?;
                    replace_with_file(lake, &table, &spec, name, bytes, stats).await?;
                }
                Staged::Partitions { batches, replace } => {
                    replace_partitions(lake, &table, &spec, EVENT_DATE, batches, &replace).await?;
                }
            }
            published.push(mart.model);
        }
        for (model, state) in std::mem::take(&mut self.states) {
            if !published.contains(&model) {
                continue;
            }
            match state {
                Some(s) => s.write(lake, &model).await?,
                None => ModelState::forget(lake, &model).await?,
            }
        }
        self.discard(lake).await?;
        Ok(published)
    }

    /// Drops the staged marts that were not published (write-audit-publish:
    /// the audit failed, readers keep the previous marts).
    ///
    /// # Errors
    /// The store failed.
    pub async fn discard(&mut self, lake: &Lake) -> Result<()> {
        self.staged.clear();
        let folder = format!("_txpipe/staging/{MARTS}/{}", self.run_id);
        for o in lake.list(&folder).await? {
            lake.delete(&lake.relative(&o.location)).await?;
        }
        Ok(())
    }
}
