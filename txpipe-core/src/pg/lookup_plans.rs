//! Plans of point lookups kept from one `Parse` to the next.
//!
//! Most clients do not prepare a statement they send once: psycopg (below its
//! `prepare_threshold`), pgjdbc (below its `prepareThreshold`), SQLAlchemy and
//! pandas send `Parse`/`Bind`/`Execute` with an unnamed statement every time.
//! datafusion-postgres plans every `Parse` with DataFusion to learn the
//! parameter and result types, which costs a point lookup more than
//! answering it from the index ([`super::point_get`]). A statement of the
//! lookup shape is planned once per shape (columns, customer literal or
//! parameter, limit) and its plan reused while the fact table keeps its
//! columns; every other statement is planned as before.
//!
//! A kept plan reads the same data as a new one: its table reads the newest
//! committed snapshot at every execution ([`super::catalog::LiveTable`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::results::Response;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::error::PgWireResult;
use datafusion_postgres::QueryHook;

use super::api;
use super::catalog::{LakeSchema, LiveTable};
use super::point_get::Latest;
use crate::schema::FACT_TABLE;

/// Lookup shapes kept at most; literal customers make one shape each, so
/// the map is emptied when it is full.
const MAX_PLANS: usize = 256;

/// A [`QueryHook`] that plans `Parse`d point lookups once per shape.
#[derive(Debug)]
pub(crate) struct LookupPlans {
    tables: Arc<LakeSchema>,
    /// Shape → the fact table it was planned over, and its plan.
    plans: Mutex<HashMap<Latest, (Arc<LiveTable>, LogicalPlan)>>,
}

impl LookupPlans {
    pub(crate) fn new(tables: Arc<LakeSchema>) -> Self {
        LookupPlans {
            tables,
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// The kept plan of `lookup`, if it was planned over `table`.
    fn kept(&self, lookup: &Latest, table: &Arc<LiveTable>) -> Option<LogicalPlan> {
        let plans = self.plans.lock().ok()?;
        let (planned_over, plan) = plans.get(lookup)?;
        Arc::ptr_eq(planned_over, table).then(|| plan.clone())
    }

    fn keep(&self, lookup: Latest, table: Arc<LiveTable>, plan: LogicalPlan) {
        if let Ok(mut plans) = self.plans.lock() {
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.insert(lookup, (table, plan));
        }
    }
}

#[async_trait]
impl QueryHook for LookupPlans {
    async fn handle_simple_query(
        &self,
        _statement: &Statement,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let lookup = Latest::of(statement)?;
        // The fact table as planning would resolve it: brought to the
        // newest commit, opened again if its columns changed (then the kept
        // plan, over the old table, is not used).
        let table = self.tables.live(FACT_TABLE).await.ok()??;
        if let Some(plan) = self.kept(&lookup, &table) {
            return Some(Ok(plan));
        }
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await;
        Some(match plan {
            Ok(plan) => {
                self.keep(lookup, table, plan.clone());
                Ok(plan)
            }
            Err(e) => Err(api(e)),
        })
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
