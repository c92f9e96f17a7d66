-- Revenue and fraud per merchant, with the merchant dimension.
WITH k AS (
    SELECT
        merchant_id,
        SUM(amount_usd) AS revenue_usd,
        SUM(txn_count) AS txn_count,
        SUM(fraud_count) AS fraud_count
    FROM {{ ref('int_merchant_daily') }}
    GROUP BY merchant_id
)
SELECT
    k.merchant_id,
    m.name AS merchant_name,
    m.category,
    m.country,
    k.revenue_usd,
    k.txn_count,
    CAST(k.revenue_usd / k.txn_count AS DECIMAL(18, 2)) AS avg_ticket_usd,
    k.fraud_count,
    CAST(k.fraud_count AS DOUBLE) / k.txn_count AS fraud_rate
FROM k
LEFT JOIN dim_merchant m ON k.merchant_id = m.merchant_id
ORDER BY k.merchant_id
