-- Revenue and fraud per event day. `rule_hits('fraud_reasons')` expands to one
-- `<rule>_hits` column per fraud rule of the project's rules file.
SELECT
    event_date,
    COUNT(*) AS txn_count,
    SUM(amount_usd) AS total_amount_usd,
    CAST(AVG(amount_usd) AS DECIMAL(18, 2)) AS avg_amount_usd,
    SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count,
    COALESCE(SUM(CASE WHEN is_fraud THEN amount_usd END), CAST(0 AS DECIMAL(28, 2))) AS fraud_amount_usd,
    CAST(SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) AS fraud_rate,
    COUNT(DISTINCT customer_id) AS distinct_customers,
    COUNT(DISTINCT merchant_id) AS distinct_merchants,
    {{ rule_hits('fraud_reasons') }}
FROM {{ ref('stg_transactions') }}
GROUP BY event_date
ORDER BY event_date
