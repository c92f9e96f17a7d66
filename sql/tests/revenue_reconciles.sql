-- The daily summary's revenue adds up to the staged transactions' revenue:
-- returns a row when the two totals differ.
SELECT s.total AS summary_total, t.total AS staged_total
FROM (SELECT SUM(total_amount_usd) AS total FROM {{ ref('daily_sales_summary') }}) s,
     (SELECT SUM(amount_usd) AS total FROM {{ ref('stg_transactions') }}) t
WHERE s.total IS DISTINCT FROM t.total
