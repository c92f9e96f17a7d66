//! Query handling with bounds: every statement runs in its own DataFusion
//! context with its own memory pool, under a deadline that covers planning
//! *and* streaming the result, and a cancel request stops it mid-stream.
//!
//! `datafusion_postgres::DfSessionService` does the SQL work (parsing with
//! its Postgres compatibility rewrites, `pg_catalog`, hooks, encoding); this
//! layer adds what a shared server needs on top: its statement timeout only
//! covers planning, and all connections share one session (one memory pool).

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::results::{Response, SendableRowStream};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::DataRow;
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use datafusion_postgres::{DfSessionService, Parser, QueryHook};
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream};
use tokio::time::Instant;

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

/// The handler behind both query protocols.
pub(crate) struct LakeService {
    /// Shared session: catalog, settings, the extended protocol's planner.
    base: Arc<SessionContext>,
    shared: DfSessionService,
    hooks: Vec<Arc<dyn QueryHook>>,
    limits: QueryLimits,
}

impl LakeService {
    pub(crate) fn new(
        base: Arc<SessionContext>,
        hooks: Vec<Arc<dyn QueryHook>>,
        limits: QueryLimits,
    ) -> Self {
        LakeService {
            shared: DfSessionService::new_with_hooks(Arc::clone(&base), hooks.clone()),
            base,
            hooks,
            limits,
        }
    }

    /// A service over the same catalog and settings with a memory pool of
    /// its own (one per statement).
    fn for_statement(&self) -> PgWireResult<DfSessionService> {
        let ctx = match self.limits.memory {
            None => Arc::clone(&self.base),
            Some(bytes) => {
                // The base's object stores, spill files and caches (Parquet
                // footers and page indexes stay cached across statements),
                // with a memory pool of this statement's own.
                let runtime = RuntimeEnvBuilder::from_runtime_env(&self.base.runtime_env())
                    .with_memory_limit(bytes, 1.0)
                    .build_arc()
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                let state = SessionStateBuilder::new_from_existing(self.base.state())
                    .with_runtime_env(runtime)
                    .build();
                Arc::new(SessionContext::new_with_state(state))
            }
        };
        Ok(DfSessionService::new_with_hooks(ctx, self.hooks.clone()))
    }

    /// What one statement runs with: its deadline, the connection's cancel
    /// handle and a service with its own memory pool.
    fn start<C: ClientInfo>(
        &self,
        client: &C,
    ) -> PgWireResult<(
        Instant,
        Option<Arc<Arc<ConnectionHandle>>>,
        DfSessionService,
    )> {
        let handle = client.session_extensions().get::<Arc<ConnectionHandle>>();
        Ok((self.deadline(client), handle, self.for_statement()?))
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
) -> Response {
    match response {
        Response::Query(mut q) => {
            let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
            q.data_rows = Box::pin(Bounded {
                rows: Some(rows),
                stop: stopper(deadline, handle),
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
        let (deadline, handle, service) = self.start(client)?;
        let planned = tokio::time::timeout_at(
            deadline,
            SimpleQueryHandler::do_query(&service, client, query),
        )
        .await
        .map_err(|_| timeout_error())??;
        Ok(planned
            .into_iter()
            .map(|r| bound(r, deadline, handle.clone()))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for LakeService {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.shared.query_parser()
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
        let (deadline, handle, service) = self.start(client)?;
        let planned = tokio::time::timeout_at(
            deadline,
            ExtendedQueryHandler::do_query(&service, client, portal, max_rows),
        )
        .await
        .map_err(|_| timeout_error())??;
        Ok(bound(planned, deadline, handle))
    }
}
