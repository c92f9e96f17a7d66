{{ config(materialized='view') }}
-- Staging: one row per transaction_id, enriched with the customer and merchant
-- dimensions. A producer retry can land one transaction twice under two
-- offsets; the first by source position (source, partition, offset) is kept so
-- revenue is never doubled. Amounts are already in USD (converted at ingest
-- with the lake's fx_rate table), so no fx join is needed here.
WITH ranked AS (
    SELECT
        f.*,
        ROW_NUMBER() OVER (
            PARTITION BY f.transaction_id
            ORDER BY f.source, f.source_partition, f.source_offset
        ) AS position_rank
    FROM fact_transaction f
)
SELECT
    r.transaction_id,
    r.transaction_ts,
    r.event_date,
    r.customer_id,
    c.name AS customer_name,
    c.home_country AS customer_home_country,
    r.merchant_id,
    m.name AS merchant_name,
    m.category AS merchant_category,
    m.country AS merchant_country,
    r.amount,
    r.currency,
    r.amount_usd,
    r.latitude,
    r.longitude,
    r.device_id,
    r.payment_method,
    r.is_foreign,
    r.is_fraud,
    r.fraud_reasons,
    r.source,
    r.source_partition,
    r.source_offset
FROM ranked r
LEFT JOIN dim_customer c ON r.customer_id = c.customer_id
LEFT JOIN dim_merchant m ON r.merchant_id = m.merchant_id
WHERE r.position_rank = 1
