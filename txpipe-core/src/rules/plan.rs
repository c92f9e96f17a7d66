//! Where the window calls' inputs are stored: each call's argument and
//! `FILTER` condition compiled over the transaction columns, shared by the
//! calls of one key space.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use super::state::{output_type, Input, PlannedCall, Space, ValKind};
use super::window::{WindowCall, WindowFunc};
use crate::error::{Error, Result};
use crate::schema::TRANSACTION_SCHEMA;

/// Compiles the new window calls `calls[from..]` (introduced by `owner`)
/// into the plan's spaces.
pub(super) fn plan_calls(
    ctx: &SessionContext,
    tx: &DFSchema,
    calls: &[WindowCall],
    from: usize,
    planned: &mut Vec<PlannedCall>,
    spaces: &mut Vec<Space>,
    fail: &dyn Fn(String) -> Error,
) -> Result<()> {
    for call in &calls[from..] {
        let key_index = TRANSACTION_SCHEMA.index_of(&call.key).map_err(|_| {
            fail(format!(
                "{}: PARTITION BY {}: no such column",
                call.text, call.key
            ))
        })?;
        let space = match spaces.iter().position(|s| s.key == call.key) {
            Some(i) => i,
            None => {
                spaces.push(Space {
                    key_index,
                    key: call.key.clone(),
                    vals: Vec::new(),
                    bits: Vec::new(),
                });
                spaces.len() - 1
            }
        };
        let compile = |sql: &str| -> Result<(Arc<dyn PhysicalExpr>, DataType)> {
            let e = ctx
                .parse_sql_expr(sql, tx)
                .map_err(|e| fail(format!("{}: {sql}: {e}", call.text)))?;
            let p = ctx
                .create_physical_expr(e, tx)
                .map_err(|e| fail(format!("{}: {sql}: {e}", call.text)))?;
            let t = p
                .data_type(&TRANSACTION_SCHEMA)
                .map_err(|e| fail(e.to_string()))?;
            Ok((p, t))
        };
        let (arg, arg_kind) = match &call.arg {
            None => (None, None),
            Some(sql) => {
                let (expr, t) = compile(sql)?;
                let kind = ValKind::of(&t).ok_or_else(|| {
                    fail(format!(
                        "{}: argument {sql} is {t}, not a number, timestamp or text",
                        call.text
                    ))
                })?;
                let vals = &mut spaces[space].vals;
                let i = match vals.iter().position(|v| v.sql == *sql) {
                    Some(i) => i,
                    None => {
                        vals.push(Input {
                            sql: sql.clone(),
                            expr,
                            kind: Some(kind),
                        });
                        vals.len() - 1
                    }
                };
                (Some(i), Some(kind))
            }
        };
        let filter = match &call.filter {
            None => None,
            Some(sql) => {
                let (expr, t) = compile(sql)?;
                if t != DataType::Boolean {
                    return Err(fail(format!(
                        "{}: FILTER ({sql}) is {t}, not boolean",
                        call.text
                    )));
                }
                let bits = &mut spaces[space].bits;
                let i = match bits.iter().position(|v| v.sql == *sql) {
                    Some(i) => i,
                    None => {
                        if bits.len() >= 32 {
                            return Err(fail("more than 32 FILTER conditions on one key".into()));
                        }
                        bits.push(Input {
                            sql: sql.clone(),
                            expr,
                            kind: None,
                        });
                        bits.len() - 1
                    }
                };
                Some(i as u32)
            }
        };
        let output =
            output_type(call.func, arg_kind).map_err(|r| fail(format!("{}: {r}", call.text)))?;
        if call.func == WindowFunc::CountEqual && arg.is_none() {
            return Err(fail(format!("{}: count_equal takes a column", call.text)));
        }
        planned.push(PlannedCall {
            call: call.clone(),
            space,
            arg,
            arg_kind,
            filter,
            output,
        });
    }
    Ok(())
}
