//! The lake as a SQL schema whose tables always read the newest commit.
//!
//! [`LakeSchema`] is the `public` schema the Postgres endpoint serves: the
//! lake's own tables (`fact_transaction`, `quarantine`, `dim_customer`,
//! `dim_merchant`, `fx_rate`) and every mart under `marts/` by its model name.
//! Each is a [`LiveTable`]: its schema is fixed when a statement is planned,
//! and every *execution* first makes sure it reads the table's newest
//! committed Delta snapshot (one `HEAD` of the next commit file; the log is
//! read forward when it exists), so a query started after a commit sees that
//! commit — also through a prepared statement planned before it — and never a
//! half-written batch.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::logstore::commit_uri_from_version;
use deltalake_core::DeltaTable;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::Mutex;

use crate::error::Result;
use crate::lake::Lake;
use crate::models::runner::{mart_table, MARTS};
use crate::read::LAKE_TABLES;
use crate::sink::delta::open;

/// The lake's tables and marts as one schema, names refreshed in the
/// background (see [`LakeSchema::refresh`]).
#[derive(Debug)]
pub struct LakeSchema {
    lake: Lake,
    /// Session settings the Delta scans take their defaults from.
    state: Arc<SessionState>,
    /// Table name → lake-relative folder, as last listed.
    names: RwLock<Vec<(String, String)>>,
    /// Tables opened so far: planning a statement updates them to the newest
    /// commit instead of reading their whole log again.
    open: Mutex<HashMap<String, Arc<LiveTable>>>,
}

impl LakeSchema {
    /// A schema over `lake`; call [`LakeSchema::refresh`] to list its tables.
    pub fn new(lake: Lake, state: SessionState) -> Self {
        LakeSchema {
            lake,
            state: Arc::new(state),
            names: RwLock::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The lake the tables are read from.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// [`LakeSchema::live`] for a name in the last listing only (no lookup
    /// in the lake for other names).
    ///
    /// # Errors
    /// The table's log is unreadable.
    pub async fn live_if_listed(&self, name: &str) -> DfResult<Option<Arc<LiveTable>>> {
        if self.folder(name).is_none() {
            return Ok(None);
        }
        self.live(name).await
    }

    /// The live table `name`, opened once and brought to the newest commit;
    /// reopened when its columns changed. `None` when there is no such table.
    ///
    /// # Errors
    /// The table's log is unreadable.
    pub async fn live(&self, name: &str) -> DfResult<Option<Arc<LiveTable>>> {
        let Some(rel) = self.candidate(name) else {
            return Ok(None);
        };
        let cached = self.open.lock().await.get(&rel).cloned();
        if let Some(live) = cached {
            if live.provider().await?.schema() == live.schema {
                return Ok(Some(live));
            }
        }
        let Some(table) = open(&self.lake, &rel).await.map_err(external)? else {
            self.open.lock().await.remove(&rel);
            return Ok(None);
        };
        let live = Arc::new(LiveTable::new(name, table, Arc::clone(&self.state)).await?);
        self.open.lock().await.insert(rel, Arc::clone(&live));
        Ok(Some(live))
    }

    /// Lists the lake's tables and marts again (a new mart appears in
    /// `pg_catalog` after the next refresh; a query naming it works at once).
    ///
    /// # Errors
    /// The store failed.
    pub async fn refresh(&self) -> Result<()> {
        let mut found = Vec::new();
        for name in LAKE_TABLES {
            if has_log(&self.lake, name).await? {
                found.push((name.to_string(), name.to_string()));
            }
        }
        for model in mart_names(&self.lake).await? {
            let rel = mart_table(&model);
            if has_log(&self.lake, &rel).await? && !found.iter().any(|(n, _)| *n == model) {
                found.push((model, rel));
            }
        }
        found.sort();
        if let Ok(mut names) = self.names.write() {
            *names = found;
        }
        Ok(())
    }

    /// Refreshes the names every `every` until the returned task is aborted.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                // A failed listing keeps the last names; the next one retries.
                let _ = me.refresh().await;
                tokio::time::sleep(every).await;
            }
        })
    }

    fn folder(&self, name: &str) -> Option<String> {
        let names = self.names.read().ok()?;
        names
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, rel)| rel.clone())
    }

    /// The folder a table name maps to, listed or not: a lake table's own
    /// folder, or a mart's.
    fn candidate(&self, name: &str) -> Option<String> {
        if let Some(rel) = self.folder(name) {
            return Some(rel);
        }
        if LAKE_TABLES.contains(&name) {
            return Some(name.to_string());
        }
        let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        plain.then(|| mart_table(name))
    }
}

/// Whether `rel` holds a Delta log (its first object is enough).
async fn has_log(lake: &Lake, rel: &str) -> Result<bool> {
    let prefix = lake.path(&format!("{}/_delta_log", rel.trim_matches('/')));
    match lake.store().list(Some(&prefix)).next().await {
        None | Some(Err(object_store::Error::NotFound { .. })) => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(crate::error::Error::ObjectStore {
            context: format!("listing {rel}"),
            source: e,
        }),
    }
}

/// The folder names directly under `marts/`.
async fn mart_names(lake: &Lake) -> Result<BTreeSet<String>> {
    let listed = match lake
        .store()
        .list_with_delimiter(Some(&lake.path(MARTS)))
        .await
    {
        Ok(l) => l,
        Err(object_store::Error::NotFound { .. }) => return Ok(BTreeSet::new()),
        Err(e) => {
            return Err(crate::error::Error::ObjectStore {
                context: format!("listing {MARTS}"),
                source: e,
            })
        }
    };
    Ok(listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_string))
        .collect())
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.names
            .read()
            .map(|n| n.iter().map(|(name, _)| name.clone()).collect())
            .unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(self.live(name).await?.map(|t| t as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.folder(name).is_some()
    }
}

fn external(e: crate::error::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A Delta table that reads its newest committed snapshot at every scan.
#[derive(Debug)]
pub struct LiveTable {
    name: String,
    current: Mutex<Current>,
    schema: SchemaRef,
    /// The provider of the snapshot the schema came from (filter pushdown).
    planned: Arc<dyn TableProvider>,
    state: Arc<SessionState>,
    /// The `_delta_log` folder of a table on a local disk: its freshness is
    /// checked with a `stat` in place instead of the object store's `HEAD`
    /// (which hands every call to a blocking thread and back).
    local_log: Option<PathBuf>,
}

impl LiveTable {
    async fn new(name: &str, table: DeltaTable, state: Arc<SessionState>) -> DfResult<Self> {
        let planned = table
            .table_provider()
            .with_session(Arc::clone(&state))
            .await?;
        let local_log = match table.table_url() {
            url if url.scheme() == "file" => url.to_file_path().ok().map(|p| p.join("_delta_log")),
            _ => None,
        };
        Ok(LiveTable {
            local_log,
            name: name.to_string(),
            schema: planned.schema(),
            current: Mutex::new(Current {
                provider: Some(Arc::clone(&planned)),
                table,
            }),
            planned,
            state,
        })
    }

    /// The provider of the newest committed snapshot.
    ///
    /// Freshness costs one `HEAD` of the next commit's log file (a `stat` on a
    /// local disk, a few microseconds): every Delta
    /// commit writes `_delta_log/<version>.json` atomically, so while the
    /// file after the loaded version does not exist, the loaded snapshot is
    /// the newest and its provider is reused. Otherwise (or when the check
    /// itself fails) the log is read forward from the loaded version.
    async fn provider(&self) -> DfResult<Arc<dyn TableProvider>> {
        let mut current = self.current.lock().await;
        if let (Some(provider), Some(version)) = (&current.provider, current.table.version()) {
            let next = version + 1;
            let newest = match &self.local_log {
                Some(dir) => matches!(
                    std::fs::symlink_metadata(dir.join(format!("{next:020}.json"))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound
                ),
                None => {
                    let store = current.table.log_store().object_store(None);
                    let uri = commit_uri_from_version(Some(next));
                    matches!(
                        store.head(&uri).await,
                        Err(object_store::Error::NotFound { .. })
                    )
                }
            };
            if newest {
                return Ok(Arc::clone(provider));
            }
        }
        current.provider = None;
        current
            .table
            .update_incremental(None)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let provider = current
            .table
            .table_provider()
            .with_session(Arc::clone(&self.state))
            .await?;
        current.provider = Some(Arc::clone(&provider));
        Ok(provider)
    }

    /// The newest committed snapshot's version and data files (path within
    /// the table, size in bytes); `None` while that version is `known`.
    ///
    /// # Errors
    /// The log is unreadable.
    pub(crate) async fn files_after(
        &self,
        known: Option<u64>,
    ) -> DfResult<Option<(u64, Vec<(String, u64)>)>> {
        self.provider().await?;
        let current = self.current.lock().await;
        let Some(version) = current.table.version() else {
            return Ok(None);
        };
        if known == Some(version) {
            return Ok(None);
        }
        let snapshot = current
            .table
            .snapshot()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let files = snapshot
            .log_data()
            .iter()
            .map(|f| (f.path().into_owned(), u64::try_from(f.size()).unwrap_or(0)))
            .collect();
        Ok(Some((version, files)))
    }

    /// The provider of the newest committed snapshot, which must still have
    /// the columns the statement was planned with.
    async fn newest(&self) -> DfResult<Arc<dyn TableProvider>> {
        let provider = self.provider().await?;
        if provider.schema() != self.schema {
            return Err(DataFusionError::Plan(format!(
                "table {} changed its columns since this statement was prepared; prepare it again",
                self.name
            )));
        }
        Ok(provider)
    }
}

/// A live table's loaded snapshot and the provider built over it.
#[derive(Debug)]
struct Current {
    table: DeltaTable,
    /// `None` until built for the loaded version.
    provider: Option<Arc<dyn TableProvider>>,
}

#[async_trait]
impl TableProvider for LiveTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.planned.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.newest()
            .await?
            .scan(state, projection, filters, limit)
            .await
    }
}
