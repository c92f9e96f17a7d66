{{ config(materialized='incremental', unique_key=['event_date', 'source', 'source_partition', 'source_offset'], partition_by='event_date') }}
-- Raw fact rows that repeat an earlier row's transaction_id on the same event
-- day (a producer retry landed twice under two offsets): every occurrence after
-- the first by source position (source, partition, offset). stg_transactions
-- leaves them out. Candidates come from int_duplicate_hashes (ids grouped by a
-- 64-bit hash); they are confirmed here on the real ids, so a hash collision
-- cannot drop a transaction.
WITH candidates AS (
    SELECT f.event_date, f.transaction_id, f.source, f.source_partition, f.source_offset
    FROM fact_transaction f
    JOIN {{ ref('int_duplicate_hashes') }} d
        ON f.event_date = d.event_date AND txpipe_hash64(f.transaction_id) = d.h
),
ranked AS (
    SELECT
        event_date,
        transaction_id,
        source,
        source_partition,
        source_offset,
        ROW_NUMBER() OVER (
            PARTITION BY event_date, transaction_id
            ORDER BY source, source_partition, source_offset
        ) AS occurrence
    FROM candidates
)
SELECT event_date, transaction_id, source, source_partition, source_offset, occurrence
FROM ranked
WHERE occurrence > 1
