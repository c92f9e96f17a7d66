{{ config(materialized='incremental', unique_key=['event_date', 'h'], partition_by='event_date') }}
-- 64-bit hashes of transaction ids seen more than once on an event day:
-- candidates for duplicate_transactions. A cheap integer aggregation; usually
-- empty, which lets the next step skip its scan. Per event_date, so a run
-- recomputes only the days new data touched: a producer retry re-sends the same
-- transaction (same transaction_ts), so its copies always share the day.
SELECT event_date, txpipe_hash64(transaction_id) AS h, COUNT(*) AS occurrences
FROM fact_transaction
GROUP BY 1, 2
HAVING COUNT(*) > 1
