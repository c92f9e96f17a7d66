-- The seed's Metabase questions as SQL for txpipe's Postgres endpoint
-- (txpipe serve --pg-addr 127.0.0.1:5433; psql -h 127.0.0.1 -p 5433 -d txpipe -f examples/pg_questions.sql).
-- Each runs unchanged on PostgreSQL too. Checked by tests/it/postgres.rs.
-- Daily revenue and fraud (line chart: event_date × revenue, fraud_rate)
SELECT event_date, total_amount_usd AS revenue_usd, txn_count, fraud_count, fraud_rate
FROM daily_sales_summary ORDER BY event_date;
-- Fraud by rule over the last 7 days
SELECT rule, SUM(hits) AS hits, SUM(amount_usd) AS amount_usd
FROM fraud_by_rule WHERE event_date >= (SELECT MAX(event_date) FROM fraud_by_rule) - INTERVAL '6 days'
GROUP BY rule ORDER BY hits DESC;
-- Customer KPIs: top 20 spenders with their fraud share
SELECT customer_name, home_country, txn_count, total_spend_usd, avg_spend_usd, fraud_count, fraud_rate
FROM customer_kpis ORDER BY total_spend_usd DESC LIMIT 20;
-- Merchant analytics: top merchants by revenue, and the riskiest with enough volume
SELECT merchant_name, category, country, revenue_usd, txn_count, fraud_rate
FROM merchant_analytics ORDER BY revenue_usd DESC LIMIT 10;
SELECT merchant_name, category, country, txn_count, fraud_count, fraud_rate
FROM merchant_analytics WHERE txn_count >= 50 ORDER BY fraud_rate DESC LIMIT 10;
-- Category and country analytics
SELECT category, revenue_usd, txn_count, avg_ticket_usd, fraud_rate FROM category_analytics ORDER BY revenue_usd DESC;
SELECT country, revenue_usd, txn_count, fraud_count, fraud_rate FROM country_analytics ORDER BY fraud_rate DESC;
-- Straight from the fact table: today's flagged transactions with customer and merchant names
SELECT f.transaction_ts, c.name AS customer, m.name AS merchant, f.amount_usd, f.risk_score, f.fraud_reasons
FROM fact_transaction f
LEFT JOIN dim_customer c ON c.customer_id = f.customer_id
LEFT JOIN dim_merchant m ON m.merchant_id = f.merchant_id
WHERE f.is_fraud AND f.event_date = (SELECT MAX(event_date) FROM fact_transaction)
ORDER BY f.risk_score DESC, f.transaction_ts DESC LIMIT 50;
