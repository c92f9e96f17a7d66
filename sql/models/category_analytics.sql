-- Revenue and fraud per merchant category ('unknown' when the merchant is not in dim_merchant).
WITH k AS (
    SELECT
        COALESCE(m.category, 'unknown') AS category,
        SUM(d.amount_usd) AS revenue_usd,
        SUM(d.txn_count) AS txn_count,
        SUM(d.fraud_count) AS fraud_count,
        COUNT(DISTINCT d.merchant_id) AS merchants
    FROM {{ ref('int_merchant_daily') }} d
    LEFT JOIN dim_merchant m ON d.merchant_id = m.merchant_id
    GROUP BY COALESCE(m.category, 'unknown')
)
SELECT
    category,
    revenue_usd,
    txn_count,
    CAST(revenue_usd / txn_count AS DECIMAL(18, 2)) AS avg_ticket_usd,
    fraud_count,
    CAST(fraud_count AS DOUBLE) / txn_count AS fraud_rate,
    merchants
FROM k
ORDER BY category
