{{ config(materialized='view') }}
-- The fact table without the duplicate rows (see duplicate_transactions): what
-- the marts aggregate. They join the dimensions after aggregating, which is
-- much cheaper than joining every transaction.
SELECT f.*
FROM fact_transaction f
LEFT ANTI JOIN {{ ref('duplicate_transactions') }} d
    ON f.event_date = d.event_date
    AND f.source = d.source
    AND f.source_partition = d.source_partition
    AND f.source_offset = d.source_offset
