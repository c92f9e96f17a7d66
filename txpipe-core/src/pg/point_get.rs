//! A customer's newest transactions, answered from an index instead of a
//! scan — the lookup an analyst's or an alert's drill-down sends:
//!
//! ```sql
//! SELECT * FROM fact_transaction
//! WHERE customer_id = $1 ORDER BY transaction_ts DESC LIMIT 100
//! ```
//!
//! Like TiDB's point-get plan, a statement of exactly this shape (any column
//! list of plain names, a literal or a parameter for the customer, any
//! `LIMIT` up to [`DEPTH`](super::customer_index::DEPTH) or none) skips the
//! optimizer and the scan: [`CustomerIndex`] says which rows of which files
//! hold the customer's newest transactions and only those are read. Planning
//! alone costs a DataFusion statement more than PostgreSQL's whole B-tree
//! lookup. Any other statement — another filter, an offset, another order —
//! and any lookup the index cannot answer go through DataFusion as before,
//! with the same results.
//!
//! The index is brought to the table's newest committed version before each
//! lookup (one `HEAD` of the next commit file while there is none), so a
//! lookup sees every commit made before it, as every other statement does.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Ident, LimitClause, OrderByKind, SelectItem, SetExpr, Statement,
    TableFactor, Value,
};
use datafusion_postgres::pgwire::api::portal::{Format, Portal};
use datafusion_postgres::pgwire::api::results::{FieldInfo, QueryResponse, Response};
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::PgWireResult;
use tokio::sync::Mutex;

use super::api;
use super::catalog::{LakeSchema, LiveTable};
use super::column_cache::ColumnCache;
use super::customer_index::CustomerIndex;
use super::rows::text_rows;
use super::service::pg_fields;
use crate::error::Result;
use crate::schema::FACT_TABLE;

/// The customer a lookup is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Customer {
    /// Written in the statement.
    Literal(String),
    /// The statement's parameter `$n` (0-based here).
    Param(usize),
}

/// A statement of the point-lookup shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Latest {
    /// The columns asked for, `None` for `*`.
    pub columns: Option<Vec<String>>,
    /// Whose transactions.
    pub customer: Customer,
    /// How many, `None` for all.
    pub limit: Option<usize>,
}

impl Latest {
    /// The lookup `statement` asks for, if it has exactly the shape
    /// `SELECT cols FROM fact_transaction WHERE customer_id = v ORDER BY
    /// transaction_ts DESC [LIMIT n]` and nothing else.
    pub fn of(statement: &Statement) -> Option<Latest> {
        let Statement::Query(query) = statement else {
            return None;
        };
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        let [from] = select.from.as_slice() else {
            return None;
        };
        let TableFactor::Table {
            name, alias: None, ..
        } = &from.relation
        else {
            return None;
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| p.as_ident().map(normal))
            .collect::<Option<_>>()?;
        let table_ok = match parts.as_slice() {
            [t] => t == FACT_TABLE,
            [s, t] => s == super::SCHEMA && t == FACT_TABLE,
            [d, s, t] => d == super::DATABASE && s == super::SCHEMA && t == FACT_TABLE,
            _ => false,
        };
        if !table_ok || !from.joins.is_empty() {
            return None;
        }
        let columns = match select.projection.as_slice() {
            [SelectItem::Wildcard(_)] => None,
            items => Some(
                items
                    .iter()
                    .map(|item| match item {
                        SelectItem::UnnamedExpr(Expr::Identifier(id)) => Some(normal(id)),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
            ),
        };
        let Some(Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        }) = &select.selection
        else {
            return None;
        };
        let customer = match (left.as_ref(), right.as_ref()) {
            (Expr::Identifier(c), v) | (v, Expr::Identifier(c)) if normal(c) == "customer_id" => {
                match v {
                    Expr::Value(v) => match &v.value {
                        Value::SingleQuotedString(s) => Customer::Literal(s.clone()),
                        Value::Placeholder(p) => {
                            let n: usize = p.strip_prefix('$')?.parse().ok()?;
                            Customer::Param(n.checked_sub(1)?)
                        }
                        _ => return None,
                    },
                    _ => return None,
                }
            }
            _ => return None,
        };
        let order = query.order_by.as_ref()?;
        let OrderByKind::Expressions(by) = &order.kind else {
            return None;
        };
        let [by] = by.as_slice() else {
            return None;
        };
        let by_ts = matches!(&by.expr, Expr::Identifier(t) if normal(t) == "transaction_ts");
        if !by_ts || by.options.asc != Some(false) || by.with_fill.is_some() {
            return None;
        }
        let limit = match &query.limit_clause {
            None => None,
            Some(LimitClause::LimitOffset {
                limit: Some(Expr::Value(v)),
                offset: None,
                limit_by,
            }) if limit_by.is_empty() => match &v.value {
                Value::Number(n, false) => Some(n.parse().ok()?),
                _ => return None,
            },
            _ => return None,
        };
        // Nothing else may be there: the statement must print exactly as
        // the parts it was read from (no DISTINCT, GROUP BY, FOR UPDATE, …).
        let projection: Vec<String> = select.projection.iter().map(|i| i.to_string()).collect();
        let expected = format!(
            "SELECT {} FROM {} WHERE {} ORDER BY {}{}",
            projection.join(", "),
            from,
            select.selection.as_ref()?,
            by,
            match &query.limit_clause {
                Some(l) => l.to_string(),
                None => String::new(),
            }
        );
        (statement.to_string() == expected).then_some(Latest {
            columns,
            customer,
            limit,
        })
    }
}

/// A name as DataFusion resolves it: unquoted names in lower case.
fn normal(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_ascii_lowercase(),
    }
}

/// Answers [`Latest`] lookups over a lake's fact table from a
/// [`CustomerIndex`] kept at its newest commit.
#[derive(Debug)]
pub struct PointGet {
    tables: Arc<LakeSchema>,
    /// The fact table, once it exists (each lookup brings it to the newest
    /// commit).
    table: Mutex<Option<Arc<LiveTable>>>,
    index: Mutex<CustomerIndex>,
    cache: ColumnCache,
}

impl PointGet {
    /// Lookups over the fact table of `tables`, keeping up to `cache_bytes`
    /// of decoded blocks of the files they read ([`ColumnCache`]; 0: only
    /// the pages around the rows are read, every time). The index is built
    /// at the first lookup.
    pub fn new(tables: Arc<LakeSchema>, cache_bytes: usize) -> Self {
        PointGet {
            tables,
            table: Mutex::new(None),
            index: Mutex::new(CustomerIndex::default()),
            cache: ColumnCache::new(cache_bytes),
        }
    }

    /// The rows of `lookup` for `customer`, newest first, as columns of
    /// `schema` (the statement's planned result; `None`: the table's columns
    /// the lookup names). `None` when the index cannot answer it: the
    /// statement then goes through DataFusion.
    ///
    /// # Errors
    /// The log or a data file could not be read.
    pub async fn rows(
        &self,
        lookup: &Latest,
        customer: &str,
        schema: Option<SchemaRef>,
    ) -> Result<Option<RecordBatch>> {
        let live = {
            let mut table = self.table.lock().await;
            match &*table {
                Some(t) => Arc::clone(t),
                None => {
                    let Some(t) = self.tables.live(FACT_TABLE).await? else {
                        return Ok(None);
                    };
                    *table = Some(Arc::clone(&t));
                    t
                }
            }
        };
        let schema = match schema {
            Some(s) => s,
            None => {
                let table = datafusion::catalog::TableProvider::schema(live.as_ref());
                match &lookup.columns {
                    None => table,
                    Some(names) => {
                        let mut fields = Vec::with_capacity(names.len());
                        for n in names {
                            match table.field_with_name(n) {
                                Ok(f) => fields.push(f.clone()),
                                // Unknown column: DataFusion words the error.
                                Err(_) => return Ok(None),
                            }
                        }
                        Arc::new(Schema::new(fields))
                    }
                }
            }
        };
        let picked = {
            let mut index = self.index.lock().await;
            if let Some((version, files)) = live.files_after(index.version()).await? {
                if index
                    .update(self.tables.lake(), version, files)
                    .await
                    .is_err()
                {
                    return Ok(None);
                }
            }
            match index.pick(customer, lookup.limit) {
                Some(p) => p,
                None => return Ok(None),
            }
        };
        Ok(Some(
            picked
                .read(self.tables.lake(), &schema, &self.cache)
                .await?,
        ))
    }
}

/// The statement type of datafusion-postgres' extended protocol: the SQL,
/// and its parsed statement and logical plan.
pub(crate) type ParsedStatement = (String, Option<(Statement, LogicalPlan)>);

/// The Postgres protocol side of [`PointGet`].
impl PointGet {
    /// A simple-protocol statement answered by the index, if it is a
    /// point lookup the index can answer (results in text, as all simple
    /// results are).
    pub(crate) async fn simple<C: ClientInfo>(
        &self,
        statement: &Statement,
        client: &C,
    ) -> PgWireResult<Option<Response>> {
        let Some(lookup) = Latest::of(statement) else {
            return Ok(None);
        };
        let Customer::Literal(customer) = &lookup.customer else {
            return Ok(None);
        };
        let Some(batch) = self.rows(&lookup, customer, None).await.map_err(api)? else {
            return Ok(None);
        };
        let fields = pg_fields(client, batch.schema().as_ref(), &Format::UnifiedText)?;
        Ok(Some(one_batch(fields, batch)))
    }

    /// An extended-protocol portal answered by the index, if its
    /// statement is a point lookup the index can answer: the result has the
    /// columns and types the statement was described with, in the formats
    /// the client bound.
    pub(crate) async fn extended<C: ClientInfo>(
        &self,
        client: &C,
        portal: &Portal<ParsedStatement>,
    ) -> PgWireResult<Option<Response>> {
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(None);
        };
        let Some(lookup) = Latest::of(statement) else {
            return Ok(None);
        };
        let customer = match &lookup.customer {
            Customer::Literal(c) => c.clone(),
            Customer::Param(i) => match text_parameter(portal, *i) {
                Some(c) => c,
                None => return Ok(None),
            },
        };
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let Some(batch) = self
            .rows(&lookup, &customer, Some(schema))
            .await
            .map_err(api)?
        else {
            return Ok(None);
        };
        let fields = pg_fields(
            client,
            batch.schema().as_ref(),
            &portal.result_column_format,
        )?;
        Ok(Some(one_batch(fields, batch)))
    }
}

/// A result of one batch, through our row encoder (text columns written
/// directly, binary ones by arrow-pg).
fn one_batch(fields: Arc<Vec<FieldInfo>>, batch: RecordBatch) -> Response {
    let rows = text_rows(
        Arc::clone(&fields),
        Box::pin(RecordBatchStreamAdapter::new(
            batch.schema(),
            futures::stream::once(async move { Ok(batch) }),
        )),
    );
    Response::Query(QueryResponse::new(fields, rows))
}

/// Parameter `i` of `portal` as text: sent as text, or in binary for a text
/// type (whose binary form is its UTF-8 bytes). `None` otherwise (NULL, a
/// binary uuid…): the statement then goes through DataFusion.
fn text_parameter<S>(portal: &Portal<S>, i: usize) -> Option<String> {
    let bytes = portal.parameters.get(i)?.as_ref()?;
    if portal.parameter_format.is_binary(i) {
        let declared = portal.statement.parameter_types.get(i).cloned().flatten();
        let text = matches!(
            declared,
            None | Some(Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN)
        );
        if !text {
            return None;
        }
    }
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn shape(sql: &str) -> Option<Latest> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parses");
        Latest::of(&statements[0])
    }

    #[test]
    fn the_lookup_shape_is_recognised_with_its_parts() {
        assert_eq!(
            shape(
                "SELECT * FROM fact_transaction WHERE customer_id = $1 \
                 ORDER BY transaction_ts DESC LIMIT 100"
            ),
            Some(Latest {
                columns: None,
                customer: Customer::Param(0),
                limit: Some(100),
            })
        );
        assert_eq!(
            shape(
                "select Transaction_ID, amount from public.fact_transaction \
                 where 'c-1' = customer_id order by transaction_ts desc"
            ),
            Some(Latest {
                columns: Some(vec!["transaction_id".into(), "amount".into()]),
                customer: Customer::Literal("c-1".into()),
                limit: None,
            })
        );
    }

    #[test]
    fn anything_more_or_different_is_left_to_datafusion() {
        for sql in [
            "SELECT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts LIMIT 10",
            "SELECT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC LIMIT 10 OFFSET 5",
            "SELECT DISTINCT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction WHERE customer_id = $1 AND is_fraud ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction WHERE merchant_id = $1 ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction f WHERE customer_id = $1 ORDER BY transaction_ts DESC",
            "SELECT amount * 2 FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC",
            "SELECT * FROM quarantine WHERE customer_id = $1 ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction WHERE customer_id = 7 ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC, amount",
            "SELECT * FROM fact_transaction WHERE customer_id = $1 GROUP BY 1 ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC LIMIT $2",
            "WITH x AS (SELECT 1) SELECT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC",
            "SELECT * FROM fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC FOR UPDATE",
            "SELECT * FROM other.fact_transaction WHERE customer_id = $1 ORDER BY transaction_ts DESC",
        ] {
            assert_eq!(shape(sql), None, "{sql}");
        }
    }
}
