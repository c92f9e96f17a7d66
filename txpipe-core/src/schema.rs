//! The lake contract: table names, folder layout and Arrow schemas.
//!
//! Everything here is public API in the strong sense: DuckDB, Spark, pyarrow and
//! BI tools read the lake with these names and types, so changes are breaking.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Fact table of landed transactions: `LAKE/fact_transaction/event_date=YYYY-MM-DD/`.
pub const FACT_TABLE: &str = "fact_transaction";
/// Records that could not be typed: `LAKE/quarantine/received_date=YYYY-MM-DD/`.
pub const QUARANTINE_TABLE: &str = "quarantine";
/// Customer dimension loaded by `txpipe seed`.
pub const DIM_CUSTOMER: &str = "dim_customer";
/// Merchant dimension loaded by `txpipe seed`.
pub const DIM_MERCHANT: &str = "dim_merchant";
/// Currency → USD conversion rates loaded by `txpipe seed`.
pub const FX_RATE: &str = "fx_rate";
/// Fraud labels (`transaction_id,scenario`) loaded by `txpipe seed` from
/// `fraud_labels.csv`, for the quality report.
pub const FRAUD_LABELS: &str = "fraud_labels";
/// txpipe's own bookkeeping (run records, locks, staged marts).
pub const TXPIPE_DIR: &str = "_txpipe";
/// Hive partition column of the fact table (UTC date of `transaction_ts`).
pub const EVENT_DATE: &str = "event_date";
/// Hive partition column of the quarantine table (UTC date the record was received).
pub const RECEIVED_DATE: &str = "received_date";

/// Scale of every money column (`Decimal128(18, 2)`).
pub const MONEY_SCALE: i8 = 2;
/// Precision of every money column (`Decimal128(18, 2)`).
pub const MONEY_PRECISION: u8 = 18;
/// Largest absolute value (in cents) a `Decimal128(18, 2)` holds.
pub const MAX_MONEY_CENTS: i128 = 999_999_999_999_999_999;

/// The accepted `payment_method` values (others land and fail a data test).
pub const PAYMENT_METHODS: [&str; 4] = [
    "credit_card",
    "debit_card",
    "mobile_wallet",
    "bank_transfer",
];

fn money() -> DataType {
    DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE)
}

fn ts_utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Data type of `fraud_reasons`: `List<Utf8>` with arrow's standard `item` field.
pub fn fraud_reasons_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// The 11 fields of the input message, typed: the decoder's output schema.
pub static TRANSACTION_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("transaction_ts", ts_utc(), false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("amount", money(), false),
        Field::new("currency", DataType::Utf8, false),
        Field::new("latitude", DataType::Float64, true),
        Field::new("longitude", DataType::Float64, true),
        Field::new("device_id", DataType::Utf8, true),
        Field::new("payment_method", DataType::Utf8, true),
        Field::new("is_foreign", DataType::Boolean, false),
        Field::new("amount_usd", money(), false),
        Field::new("source", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("ingested_at", ts_utc(), false),
    ]))
});

/// Columns of a fact file (the partition column `event_date` lives in the folder name).
///
/// Order: the 11 input fields, `amount_usd`, `fraud_reasons`, `is_fraud`,
/// `risk_score` (sum of the weights of the rules that fired), `fraud_evidence`
/// (JSON text: rule → the values that made it fire; NULL when none fired),
/// then lineage.
pub static FACT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let t = &TRANSACTION_SCHEMA;
    let mut fields: Vec<Field> = t.fields()[..12]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("fraud_reasons", fraud_reasons_type(), false));
    fields.push(Field::new("is_fraud", DataType::Boolean, false));
    fields.push(Field::new("risk_score", DataType::Float64, true));
    fields.push(Field::new("fraud_evidence", DataType::Utf8, true));
    fields.extend(t.fields()[12..].iter().map(|f| f.as_ref().clone()));
    Arc::new(Schema::new(fields))
});

/// Columns of a quarantine file (partition column `received_date` in the folder name).
pub static QUARANTINE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("payload", DataType::Binary, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("source_partition", DataType::Int32, false),
        Field::new("source_offset", DataType::Int64, false),
        Field::new("received_at", ts_utc(), false),
    ]))
});

/// `dim_customer.csv`: `customer_id,name,home_country,signup_date`.
pub static DIM_CUSTOMER_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("home_country", DataType::Utf8, true),
        Field::new("signup_date", DataType::Date32, true),
    ]))
});

/// `fraud_labels.csv`: `transaction_id,scenario`.
pub static FRAUD_LABELS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("scenario", DataType::Utf8, false),
    ]))
});

/// `dim_merchant.csv`: `merchant_id,name,category,country`.
pub static DIM_MERCHANT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
    ]))
});

/// `fx_rates.csv`: `currency,usd_rate` (USD per one unit of `currency`).
pub static FX_RATE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("currency", DataType::Utf8, false),
        Field::new("usd_rate", DataType::Float64, false),
    ]))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_schema_has_contract_columns_in_order() {
        let names: Vec<&str> = FACT_SCHEMA
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "transaction_id",
                "transaction_ts",
                "customer_id",
                "merchant_id",
                "amount",
                "currency",
                "latitude",
                "longitude",
                "device_id",
                "payment_method",
                "is_foreign",
                "amount_usd",
                "fraud_reasons",
                "is_fraud",
                "risk_score",
                "fraud_evidence",
                "source",
                "source_partition",
                "source_offset",
                "ingested_at"
            ]
        );
    }
}
