{{ config(materialized='incremental', unique_key=['event_date', 'customer_id'], partition_by='event_date') }}
-- Per customer and day (incremental: a run recomputes only the event days
-- the fact table's new commits touched): the building block of customer_kpis and the daily
-- distinct-customer count.
SELECT
    event_date,
    customer_id,
    COUNT(*) AS txn_count,
    SUM(amount_usd) AS amount_usd,
    MAX(amount_usd) AS max_amount_usd,
    MIN(transaction_ts) AS first_transaction_ts,
    MAX(transaction_ts) AS last_transaction_ts,
    SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count,
    SUM(CASE WHEN is_foreign THEN 1 ELSE 0 END) AS foreign_count
FROM {{ ref('int_transactions') }}
GROUP BY event_date, customer_id
