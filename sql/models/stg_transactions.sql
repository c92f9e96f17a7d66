{{ config(materialized='view') }}
-- Staging: one row per transaction_id, enriched with the customer and merchant
-- dimensions. A producer retry can land one transaction twice under two
-- offsets; the first by source position is kept (see duplicate_transactions)
-- so revenue is never doubled. Amounts are already in USD (converted at ingest
-- with the lake's fx_rate table), so no fx join is needed here.
SELECT
    t.transaction_id,
    t.transaction_ts,
    t.event_date,
    t.customer_id,
    c.name AS customer_name,
    c.home_country AS customer_home_country,
    t.merchant_id,
    m.name AS merchant_name,
    m.category AS merchant_category,
    m.country AS merchant_country,
    t.amount,
    t.currency,
    t.amount_usd,
    t.latitude,
    t.longitude,
    t.device_id,
    t.payment_method,
    t.is_foreign,
    t.is_fraud,
    t.fraud_reasons,
    t.source,
    t.source_partition,
    t.source_offset
FROM {{ ref('int_transactions') }} t
LEFT JOIN dim_customer c ON t.customer_id = c.customer_id
LEFT JOIN dim_merchant m ON t.merchant_id = m.merchant_id
