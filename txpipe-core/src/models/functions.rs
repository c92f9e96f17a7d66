//! SQL functions txpipe adds to the models' session.
//!
//! `txpipe_hash64(text)` hashes a string to a BIGINT (FNV-1a, 64 bit). Grouping
//! 10 M transaction ids by their hash instead of the 36-byte strings makes the
//! duplicate search a cheap integer aggregation; candidates are then checked on
//! the real ids, so a hash collision can never merge two transactions.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::SessionContext;

use crate::source::stable_hash;

fn hash_array(a: &ArrayRef) -> datafusion::error::Result<ArrayRef> {
    let utf8 = cast(a, &DataType::Utf8)?;
    let s = utf8.as_string::<i32>();
    let out: Int64Array = s
        .iter()
        .map(|v| v.map(|v| stable_hash(v.as_bytes()) as i64))
        .collect();
    Ok(Arc::new(out))
}

/// The `txpipe_hash64` UDF.
pub fn hash64_udf() -> ScalarUDF {
    create_udf(
        "txpipe_hash64",
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(hash_array(a)?)),
            ColumnarValue::Scalar(s) => {
                let a = s.to_array()?;
                let h = hash_array(&a)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    h.as_ref(),
                    0,
                )?))
            }
        }),
    )
}

/// Registers txpipe's functions in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(hash64_udf());
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;

    #[tokio::test]
    async fn hash64_is_stable_and_null_safe() {
        let ctx = SessionContext::new();
        register(&ctx);
        let b = ctx
            .sql("SELECT txpipe_hash64('a') = txpipe_hash64('a'), txpipe_hash64('a') = txpipe_hash64('b'), txpipe_hash64(NULL) IS NULL")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row: Vec<bool> = (0..3)
            .map(|i| b[0].column(i).as_boolean().value(0))
            .collect();
        assert_eq!(row, vec![true, false, true]);
        assert!(b[0].column(0).null_count() == 0);
    }
}
