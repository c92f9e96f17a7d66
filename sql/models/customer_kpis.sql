-- Spend and risk per customer, with the customer dimension (joined after
-- aggregating).
WITH k AS (
    SELECT
        customer_id,
        SUM(txn_count) AS txn_count,
        SUM(amount_usd) AS total_spend_usd,
        MAX(max_amount_usd) AS max_spend_usd,
        MIN(first_transaction_ts) AS first_transaction_ts,
        MAX(last_transaction_ts) AS last_transaction_ts,
        SUM(fraud_count) AS fraud_count,
        SUM(foreign_count) AS foreign_count
    FROM {{ ref('int_customer_daily') }}
    GROUP BY customer_id
)
SELECT
    k.customer_id,
    c.name AS customer_name,
    c.home_country,
    k.txn_count,
    k.total_spend_usd,
    CAST(k.total_spend_usd / k.txn_count AS DECIMAL(18, 2)) AS avg_spend_usd,
    k.max_spend_usd,
    k.first_transaction_ts,
    k.last_transaction_ts,
    k.fraud_count,
    CAST(k.fraud_count AS DOUBLE) / k.txn_count AS fraud_rate,
    CAST(k.foreign_count AS DOUBLE) / k.txn_count AS foreign_share
FROM k
LEFT JOIN dim_customer c ON k.customer_id = c.customer_id
ORDER BY k.customer_id
