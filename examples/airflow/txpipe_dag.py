"""Airflow DAG: the txpipe daily job, for teams that already run Airflow.

`txpipe run` does seed check -> models -> data tests -> publish as one command:
the marts are published only when the error-severity tests pass, and the exit
code is non-zero on failure, so Airflow's retries and alerting apply as usual.
txpipe also retries inside the run (--retries / --retry-backoff); here Airflow
owns the retries, so txpipe's own are turned off.

Install: copy this file into your DAGs folder, put the `txpipe` binary on the
workers' PATH (or set TXPIPE_BIN), and set TXPIPE_LAKE (a folder or an object
store URL such as s3://bucket/lake).
"""
import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

TXPIPE = os.environ.get("TXPIPE_BIN", "txpipe")
LAKE = os.environ.get("TXPIPE_LAKE", "/data/txpipe-lake")

with DAG(
    dag_id="txpipe_daily",
    description="txpipe models + data tests, published only when the tests pass",
    schedule="0 2 * * *",  # every day at 02:00
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 3,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "email_on_failure": True,
    },
    tags=["txpipe", "payments"],
) as dag:
    BashOperator(
        task_id="txpipe_run",
        bash_command=f"{TXPIPE} run --lake {LAKE} --retries 0",
    )
