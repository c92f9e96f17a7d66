//! `numeric(p,s)` in the catalog: the type modifiers `pg_attribute` lacks.
//!
//! datafusion-pg-catalog 0.19 reports every column's `atttypmod` as -1, so
//! `\d`, SQLAlchemy's inspector and pgjdbc's `getColumns` see money columns as
//! bare `numeric` without their scale. This wraps the `pg_catalog` schema:
//! `pg_attribute` is read from the original, and the lake's `Decimal128(p, s)`
//! columns get PostgreSQL's modifier `((p << 16) | s) + 4`, which
//! `format_type` already renders as `numeric(p,s)`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{collect, ExecutionPlan};

use super::catalog::LakeSchema;

/// `pg_catalog` with `pg_attribute.atttypmod` filled in for the lake's
/// decimal columns; every other table is the original.
#[derive(Debug)]
pub(crate) struct TypmodCatalog {
    inner: Arc<dyn SchemaProvider>,
    lake: Arc<LakeSchema>,
}

impl TypmodCatalog {
    pub(crate) fn new(inner: Arc<dyn SchemaProvider>, lake: Arc<LakeSchema>) -> Self {
        TypmodCatalog { inner, lake }
    }
}

#[async_trait]
impl SchemaProvider for TypmodCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let table = self.inner.table(name).await?;
        if name != "pg_attribute" {
            return Ok(table);
        }
        let (Some(attributes), Some(classes)) = (table, self.inner.table("pg_class").await?) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(Attributes {
            attributes,
            classes,
            lake: Arc::clone(&self.lake),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug)]
struct Attributes {
    attributes: Arc<dyn TableProvider>,
    classes: Arc<dyn TableProvider>,
    lake: Arc<LakeSchema>,
}

/// PostgreSQL's type modifier of `numeric(precision, scale)`.
pub fn numeric_typmod(precision: u8, scale: i8) -> i32 {
    ((i32::from(precision) << 16) | (i32::from(scale.max(0)) & 0xffff)) + 4
}

async fn rows(t: &Arc<dyn TableProvider>, state: &dyn Session) -> DfResult<Vec<RecordBatch>> {
    let plan = t.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

fn column(batch: &RecordBatch, name: &str) -> DfResult<ArrayRef> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| DataFusionError::Internal(format!("pg_catalog lacks column {name}")))
}

impl Attributes {
    /// Relation oid → (column name → typmod) for the lake's decimal columns.
    async fn typmods(&self, state: &dyn Session) -> DfResult<HashMap<i64, HashMap<String, i32>>> {
        let mut out = HashMap::new();
        for batch in rows(&self.classes, state).await? {
            let oids = cast(&column(&batch, "oid")?, &DataType::Int64)?;
            let oids = oids.as_primitive::<Int64Type>();
            let names = cast(&column(&batch, "relname")?, &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            for i in 0..batch.num_rows() {
                if oids.is_null(i) || names.is_null(i) {
                    continue;
                }
                let Some(live) = self.lake.live_if_listed(names.value(i)).await? else {
                    continue;
                };
                let mods: HashMap<String, i32> = live
                    .schema()
                    .fields()
                    .iter()
                    .filter_map(|f| match f.data_type() {
                        DataType::Decimal128(p, s) => {
                            Some((f.name().clone(), numeric_typmod(*p, *s)))
                        }
                        _ => None,
                    })
                    .collect();
                if !mods.is_empty() {
                    out.insert(oids.value(i), mods);
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for Attributes {
    fn schema(&self) -> SchemaRef {
        self.attributes.schema()
    }

    fn table_type(&self) -> TableType {
        self.attributes.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let typmods = self.typmods(state).await?;
        let mut patched = Vec::new();
        for batch in rows(&self.attributes, state).await? {
            let rel = cast(&column(&batch, "attrelid")?, &DataType::Int64)?;
            let rel = rel.as_primitive::<Int64Type>();
            let names = column(&batch, "attname")?;
            let names = cast(&names, &DataType::Utf8)?;
            let names = names.as_string::<i32>();
            let old = column(&batch, "atttypmod")?;
            let old = old.as_primitive::<datafusion::arrow::datatypes::Int32Type>();
            let new: Int32Array = (0..batch.num_rows())
                .map(|i| {
                    let found = (!rel.is_null(i) && !names.is_null(i))
                        .then(|| typmods.get(&rel.value(i))?.get(names.value(i)).copied())
                        .flatten();
                    Some(found.unwrap_or_else(|| old.value(i)))
                })
                .collect();
            let idx = batch.schema().index_of("atttypmod")?;
            let mut columns = batch.columns().to_vec();
            columns[idx] = Arc::new(new);
            patched.push(RecordBatch::try_new(batch.schema(), columns)?);
        }
        let schema = self.schema();
        Ok(MemorySourceConfig::try_new_exec(
            &[patched],
            schema,
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::numeric_typmod;

    #[test]
    fn typmod_is_postgres_encoding() {
        // PostgreSQL: numeric(18,2) has atttypmod 1179654.
        assert_eq!(numeric_typmod(18, 2), 1_179_654);
        assert_eq!(numeric_typmod(28, 2), (28 << 16 | 2) + 4);
    }
}
