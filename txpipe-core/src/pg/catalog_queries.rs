//! Catalog queries DataFusion cannot run as written.
//!
//! SQLAlchemy's column reflection (`Inspector.get_columns`, what Superset and
//! pandas use) selects a column's default, identity options and collation
//! with scalar subqueries inside `CASE` expressions, which DataFusion's
//! analyzer rejects ("Invalid (non-executable) plan"). On this server those
//! subqueries are always NULL: no column has a default, an identity sequence
//! or a non-default collation. So when a query fails that way *and* reads
//! `pg_catalog`, each scalar subquery is replaced by NULL (keeping the
//! parameters it held) and the query planned again. Queries that plan are
//! never touched. pgjdbc's primary-key query is answered with its (always
//! empty) result directly.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, visit_expressions_mut, Expr, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion_postgres::arrow_pg::datatypes::df::encode_dataframe;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::pgwire::types::format::FormatOptions;
use datafusion_postgres::QueryHook;

use super::api;

/// The rewrite for `statement`, when it reads `pg_catalog` and holds a
/// scalar subquery; `None` otherwise. Each scalar subquery becomes NULL —
/// written as `CASE WHEN p IS NULL … THEN NULL END` over the parameters it
/// held, so every `$n` the client binds is still in the statement.
pub fn null_subqueries(statement: &Statement) -> Option<Statement> {
    if !matches!(statement, Statement::Query(_)) {
        return None;
    }
    let text = statement.to_string().to_ascii_lowercase();
    if !text.contains("pg_catalog.") && !text.contains("pg_attribute") {
        return None;
    }
    let mut rewritten = statement.clone();
    let mut changed = false;
    let _ = visit_expressions_mut(&mut rewritten, |expr| {
        if let Expr::Subquery(q) = expr {
            let mut params = Vec::new();
            let _ = visit_expressions(q.as_ref(), |e| {
                match e {
                    Expr::Cast { expr: inner, .. } if matches!(inner.as_ref(), Expr::Value(v) if matches!(v.value, Value::Placeholder(_))) => {
                        params.push(e.to_string())
                    }
                    Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => {
                        let p = e.to_string();
                        if !params.iter().any(|c| c.starts_with(&format!("{p}::"))) {
                            params.push(p)
                        }
                    }
                    _ => {}
                }
                ControlFlow::<()>::Continue(())
            });
            let sql = if params.is_empty() {
                "NULL".to_string()
            } else {
                let cond: Vec<String> = params.iter().map(|p| format!("{p} IS NULL")).collect();
                format!("CASE WHEN {} THEN NULL END", cond.join(" AND "))
            };
            if let Ok(e) = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(&sql)
                .and_then(|mut p| p.parse_expr())
            {
                *expr = e;
                changed = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    changed.then_some(rewritten)
}

/// pgjdbc's `DatabaseMetaData.getPrimaryKeys` query (Metabase and DBeaver
/// call it) expands index keys with `information_schema._pg_expandarray`, a
/// set-returning function DataFusion lacks. The lake's tables have no primary
/// keys, so its answer is always empty: this is that empty answer, with the
/// columns pgjdbc reads.
const NO_PRIMARY_KEYS: &str = "SELECT CAST(NULL AS VARCHAR) AS \"TABLE_CAT\", \
     CAST(NULL AS VARCHAR) AS \"TABLE_SCHEM\", CAST(NULL AS VARCHAR) AS \"TABLE_NAME\", \
     CAST(NULL AS VARCHAR) AS \"COLUMN_NAME\", CAST(NULL AS SMALLINT) AS \"KEY_SEQ\", \
     CAST(NULL AS VARCHAR) AS \"PK_NAME\" WHERE false";

fn primary_keys_query(statement: &Statement) -> Option<Statement> {
    let text = statement.to_string().to_ascii_lowercase();
    if !(text.contains("_pg_expandarray(") && text.contains("indisprimary")) {
        return None;
    }
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(NO_PRIMARY_KEYS)
        .and_then(|mut p| p.parse_statement())
        .ok()
}

async fn plan(
    ctx: &SessionContext,
    statement: &Statement,
) -> datafusion::error::Result<LogicalPlan> {
    let state = ctx.state();
    let plan = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await?;
    // The analyzer is where such plans fail.
    state.optimize(&plan)?;
    Ok(plan)
}

fn non_executable(e: &datafusion::error::DataFusionError) -> bool {
    let m = e.to_string();
    m.contains("(non-executable) plan") || m.contains("Correlated")
}

/// The [`QueryHook`] applying [`without_projected_subqueries`] to queries that
/// fail to plan; every other statement goes on to the default handling.
#[derive(Debug, Default, Clone, Copy)]
pub struct CatalogQueryHook;

#[async_trait]
impl QueryHook for CatalogQueryHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let (rewritten, always) = match primary_keys_query(statement) {
            Some(s) => (s, true),
            None => (null_subqueries(statement)?, false),
        };
        let original = if always {
            Err(datafusion::error::DataFusionError::Plan(
                "(non-executable) plan".into(),
            ))
        } else {
            plan(ctx, statement).await
        };
        match original {
            Ok(_) => None,
            Err(e) if non_executable(&e) => {
                let run = async {
                    let plan = plan(ctx, &rewritten).await.map_err(api)?;
                    let df = ctx.execute_logical_plan(plan).await.map_err(api)?;
                    let format = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                    let resp = encode_dataframe(df, &Format::UnifiedText, Some(format)).await?;
                    Ok(Response::Query(resp))
                };
                Some(run.await)
            }
            Err(_) => None,
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(empty) = primary_keys_query(statement) {
            return Some(plan(ctx, &empty).await.map_err(api));
        }
        let rewritten = null_subqueries(statement)?;
        match plan(ctx, statement).await {
            Ok(p) => Some(Ok(p)),
            Err(e) if non_executable(&e) => Some(plan(ctx, &rewritten).await.map_err(api)),
            Err(_) => None,
        }
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .expect("parses")
            .remove(0)
    }

    #[test]
    fn only_catalog_queries_with_subqueries_are_rewritten() {
        let q = parse(
            "SELECT a.attname, CASE WHEN a.atthasdef THEN (SELECT d.adbin FROM pg_catalog.pg_attrdef d \
             WHERE d.adrelid = a.attrelid AND d.adnum = $1::SMALLINT) END AS \"default\" FROM pg_catalog.pg_attribute a",
        );
        let r = null_subqueries(&q).expect("rewritten").to_string();
        assert!(
            r.contains("THEN CASE WHEN $1::SMALLINT IS NULL THEN NULL END END")
                && !r.contains("pg_attrdef"),
            "{r}"
        );
        assert!(null_subqueries(&parse("SELECT (SELECT 1) FROM fact_transaction")).is_none());
        assert!(null_subqueries(&parse("SELECT attname FROM pg_catalog.pg_attribute")).is_none());
    }
}
