-- Raw fact rows that repeat an earlier row's transaction_id (a producer retry
-- landed twice under two offsets): every occurrence after the first by source
-- position (source, partition, offset). stg_transactions leaves them out.
-- Candidates come from int_duplicate_hashes (ids grouped by a 64-bit hash);
-- they are confirmed here on the real ids, so a hash collision cannot drop a
-- transaction.
WITH candidates AS (
    SELECT f.transaction_id, f.source, f.source_partition, f.source_offset
    FROM fact_transaction f
    JOIN {{ ref('int_duplicate_hashes') }} d ON txpipe_hash64(f.transaction_id) = d.h
),
ranked AS (
    SELECT
        transaction_id,
        source,
        source_partition,
        source_offset,
        ROW_NUMBER() OVER (
            PARTITION BY transaction_id
            ORDER BY source, source_partition, source_offset
        ) AS occurrence
    FROM candidates
)
SELECT transaction_id, source, source_partition, source_offset, occurrence
FROM ranked
WHERE occurrence > 1
