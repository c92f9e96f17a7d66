{{ config(materialized='incremental', unique_key=['event_date', 'merchant_id'], partition_by='event_date') }}
-- Per merchant and day (incremental: a run recomputes only the event days
-- the fact table's new commits touched): the building block of the daily, merchant, category
-- and country marts (one scan of the transactions for all of them).
SELECT
    event_date,
    merchant_id,
    COUNT(*) AS txn_count,
    SUM(amount_usd) AS amount_usd,
    SUM(CASE WHEN is_fraud THEN 1 ELSE 0 END) AS fraud_count,
    SUM(CASE WHEN is_fraud THEN amount_usd END) AS fraud_amount_usd,
    {{ rule_hits('fraud_reasons') }}
FROM {{ ref('int_transactions') }}
GROUP BY event_date, merchant_id
