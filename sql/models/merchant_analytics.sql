-- Revenue and fraud per merchant, with the merchant dimension.
SELECT
    merchant_id,
    MAX(merchant_name) AS merchant_name,
    MAX(merchant_category) AS category,
    MAX(merchant_country) AS country,
    SUM(amount_usd) AS revenue_usd,
    COUNT(*) AS txn_count,
    CAST(AVG(amount_usd) AS DECIMAL(18, 2)) AS avg_ticket_usd,
    SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count,
    CAST(SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS fraud_rate
FROM {{ ref('stg_transactions') }}
GROUP BY merchant_id
ORDER BY merchant_id
