//! SQL functions the rules need beyond DataFusion's: great-circle distance
//! and travel speed.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampMicrosecondType};
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

/// Mean Earth radius used by [`haversine_km`], in km.
pub const EARTH_RADIUS_KM: f64 = 6371.0;

/// Great-circle distance in km between two points given in degrees
/// (haversine formula, radius 6371 km).
///
/// ```
/// use txpipe_core::rules::udf::haversine_km;
/// let seoul_paris = haversine_km(37.5665, 126.9780, 48.8566, 2.3522);
/// assert!((seoul_paris - 8_965.7).abs() < 1.0, "{seoul_paris}");
/// ```
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    // (`x * x`, not `powi(2)`: the same value without a call into libgcc.)
    let (sp, sl) = ((dp / 2.0).sin(), (dl / 2.0).sin());
    let a = sp * sp + p1.cos() * p2.cos() * (sl * sl);
    2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
}

/// Speed in km/h to cover `km` between two timestamps (microseconds);
/// infinite when they are equal.
pub fn speed_kmh(km: f64, ts_a: i64, ts_b: i64) -> f64 {
    let hours = (ts_a - ts_b).unsigned_abs() as f64 / 3.6e9;
    if hours == 0.0 {
        f64::INFINITY
    } else {
        km / hours
    }
}

fn floats(v: &ColumnarValue, n: usize) -> datafusion::error::Result<Float64Array> {
    let a = v.clone().into_array(n)?;
    Ok(cast(&a, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

fn micros(v: &ColumnarValue, n: usize) -> datafusion::error::Result<ArrayRef> {
    let a = v.clone().into_array(n)?;
    Ok(cast(&a, &DataType::Timestamp(TimeUnit::Microsecond, None))?)
}

fn rows(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// Registers `haversine_km(lat1, lon1, lat2, lon2)` and
/// `speed_kmh(km, ts_a, ts_b)` (NULL in, NULL out).
pub fn register(ctx: &SessionContext) {
    let haversine = Arc::new(|args: &[ColumnarValue]| {
        let n = rows(args);
        let c: Vec<Float64Array> = args
            .iter()
            .map(|a| floats(a, n))
            .collect::<datafusion::error::Result<_>>()?;
        let out: Float64Array = (0..n)
            .map(|i| {
                if c.iter().any(|a| a.is_null(i)) {
                    None
                } else {
                    Some(haversine_km(
                        c[0].value(i),
                        c[1].value(i),
                        c[2].value(i),
                        c[3].value(i),
                    ))
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    ctx.register_udf(create_udf(
        "haversine_km",
        vec![DataType::Float64; 4],
        DataType::Float64,
        Volatility::Immutable,
        haversine,
    ));
    let speed = Arc::new(|args: &[ColumnarValue]| {
        let n = rows(args);
        let km = floats(&args[0], n)?;
        let a = micros(&args[1], n)?;
        let b = micros(&args[2], n)?;
        let (a, b) = (
            a.as_primitive::<TimestampMicrosecondType>(),
            b.as_primitive::<TimestampMicrosecondType>(),
        );
        let out: Float64Array = (0..n)
            .map(|i| {
                if km.is_null(i) || a.is_null(i) || b.is_null(i) {
                    None
                } else {
                    Some(speed_kmh(km.value(i), a.value(i), b.value(i)))
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    ctx.register_udf(create_udf(
        "speed_kmh",
        vec![DataType::Float64, ts.clone(), ts],
        DataType::Float64,
        Volatility::Immutable,
        speed,
    ));
}
