-- Revenue and fraud per merchant category ('unknown' when the merchant is not in dim_merchant).
SELECT
    COALESCE(merchant_category, 'unknown') AS category,
    SUM(amount_usd) AS revenue_usd,
    COUNT(*) AS txn_count,
    CAST(AVG(amount_usd) AS DECIMAL(18, 2)) AS avg_ticket_usd,
    SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count,
    CAST(SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS fraud_rate,
    COUNT(DISTINCT merchant_id) AS merchants
FROM {{ ref('stg_transactions') }}
GROUP BY COALESCE(merchant_category, 'unknown')
ORDER BY category
