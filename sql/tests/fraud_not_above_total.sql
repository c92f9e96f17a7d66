-- A day's fraud amount never exceeds its total amount.
SELECT event_date, fraud_amount_usd, total_amount_usd
FROM {{ ref('daily_sales_summary') }}
WHERE fraud_amount_usd > total_amount_usd
