//! The extended protocol's replies, held back until the client's `Sync`.
//!
//! pgwire's default handlers `send` `ParseComplete`, `BindComplete`,
//! `ParameterDescription` and `RowDescription` — each a flush of its own,
//! with `TCP_NODELAY` each its own packet, and each a wake-up of the client
//! waiting for its result. PostgreSQL writes them into its output buffer and
//! sends the lot at `Sync` (or `Flush`). These are pgwire's `Parse`, `Bind`
//! and `Describe` steps with the replies fed instead: one lookup is one
//! packet of replies and the `ReadyForQuery`, not five. A client that waits
//! for a reply before its `Sync` sends `Flush`, which pgwire still answers by
//! flushing.

use std::fmt::Debug;
use std::sync::Arc;

use datafusion_postgres::pgwire::api::portal::Portal;
use datafusion_postgres::pgwire::api::results::DescribeResponse;
use datafusion_postgres::pgwire::api::stmt::{QueryParser, StoredStatement};
use datafusion_postgres::pgwire::api::store::{Entry, PortalStore};
use datafusion_postgres::pgwire::api::{ClientInfo, ClientPortalStore, DEFAULT_NAME};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use datafusion_postgres::pgwire::messages::extendedquery::{
    Bind, BindComplete, Parse, ParseComplete,
};
use datafusion_postgres::pgwire::messages::PgWireBackendMessage;
use futures::{Sink, SinkExt};

/// `Parse`: the statement parsed by `parser` and stored under its name.
pub(super) async fn parse<C, Q>(client: &mut C, message: Parse, parser: Arc<Q>) -> PgWireResult<()>
where
    Q: QueryParser + Send + Sync,
    Q::Statement: Send + Sync,
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = Q::Statement>,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let name = message
        .name
        .clone()
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    match StoredStatement::parse(client, &message, parser).await? {
        Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
        None => client.portal_store().put_empty_statement(&name),
    }
    client
        .feed(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
        .await?;
    Ok(())
}

/// `Bind`: a portal of a stored statement and the bound parameters.
pub(super) async fn bind<C, S>(client: &mut C, message: Bind) -> PgWireResult<()>
where
    S: Clone + Send + Sync + 'static,
    C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
    C::PortalStore: PortalStore<Statement = S>,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let statement_name = message.statement_name.as_deref().unwrap_or(DEFAULT_NAME);
    let portal_name = message.portal_name.as_deref().unwrap_or(DEFAULT_NAME);
    match client.portal_store().get_statement(statement_name) {
        Some(Entry::Value(statement)) => {
            let portal = Portal::try_new(&message, statement)?;
            client.portal_store().put_portal(Arc::new(portal));
        }
        Some(Entry::Empty) => {
            if !message.parameters.is_empty() {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".to_owned(),
                    "08P01".to_owned(),
                    format!(
                        "bind message supplies {} parameters, but prepared statement {:?} requires 0",
                        message.parameters.len(),
                        statement_name
                    ),
                ))));
            }
            client.portal_store().put_empty_portal(portal_name);
        }
        None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
    }
    client
        .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
        .await?;
    Ok(())
}

/// `Describe`'s reply: the parameter types (of a statement) and the result's
/// row description, or `NoData`.
pub(super) async fn describe<C, R>(client: &mut C, described: &R) -> PgWireResult<()>
where
    R: DescribeResponse,
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if let Some(types) = described.parameters() {
        client
            .feed(PgWireBackendMessage::ParameterDescription(
                ParameterDescription::new(types.iter().map(|t| t.oid()).collect()),
            ))
            .await?;
    }
    if described.is_no_data() {
        client
            .feed(PgWireBackendMessage::NoData(NoData::new()))
            .await?;
    } else {
        let fields = described.fields().iter().map(Into::into).collect();
        client
            .feed(PgWireBackendMessage::RowDescription(RowDescription::new(
                fields,
            )))
            .await?;
    }
    Ok(())
}
