-- Revenue and fraud per event day. `rule_hits` columns: one `<rule>_hits`
-- count per fraud rule of the project's rules file.
WITH merchants AS (
    SELECT
        event_date,
        SUM(txn_count) AS txn_count,
        SUM(amount_usd) AS total_amount_usd,
        SUM(fraud_count) AS fraud_count,
        COALESCE(SUM(fraud_amount_usd), CAST(0 AS DECIMAL(28, 2))) AS fraud_amount_usd,
        COUNT(*) AS distinct_merchants,
        {{ rule_hits_sum() }}
    FROM {{ ref('int_merchant_daily') }}
    GROUP BY event_date
),
customers AS (
    SELECT event_date, COUNT(*) AS distinct_customers
    FROM {{ ref('int_customer_daily') }}
    GROUP BY event_date
)
SELECT
    m.event_date,
    m.txn_count,
    m.total_amount_usd,
    CAST(m.total_amount_usd / m.txn_count AS DECIMAL(18, 2)) AS avg_amount_usd,
    m.fraud_count,
    m.fraud_amount_usd,
    CAST(m.fraud_count AS DOUBLE) / m.txn_count AS fraud_rate,
    c.distinct_customers,
    m.distinct_merchants,
    {{ rule_hit_columns('m') }}
FROM merchants m
JOIN customers c ON m.event_date = c.event_date
ORDER BY m.event_date
