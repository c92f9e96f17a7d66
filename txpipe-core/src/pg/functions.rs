//! Functions clients call on connect that DataFusion and datafusion-pg-catalog
//! lack or answer in a way clients reject.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

/// What `SELECT version()` answers. Clients parse it (SQLAlchemy and so
/// Superset expect `PostgreSQL X.Y …`); DataFusion's own answer,
/// `Apache DataFusion 55…`, makes SQLAlchemy refuse the connection.
pub const VERSION: &str = concat!(
    "PostgreSQL 16.6 (txpipe ",
    env!("CARGO_PKG_VERSION"),
    " on Apache DataFusion, datafusion-postgres 0.19)"
);

/// Registers `version()`, `to_regtype(text)` and the constant answers of
/// [`ConstFn`] in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(version());
    ctx.register_udf(to_regtype());
    if ctx.udf("json_build_object").is_err() {
        ctx.register_udf(ScalarUDF::from(JsonBuildObject::new()));
    }
    for (name, value) in [
        // No column is backed by a sequence (SQLAlchemy's get_columns).
        ("pg_get_serial_sequence", ScalarValue::Utf8(None)),
        // Every collation and type is visible (one schema, no search path games).
        ("pg_collation_is_visible", ScalarValue::Boolean(Some(true))),
        ("pg_type_is_visible", ScalarValue::Boolean(Some(true))),
    ] {
        if ctx.udf(name).is_err() {
            ctx.register_udf(ScalarUDF::from(ConstFn::new(name, value)));
        }
    }
}

/// A catalog function whose answer is the same for every argument on this
/// server (any number and types of arguments).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ConstFn {
    name: &'static str,
    value: ScalarValue,
    signature: Signature,
}

impl ConstFn {
    /// `name(...)` always returning `value`.
    pub fn new(name: &'static str, value: ScalarValue) -> Self {
        ConstFn {
            name,
            value,
            signature: Signature::one_of(
                vec![TypeSignature::VariadicAny, TypeSignature::Nullary],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for ConstFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

fn version() -> ScalarUDF {
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                VERSION.to_string(),
            ))))
        }),
    )
}

/// `json_build_object(k1, v1, k2, v2, …)` as JSON text (SQLAlchemy's
/// column reflection builds identity and collation details with it).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    /// The function.
    pub fn new() -> Self {
        JsonBuildObject {
            signature: Signature::one_of(
                vec![TypeSignature::VariadicAny, TypeSignature::Nullary],
                Volatility::Immutable,
            ),
        }
    }
}

impl Default for JsonBuildObject {
    fn default() -> Self {
        Self::new()
    }
}

fn json_value(a: &dyn Array, i: usize) -> datafusion::error::Result<serde_json::Value> {
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    if a.is_null(i) {
        return Ok(serde_json::Value::Null);
    }
    Ok(match a.data_type() {
        DataType::Boolean => serde_json::Value::Bool(a.as_boolean().value(i)),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => {
            let c = datafusion::arrow::compute::cast(&a.slice(i, 1), &DataType::Int64)?;
            serde_json::Value::from(c.as_primitive::<Int64Type>().value(0))
        }
        DataType::Float32 | DataType::Float64 => {
            let c = datafusion::arrow::compute::cast(&a.slice(i, 1), &DataType::Float64)?;
            serde_json::Value::from(c.as_primitive::<Float64Type>().value(0))
        }
        _ => {
            let c = datafusion::arrow::compute::cast(&a.slice(i, 1), &DataType::Utf8)?;
            serde_json::Value::String(c.as_string::<i32>().value(0).to_string())
        }
    })
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        if args.args.len() % 2 != 0 {
            return Err(DataFusionError::Plan(
                "json_build_object needs an even number of arguments".to_string(),
            ));
        }
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = datafusion::arrow::array::StringBuilder::new();
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = match json_value(pair[0].as_ref(), row)? {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(key, json_value(pair[1].as_ref(), row)?);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        let array = out.finish();
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// The oid of a built-in type name, as PostgreSQL's `pg_type` has it.
pub fn type_oid(name: &str) -> Option<i32> {
    let name = name
        .trim()
        .trim_start_matches("pg_catalog.")
        .to_ascii_lowercase();
    Some(match name.as_str() {
        "bool" | "boolean" => 16,
        "bytea" => 17,
        "char" => 18,
        "name" => 19,
        "int8" | "bigint" => 20,
        "int2" | "smallint" => 21,
        "int4" | "integer" | "int" => 23,
        "text" => 25,
        "oid" => 26,
        "json" => 114,
        "float4" | "real" => 700,
        "float8" | "double precision" => 701,
        "varchar" | "character varying" => 1043,
        "date" => 1082,
        "time" | "time without time zone" => 1083,
        "timestamp" | "timestamp without time zone" => 1114,
        "timestamptz" | "timestamp with time zone" => 1184,
        "interval" => 1186,
        "numeric" | "decimal" => 1700,
        "uuid" => 2950,
        "jsonb" => 3802,
        "text[]" | "_text" => 1009,
        _ => return None,
    })
}

/// `to_regtype(name)`: the type's oid, NULL for a type that does not exist
/// (psycopg's `TypeInfo.fetch`, which SQLAlchemy runs on connect to look
/// for `hstore`, asks it).
fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| match args {
            [ColumnarValue::Scalar(v)] => {
                let name = match v {
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                        s.clone()
                    }
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Int32(
                    name.as_deref().and_then(type_oid),
                )))
            }
            [ColumnarValue::Array(a)] => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
                let s = a.as_string::<i32>();
                let out: Int32Array = (0..s.len())
                    .map(|i| (!s.is_null(i)).then(|| type_oid(s.value(i))).flatten())
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out)))
            }
            _ => Err(DataFusionError::Plan(
                "to_regtype takes one argument".to_string(),
            )),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn version_says_postgresql_and_to_regtype_knows_builtins_only() {
        let ctx = SessionContext::new();
        register(&ctx);
        let b = ctx
            .sql("SELECT version(), to_regtype('numeric'), to_regtype('hstore')")
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let v = b[0].column(0).as_string::<i32>().value(0).to_string();
        assert!(v.starts_with("PostgreSQL 16"), "{v}");
        let oids = datafusion::arrow::compute::cast(b[0].column(1), &DataType::Int32).expect("int");
        assert_eq!(
            oids.as_primitive::<datafusion::arrow::datatypes::Int32Type>()
                .value(0),
            1700
        );
        assert!(b[0].column(2).is_null(0));
    }
}
