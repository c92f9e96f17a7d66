{{ config(materialized='incremental', unique_key=['event_date', 'rule'], partition_by='event_date') }}
-- Fraud hits per rule and day, in long form (one row per rule): what the
-- dashboard's "fraud by rule" panel reads, whatever rules the project defines.
-- Incremental: a run recomputes only the event days new commits touched.
SELECT
    event_date,
    rule,
    COUNT(*) AS hits,
    SUM(amount_usd) AS amount_usd
FROM (
    SELECT event_date, amount_usd, unnest(fraud_reasons) AS rule
    FROM {{ ref('int_transactions') }}
    WHERE is_fraud
)
GROUP BY event_date, rule
ORDER BY event_date, rule
