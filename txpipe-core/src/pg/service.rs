//! Query handling with bounds: every statement runs in its own DataFusion
//! context with its own memory pool, under a deadline that covers planning
//! *and* streaming the result, and a cancel request stops it mid-stream.
//!
//! `datafusion_postgres::DfSessionService` does the SQL work (parsing with
//! its Postgres compatibility rewrites, `pg_catalog`, hooks, encoding); this
//! layer adds what a shared server needs on top: its statement timeout only
//! covers planning, and all connections share one session (one memory pool).
//!
//! A statement's service is leased from a pool of idle ones: building one
//! (datafusion-postgres tokenizes its rewrite table, DataFusion copies the
//! session state) was most of a small query's time. A lease goes back to the
//! pool only when its memory pool is empty again and no statement changed its
//! session (`SET`), so a statement never runs with another's settings or
//! reservations.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::Schema;
use datafusion::common::ParamValues;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, SendableRowStream,
};
use datafusion_postgres::pgwire::api::store::{Entry, PortalStore};
use datafusion_postgres::pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, DEFAULT_NAME,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::extendedquery::{
    Bind, Describe, Parse, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT,
};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream};
use tokio::time::Instant;

use super::api;
use super::point_get::PointGet;
use super::replies;
use super::rows::text_rows;

/// Per-statement bounds.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Longest a statement may run, result streaming included; a client's
    /// `SET statement_timeout` can only lower it.
    pub timeout: Duration,
    /// Memory one statement's operators may hold (DataFusion memory pool);
    /// `None` for no limit.
    pub memory: Option<usize>,
}

/// Client metadata key datafusion-postgres keeps `SET statement_timeout` in.
const CLIENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// SQLSTATE `query_canceled`.
const QUERY_CANCELED: &str = "57014";

/// Idle statement services kept for reuse.
const MAX_IDLE: usize = 16;

/// The handler behind both query protocols.
pub(crate) struct LakeService {
    /// Shared session: catalog, settings, the extended protocol's planner.
    base: Arc<SessionContext>,
    shared: Session,
    hooks: Vec<Arc<dyn QueryHook>>,
    /// The simple protocol's parser, with datafusion-postgres' rewrites.
    parser: PostgresCompatibilityParser,
    limits: QueryLimits,
    /// Statement sessions (each with a memory pool of its own) not in use.
    idle: Arc<Mutex<Vec<Session>>>,
    /// Point lookups of a customer's newest transactions, from an index.
    point_get: Option<Arc<PointGet>>,
}

/// What a statement runs with.
#[derive(Clone)]
struct Session {
    /// The extended protocol's execution.
    service: Arc<DfSessionService>,
    /// The simple protocol's: session and hooks.
    ctx: Arc<SessionContext>,
    hooks: Arc<Vec<Arc<dyn QueryHook>>>,
    /// Set by [`ChangeWatch`] when a statement may have changed the
    /// session's settings; `None` for the shared session, never pooled.
    changed: Option<Arc<AtomicBool>>,
}

impl Session {
    fn new(ctx: Arc<SessionContext>, hooks: Vec<Arc<dyn QueryHook>>) -> Self {
        Session {
            service: Arc::new(DfSessionService::new_with_hooks(
                Arc::clone(&ctx),
                hooks.clone(),
            )),
            ctx,
            hooks: Arc::new(hooks),
            changed: None,
        }
    }

    /// Whether it can serve another statement: a pooled session no
    /// statement changed, whose memory pool is empty (a finished statement's
    /// tasks are aborted asynchronously).
    fn reusable(&self) -> bool {
        self.changed
            .as_ref()
            .is_some_and(|c| !c.load(Ordering::Acquire))
            && self.ctx.runtime_env().memory_pool.reserved() == 0
    }
}

/// A statement's session; a pooled one goes back to the idle list when the
/// lease is dropped, if it is as clean as it was built.
pub(crate) struct Lease {
    session: Session,
    idle: Option<Arc<Mutex<Vec<Session>>>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(idle) = &self.idle else {
            return;
        };
        if self.session.reusable() {
            if let Ok(mut idle) = idle.lock() {
                if idle.len() < MAX_IDLE {
                    idle.push(self.session.clone());
                }
            }
        }
    }
}

/// `SET` variables datafusion-postgres keeps in the connection's metadata.
const CLIENT_SETTINGS: [&str; 7] = [
    "statement_timeout",
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "application_name",
    "extra_float_digits",
    "search_path",
];

/// A hook that handles nothing and marks its session changed when a
/// statement other than a query or transaction control reaches it (`SET`
/// reaches DataFusion's session config or runtime).
struct ChangeWatch {
    changed: Arc<AtomicBool>,
}

impl ChangeWatch {
    fn see(&self, statement: &Statement) {
        let harmless = match statement {
            Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::ShowVariable { .. } => true,
            // Settings datafusion-postgres keeps per connection (drivers
            // send them on connect); any other SET may reach DataFusion.
            Statement::Set(Set::SingleAssignment { variable, .. }) => {
                CLIENT_SETTINGS.contains(&variable.to_string().to_ascii_lowercase().as_str())
            }
            _ => false,
        };
        if !harmless {
            self.changed.store(true, Ordering::Release);
        }
    }
}

#[async_trait]
impl QueryHook for ChangeWatch {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.see(statement);
        None
    }

    async fn handle_extended_parse_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // Parsing runs on the shared service; the execution below is what
        // touches the statement's session.
        None
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.see(statement);
        None
    }
}

impl LakeService {
    pub(crate) fn new(
        base: Arc<SessionContext>,
        hooks: Vec<Arc<dyn QueryHook>>,
        limits: QueryLimits,
        point_get: Option<Arc<PointGet>>,
    ) -> Self {
        LakeService {
            point_get,
            shared: Session::new(Arc::clone(&base), hooks.clone()),
            base,
            hooks,
            parser: PostgresCompatibilityParser::new(),
            limits,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The session a statement runs with: without a memory limit the shared
    /// one, else one over the same catalog and settings with a memory pool of
    /// its own, from the idle pool or new.
    fn for_statement(&self) -> PgWireResult<Lease> {
        let Some(bytes) = self.limits.memory else {
            return Ok(Lease {
                session: self.shared.clone(),
                idle: None,
            });
        };
        let reused = self
            .idle
            .lock()
            .ok()
            .and_then(|mut idle| idle.pop())
            .filter(Session::reusable);
        let session = match reused {
            Some(s) => s,
            None => {
                // The base's object stores, spill files and caches (Parquet
                // footers and page indexes stay cached across statements),
                // with a memory pool of this statement's own.
                let runtime = RuntimeEnvBuilder::from_runtime_env(&self.base.runtime_env())
                    .with_memory_limit(bytes, 1.0)
                    .build_arc()
                    .map_err(api)?;
                let state = SessionStateBuilder::new_from_existing(self.base.state())
                    .with_runtime_env(runtime)
                    .build();
                let changed = Arc::new(AtomicBool::new(false));
                let mut hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(ChangeWatch {
                    changed: Arc::clone(&changed),
                })];
                hooks.extend(self.hooks.iter().cloned());
                Session {
                    changed: Some(changed),
                    ..Session::new(Arc::new(SessionContext::new_with_state(state)), hooks)
                }
            }
        };
        Ok(Lease {
            session,
            idle: Some(Arc::clone(&self.idle)),
        })
    }

    /// What one statement runs with: its deadline, the connection's cancel
    /// handle and a service with its own memory pool.
    fn start<C: ClientInfo>(
        &self,
        client: &C,
    ) -> PgWireResult<(Instant, Option<Arc<Arc<ConnectionHandle>>>, Lease)> {
        let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
        Ok((self.deadline(client), handle, self.for_statement()?))
    }

    /// The simple protocol as datafusion-postgres runs it (parse with its
    /// rewrites, hooks, then DataFusion), with our row encoder for results.
    async fn simple<C>(
        &self,
        lease: &Lease,
        client: &mut C,
        query: &str,
    ) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.parse(query).map_err(api)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut results = Vec::with_capacity(statements.len());
        'statement: for statement in statements {
            for hook in lease.session.hooks.iter() {
                if let Some(result) = hook
                    .handle_simple_query(&statement, &lease.session.ctx, client)
                    .await
                {
                    results.push(result?);
                    continue 'statement;
                }
            }
            if let Some(point_get) = &self.point_get {
                if let Some(rows) = point_get.simple(&statement, client).await? {
                    results.push(rows);
                    continue 'statement;
                }
            }
            let df = lease
                .session
                .ctx
                .sql(&statement.to_string())
                .await
                .map_err(api)?;
            let fields = pg_fields(client, df.schema().as_arrow(), &Format::UnifiedText)?;
            let batches = df.execute_stream().await.map_err(api)?;
            results.push(Response::Query(QueryResponse::new(
                Arc::clone(&fields),
                text_rows(fields, batches),
            )));
        }
        Ok(results)
    }

    fn deadline<C: ClientInfo>(&self, client: &C) -> Instant {
        let client_limit = client
            .metadata()
            .get(CLIENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        let limit = client_limit.map_or(self.limits.timeout, |c| c.min(self.limits.timeout));
        Instant::now() + limit
    }
}

/// The row description of a result with `schema` in `format`, with the
/// client's DateStyle, bytea_output, extra_float_digits… as
/// datafusion-postgres passes them.
pub(super) fn pg_fields<C: ClientInfo>(
    client: &C,
    schema: &Schema,
    format: &Format,
) -> PgWireResult<Arc<Vec<FieldInfo>>> {
    let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
    Ok(Arc::new(arrow_schema_to_pg_fields(
        schema,
        format,
        Some(options),
    )?))
}

fn timeout_error() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        QUERY_CANCELED.to_string(),
        "canceling statement due to statement timeout".to_string(),
    )))
}

/// What stops a running result: the deadline, or the client's cancel request.
fn stopper(
    deadline: Instant,
    handle: Option<Arc<Arc<ConnectionHandle>>>,
) -> BoxFuture<'static, PgWireError> {
    async move {
        let cancelled = async move {
            match handle {
                // The receiver is taken when the result is first polled, after
                // pgwire dropped the one it watched while planning.
                Some(h) => match h.start_query().await.await {
                    Ok(()) => {}
                    Err(_) => futures::future::pending::<()>().await,
                },
                None => futures::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => timeout_error(),
            _ = cancelled => PgWireError::QueryCanceled,
        }
    }
    .boxed()
}

/// A result stream that ends with an error when its stopper fires; dropping
/// the inner stream stops DataFusion's work on it.
struct Bounded {
    rows: Option<SendableRowStream>,
    stop: BoxFuture<'static, PgWireError>,
    /// The statement's service, released once the rows are gone (dropped
    /// after `rows`: fields drop in order).
    _lease: Option<Lease>,
}

impl Stream for Bounded {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.rows.is_none() {
            return Poll::Ready(None);
        }
        if let Poll::Ready(err) = self.stop.as_mut().poll(cx) {
            self.rows = None;
            return Poll::Ready(Some(Err(err)));
        }
        match self.rows.as_mut().map(|r| r.as_mut().poll_next(cx)) {
            Some(Poll::Ready(None)) | None => {
                self.rows = None;
                Poll::Ready(None)
            }
            Some(other) => other,
        }
    }
}

fn bound(
    response: Response,
    deadline: Instant,
    handle: Option<Arc<Arc<ConnectionHandle>>>,
    lease: Option<Lease>,
) -> Response {
    match response {
        Response::Query(mut q) => {
            let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
            q.data_rows = Box::pin(Bounded {
                rows: Some(rows),
                stop: stopper(deadline, handle),
                _lease: lease,
            });
            Response::Query(q)
        }
        other => other,
    }
}

#[async_trait]
impl SimpleQueryHandler for LakeService {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (deadline, handle, lease) = self.start(client)?;
        let planned = tokio::time::timeout_at(deadline, self.simple(&lease, client, query))
            .await
            .map_err(|_| timeout_error())??;
        // Results stream one after another: the last query's keeps the lease.
        let last_query = planned
            .iter()
            .rposition(|r| matches!(r, Response::Query(_)));
        let mut lease = Some(lease);
        Ok(planned
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let keep = if Some(i) == last_query {
                    lease.take()
                } else {
                    None
                };
                bound(r, deadline, handle.clone(), keep)
            })
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for LakeService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.shared.service.query_parser()
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        replies::parse(client, message, self.query_parser()).await
    }

    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        replies::bind(client, message).await
    }

    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(statement)) => {
                    let described = self.do_describe_statement(client, &statement).await?;
                    replies::describe(client, &described).await
                }
                Some(Entry::Empty) => {
                    replies::describe(client, &DescribeStatementResponse::no_data()).await
                }
                None => Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => {
                    let described = self.do_describe_portal(client, &portal).await?;
                    replies::describe(client, &described).await
                }
                Some(Entry::Empty) => {
                    replies::describe(client, &DescribePortalResponse::no_data()).await
                }
                None => Err(PgWireError::PortalNotFound(name.to_owned())),
            },
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (deadline, handle, lease) = self.start(client)?;
        let looked_up = match &self.point_get {
            Some(point_get) => {
                tokio::time::timeout_at(deadline, point_get.extended(client, portal))
                    .await
                    .map_err(|_| timeout_error())??
            }
            None => None,
        };
        if let Some(rows) = looked_up {
            return Ok(bound(rows, deadline, handle, None));
        }
        let planned = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(&*lease.session.service, client, portal, max_rows),
        )
        .await
        .map_err(|_| timeout_error())??;
        Ok(bound(planned, deadline, handle, Some(lease)))
    }
}
