//! Read-only enforcement: an allow-list of statement kinds.
//!
//! Everything a client sends is parsed first; only queries, `EXPLAIN` of a
//! query, `SHOW`/`SET` of session settings, transaction control, cursors and
//! prepared statements over queries pass. Anything else — `INSERT`, `UPDATE`,
//! `DELETE`, `MERGE`, `COPY`, DDL, `SELECT … INTO` — is refused before it is
//! planned with SQLSTATE `25006` (`read_only_sql_transaction`), the error
//! PostgreSQL gives in a read-only transaction. A list of what is allowed,
//! rather than of what is not, stays safe when the SQL parser learns new
//! statements.

use async_trait::async_trait;
use std::sync::Arc;

use datafusion::common::{DFSchema, ParamValues};
use datafusion::logical_expr::{EmptyRelation, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Query, SetExpr, Statement};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use datafusion_postgres::QueryHook;

/// SQLSTATE `read_only_sql_transaction`.
pub const READ_ONLY_SQLSTATE: &str = "25006";

/// Why `statement` may not run on a read-only endpoint; `None` when it may.
pub fn refusal(statement: &Statement) -> Option<String> {
    let allowed = match statement {
        Statement::Query(q) => query_reads_only(q),
        Statement::Explain { statement, .. } => return refusal(statement),
        Statement::Prepare { statement, .. } => return refusal(statement),
        Statement::Declare { stmts } => stmts
            .iter()
            .all(|d| d.for_query.as_deref().is_none_or(query_reads_only)),
        Statement::ExplainTable { .. }
        | Statement::Set(_)
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowFunctions { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Discard { .. }
        | Statement::Execute { .. } => true,
        _ => false,
    };
    (!allowed).then(|| {
        format!(
            "cannot execute {} in a read-only transaction: txpipe serves the lake read-only",
            verb(statement)
        )
    })
}

fn query_reads_only(q: &Query) -> bool {
    let ctes_ok = q
        .with
        .as_ref()
        .is_none_or(|w| w.cte_tables.iter().all(|c| query_reads_only(&c.query)));
    ctes_ok && set_expr_reads_only(&q.body)
}

fn set_expr_reads_only(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => s.into.is_none(),
        SetExpr::Query(q) => query_reads_only(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_reads_only(left) && set_expr_reads_only(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => true,
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => false,
    }
}

/// The statement's leading keywords, as PostgreSQL names it in the error
/// ("INSERT", "CREATE TABLE", …).
fn verb(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".to_string(),
    }
}

fn read_only_error(message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        READ_ONLY_SQLSTATE.to_string(),
        message,
    )))
}

/// The [`QueryHook`] that refuses every statement [`refusal`] names, on the
/// simple and the extended protocol.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadOnlyHook;

#[async_trait]
impl QueryHook for ReadOnlyHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refusal(statement).map(|m| Err(read_only_error(m)))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        refusal(statement).map(|m| Err(read_only_error(m)))
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        refusal(statement).map(|m| Err(read_only_error(m)))
    }
}

/// `SAVEPOINT`, `RELEASE SAVEPOINT` and `ROLLBACK TO SAVEPOINT`: nothing to
/// undo in a read-only session, so they succeed without changing the
/// transaction's state (psycopg and SQLAlchemy send them; DataFusion does not
/// know them).
#[derive(Debug, Default, Clone, Copy)]
pub struct SavepointHook;

fn savepoint_tag(statement: &Statement) -> Option<&'static str> {
    match statement {
        Statement::Savepoint { .. } => Some("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Some("RELEASE"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Some("ROLLBACK"),
        _ => None,
    }
}

#[async_trait]
impl QueryHook for SavepointHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        savepoint_tag(statement).map(|t| Ok(Response::Execution(Tag::new(t))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        savepoint_tag(statement).map(|_| {
            Ok(LogicalPlan::EmptyRelation(EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(DFSchema::empty()),
            }))
        })
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        savepoint_tag(statement).map(|t| Ok(Response::Execution(Tag::new(t))))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn check(sql: &str) -> Option<String> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
        refusal(&stmts[0])
    }

    #[test]
    fn queries_and_session_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
            "SELECT * FROM fact_transaction UNION ALL SELECT * FROM fact_transaction",
            "EXPLAIN SELECT 1",
            "SET statement_timeout = 1000",
            "SHOW TRANSACTION ISOLATION LEVEL",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 10 FROM c",
            "CLOSE c",
            "PREPARE p AS SELECT 1",
            "DEALLOCATE p",
            "VALUES (1), (2)",
        ] {
            assert_eq!(check(sql), None, "{sql}");
        }
    }

    #[test]
    fn writes_and_ddl_are_refused_by_name() {
        for (sql, verb) in [
            ("INSERT INTO fact_transaction VALUES (1)", "INSERT"),
            ("UPDATE fact_transaction SET amount = 0", "UPDATE"),
            ("DELETE FROM fact_transaction", "DELETE"),
            ("DROP TABLE fact_transaction", "DROP TABLE"),
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("TRUNCATE fact_transaction", "TRUNCATE"),
            ("COPY fact_transaction TO '/tmp/x.csv'", "COPY"),
            ("SELECT 1 INTO t2", "SELECT"),
            ("EXPLAIN ANALYZE DELETE FROM fact_transaction", "DELETE"),
            ("PREPARE p AS DELETE FROM fact_transaction", "DELETE"),
            (
                "ALTER TABLE fact_transaction ADD COLUMN x INT",
                "ALTER TABLE",
            ),
        ] {
            let m = check(sql).unwrap_or_else(|| panic!("{sql} must be refused"));
            assert!(
                m.starts_with(&format!("cannot execute {verb} ")),
                "{sql}: {m}"
            );
        }
    }
}
