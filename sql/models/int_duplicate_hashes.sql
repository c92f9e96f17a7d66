-- 64-bit hashes of transaction ids seen more than once: candidates for
-- duplicate_transactions. A cheap integer aggregation over the whole fact
-- table; usually empty, which lets the next step skip its scan.
SELECT txpipe_hash64(transaction_id) AS h, COUNT(*) AS occurrences
FROM fact_transaction
GROUP BY 1
HAVING COUNT(*) > 1
