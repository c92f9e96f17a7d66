//! The lake over the Postgres wire protocol: psql, psycopg, pgjdbc (Metabase,
//! DBeaver, Tableau), Grafana and Superset connect to txpipe as to a
//! Postgres database.
//!
//! The protocol, `pg_catalog` and the meta functions BI tools call come from
//! [`datafusion_postgres`] (on `pgwire`); this module adds what serving a
//! live lake to many clients needs:
//!
//! * **Tables** ([`catalog`]): `fact_transaction`, `quarantine`,
//!   `dim_customer`, `dim_merchant`, `fx_rate` and every mart by its model
//!   name, in the `public` schema of database `txpipe`. Every statement
//!   execution reads each table's newest committed Delta snapshot — never a
//!   half-written batch or mart, and no commit behind.
//! * **Read-only** ([`readonly`]): only queries, `EXPLAIN`, `SET`/`SHOW`,
//!   transactions, cursors and prepared queries run; everything else gets
//!   SQLSTATE `25006`.
//! * **Security** ([`auth`], [`tls`]): loopback without a password by
//!   default; any other address needs credentials (SCRAM-SHA-256), and TLS
//!   with a certificate and key is available on every address.
//! * **Bounds** ([`service`]): a statement timeout that covers streaming the
//!   result (`57014`), a memory pool per statement, cancel requests, and a
//!   connection limit (`53300`). A failing statement or a malformed message
//!   ends that statement or connection only.
//! * **Point lookups** ([`point_get`], [`customer_index`], [`data_file`],
//!   [`column_cache`]):
//!   a customer's newest transactions come from an index and decoded blocks
//!   kept in memory, not from a planned scan; an unprepared lookup's plan is
//!   kept from one `Parse` to the next (`lookup_plans`).
//!
//! ```no_run
//! # async fn serve() -> txpipe_core::error::Result<()> {
//! use txpipe_core::{lake::Lake, pg::{serve_pg, PgOptions}};
//!
//! let server = serve_pg(Lake::open("/data/lake")?, PgOptions::new("127.0.0.1:5433")).await?;
//! println!("psql -h {} -p {} -d txpipe", server.addr.ip(), server.addr.port());
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod catalog;
pub mod catalog_queries;
pub mod column_cache;
pub mod customer_index;
pub mod data_file;
pub mod functions;
mod lookup_plans;
pub mod point_get;
pub mod readonly;
mod replies;
mod rows;
pub mod service;
pub mod tls;
mod typmod;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::pgwire::api::auth::StartupHandler;
use datafusion_postgres::pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use datafusion_postgres::pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use datafusion_postgres::pgwire::api::PgWireServerHandlers;
use datafusion_postgres::pgwire::api::{ClientInfo, ConnectionManager, ErrorHandler};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::{process_socket, TlsAcceptor};
use datafusion_postgres::QueryHook;
use futures::Sink;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

pub use auth::PgCredentials;
pub use catalog::LakeSchema;
pub use service::QueryLimits;

use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::metrics::server::{all_loopback, resolve};
use crate::read::plain_strings;
use crate::sink::legacy::refuse_legacy_lake;

/// The database name clients connect to (any name is accepted; this is the
/// one `current_database()` reports and `pg_catalog` lists).
pub const DATABASE: &str = "txpipe";
/// The schema the tables are in.
pub const SCHEMA: &str = "public";

/// How to serve a lake over the Postgres protocol.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Address to listen on, e.g. `127.0.0.1:5433` (port 0: any free port).
    pub addr: String,
    /// Clients must log in as this user with this password (SCRAM-SHA-256).
    /// Required when `addr` is not loopback.
    pub credentials: Option<PgCredentials>,
    /// PEM certificate chain and private key: clients may (and with
    /// `sslmode=require` must) use TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections served at once; one more gets `53300 too many connections`.
    pub max_connections: usize,
    /// Timeout and memory pool of each statement.
    pub limits: QueryLimits,
    /// How often the table list (`pg_catalog`, `\dt`) is refreshed; a query
    /// naming a table reads it at once regardless.
    pub refresh: Duration,
    /// Bytes of decoded fact-table blocks kept for point lookups
    /// ([`column_cache`]; 1 GiB by default, filled only by lookups); 0 keeps
    /// none.
    pub lookup_cache: usize,
}

impl PgOptions {
    /// Defaults: no credentials, no TLS, 64 connections, 5 minutes and 2 GiB
    /// per statement, table list refreshed every second, 256 MiB of columns
    /// cached for point lookups.
    pub fn new(addr: impl Into<String>) -> Self {
        PgOptions {
            addr: addr.into(),
            credentials: None,
            tls: None,
            max_connections: 64,
            limits: QueryLimits {
                timeout: Duration::from_secs(300),
                memory: Some(2 << 30),
            },
            refresh: Duration::from_secs(1),
            lookup_cache: 1 << 30,
        }
    }
}

/// A running Postgres endpoint; dropping it does not stop it, [`PgServer::stop`] does.
#[derive(Debug)]
pub struct PgServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// Whether clients must authenticate.
    pub authenticated: bool,
    /// Whether TLS is offered.
    pub tls: bool,
    accept: JoinHandle<()>,
    refresh: JoinHandle<()>,
}

impl PgServer {
    /// Stops accepting connections and refreshing the table list (open
    /// connections end when their clients disconnect).
    pub fn stop(&self) {
        self.accept.abort();
        self.refresh.abort();
    }
}

/// The DataFusion session the endpoint plans in: database `txpipe`, schema
/// `public` = the lake ([`LakeSchema`]), plus `pg_catalog` and
/// `information_schema`.
///
/// # Errors
/// The lake is in txpipe 0.1's format or `pg_catalog` could not be set up.
pub async fn lake_session(lake: &Lake) -> Result<(Arc<SessionContext>, Arc<LakeSchema>)> {
    refuse_legacy_lake(lake).await?;
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE, SCHEMA)
        .with_information_schema(true);
    // Late materialisation: a selective filter (a lookup of one customer)
    // decodes its own columns first and only the matching rows of the others,
    // instead of every column of every row before filtering.
    let parquet = &mut config.options_mut().execution.parquet;
    parquet.pushdown_filters = true;
    parquet.reorder_filters = true;
    let ctx = SessionContext::new_with_config(config);
    plain_strings(&ctx);
    lake.register_object_store(&ctx);
    let schema = Arc::new(LakeSchema::new(lake.clone(), ctx.state()));
    schema.refresh().await?;
    let catalog = MemoryCatalogProvider::new();
    catalog
        .register_schema(SCHEMA, Arc::clone(&schema) as _)
        .map_err(|e| Error::Config(format!("registering the lake schema: {e}")))?;
    ctx.register_catalog(DATABASE, Arc::new(catalog));
    setup_pg_catalog(&ctx, DATABASE, EmptyContextProvider)
        .map_err(|e| Error::Config(format!("setting up pg_catalog: {e}")))?;
    functions::register(&ctx);
    if let Some(catalog) = ctx.catalog(DATABASE) {
        if let Some(pg_catalog) = catalog.schema("pg_catalog") {
            let with_typmods = typmod::TypmodCatalog::new(pg_catalog, Arc::clone(&schema));
            catalog
                .register_schema("pg_catalog", Arc::new(with_typmods))
                .map_err(|e| Error::Config(format!("wrapping pg_catalog: {e}")))?;
        }
    }
    Ok((Arc::new(ctx), schema))
}

/// Serves `lake` over the Postgres protocol in the background.
///
/// # Errors
/// `opts.addr` is not loopback and no credentials are given
/// ([`Error::PublicUnauthenticated`]), the TLS files do not load, the address
/// cannot be bound, or the lake cannot be read.
pub async fn serve_pg(lake: Lake, opts: PgOptions) -> Result<PgServer> {
    let addrs = resolve(&opts.addr).await?;
    if !all_loopback(&addrs) && opts.credentials.is_none() {
        let resolved: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        return Err(Error::PublicUnauthenticated {
            addr: opts.addr,
            resolved: resolved.join(", "),
        });
    }
    let tls = match &opts.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let (ctx, schema) = lake_session(&lake).await?;
    let listener = bind(&opts.addr, &addrs).await?;
    let addr = listener.local_addr().map_err(|source| Error::Io {
        context: "reading the bound address of",
        path: PathBuf::from(&opts.addr),
        source,
    })?;
    let hooks: Vec<Arc<dyn QueryHook>> = vec![
        Arc::new(readonly::ReadOnlyHook),
        Arc::new(readonly::SavepointHook),
        Arc::new(CursorStatementHook),
        Arc::new(SetShowHook),
        Arc::new(TransactionStatementHook),
        Arc::new(catalog_queries::CatalogQueryHook),
        Arc::new(lookup_plans::LookupPlans::new(Arc::clone(&schema))),
    ];
    let manager = Arc::new(ConnectionManager::new());
    let handlers = Arc::new(LakeHandlers {
        service: Arc::new(service::LakeService::new(
            ctx,
            hooks,
            opts.limits,
            Some(Arc::new(point_get::PointGet::new(
                Arc::clone(&schema),
                opts.lookup_cache,
            ))),
        )),
        scram: opts
            .credentials
            .as_ref()
            .map(|c| Arc::new(auth::ScramSource::new(c))),
        manager,
    });
    let refresh = schema.spawn_refresh(opts.refresh);
    let accept = tokio::spawn(accept_loop(
        listener,
        tls.clone(),
        handlers,
        opts.max_connections,
    ));
    Ok(PgServer {
        addr,
        authenticated: opts.credentials.is_some(),
        tls: tls.is_some(),
        accept,
        refresh,
    })
}

/// An error from below the protocol (DataFusion, the SQL parser) as the
/// client sees it.
pub(crate) fn api(e: impl std::error::Error + Send + Sync + 'static) -> PgWireError {
    PgWireError::ApiError(Box::new(e))
}

async fn bind(text: &str, addrs: &[SocketAddr]) -> Result<TcpListener> {
    let mut last = None;
    for a in addrs {
        match TcpListener::bind(a).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Io {
        context: "binding the Postgres endpoint to",
        path: PathBuf::from(text),
        source: last.unwrap_or_else(|| std::io::Error::other("no address")),
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handlers: Arc<LakeHandlers>,
    max_connections: usize,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let full = Arc::new(FullHandlers);
    loop {
        let Ok((socket, _peer)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, keep serving.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        let tls = tls.clone();
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                let handlers = Arc::clone(&handlers);
                tokio::spawn(async move {
                    // A protocol error or a dropped client ends this connection only.
                    let _ = process_socket(socket, tls, handlers).await;
                    drop(permit);
                });
            }
            Err(_) => {
                let full = Arc::clone(&full);
                tokio::spawn(async move {
                    let _ = process_socket(socket, tls, full).await;
                });
            }
        }
    }
}

/// The handlers of an admitted connection.
struct LakeHandlers {
    service: Arc<service::LakeService>,
    scram: Option<Arc<auth::ScramSource>>,
    manager: Arc<ConnectionManager>,
}

impl PgWireServerHandlers for LakeHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.service)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.service)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // One per connection: the SCRAM exchange keeps per-connection state.
        Arc::new(auth::Startup::new(self.scram.as_ref(), &self.manager))
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Quiet)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(DefaultCancelHandler::new(Arc::clone(&self.manager)))
    }
}

/// Errors go to the client only (they may quote the client's SQL); a
/// statement over its memory limit gets PostgreSQL's `53200 out_of_memory`
/// instead of the generic `XX000`.
struct Quiet;

impl ErrorHandler for Quiet {
    fn on_error<C: ClientInfo>(&self, _client: &C, error: &mut PgWireError) {
        if let PgWireError::ApiError(e) = error {
            let message = e.to_string();
            if message.contains("Resources exhausted") {
                *error = PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".to_string(),
                    "53200".to_string(),
                    message,
                )));
            }
        }
    }
}

/// The handlers of a connection over the limit: its startup is answered with
/// PostgreSQL's `53300` and the connection closed.
struct FullHandlers;

impl PgWireServerHandlers for FullHandlers {
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Full)
    }
}

struct Full;

#[async_trait::async_trait]
impl StartupHandler for Full {
    async fn on_startup<C>(
        &self,
        _client: &mut C,
        _message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".to_string(),
            "53300".to_string(),
            "sorry, too many clients already".to_string(),
        ))))
    }
}
