-- Spend and risk per customer, with the customer dimension.
SELECT
    customer_id,
    MAX(customer_name) AS customer_name,
    MAX(customer_home_country) AS home_country,
    COUNT(*) AS txn_count,
    SUM(amount_usd) AS total_spend_usd,
    CAST(AVG(amount_usd) AS DECIMAL(18, 2)) AS avg_spend_usd,
    MAX(amount_usd) AS max_spend_usd,
    MIN(transaction_ts) AS first_transaction_ts,
    MAX(transaction_ts) AS last_transaction_ts,
    SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count,
    CAST(SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS fraud_rate,
    CAST(SUM(CASE WHEN is_foreign THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS foreign_share
FROM {{ ref('stg_transactions') }}
GROUP BY customer_id
ORDER BY customer_id
