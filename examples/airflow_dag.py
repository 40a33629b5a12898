"""Monthly statements, then a summary for each account manager, sent from Airflow.

Needs ``pip install 'mailconduit[airflow]'`` where Airflow runs, an Airflow connection
``billing_db`` to the database that holds the ``customers`` table (Postgres here: any
connection whose hook speaks DB-API works), and an Airflow connection ``smtp_default``
of type ``smtp`` or ``mailconduit``. When Airflow retries a task, its mailconduit run
resumes: a customer whose statement the server accepted never gets a second one.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import DAG

from mailconduit.airflow.operators import MailconduitExportOperator

REPORTS = os.environ.get("STATEMENT_REPORTS", "/tmp")  # where each run's row-by-row report goes

with DAG(
    dag_id="customer_statements",
    schedule="@monthly",
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
) as dag:
    statements = MailconduitExportOperator(
        task_id="statements",
        # Airflow renders these before the task runs: {{ ds }} is the run's date.
        conn_id="billing_db",
        sql="SELECT customer_id, email, name, balance FROM customers "
        "WHERE billed_on = '{{ ds }}' AND balance > 0",
        subject_prefix="[{{ ds }}] ",
        report=REPORTS + "/statements-{{ ds_nodash }}.csv",
        # mailconduit renders these for each row, over the row's columns.
        to="{{ email }}",
        subject="Your statement, {{ name }}",
        body="Dear {{ name }},\n\nyour balance is {{ balance }} EUR.\n",
        key="customer_id",
        smtp_conn_id="smtp_default",
        rate="10/s",
    )
    summaries = MailconduitExportOperator(
        task_id="manager_summaries",
        conn_id="billing_db",
        sql="SELECT account_manager, name, balance FROM customers "
        "WHERE billed_on = '{{ ds }}' ORDER BY balance DESC",
        mode="group",  # one message per account manager, carrying their rows
        by="account_manager",
        to="{{ group }}",
        subject="Your {{ count }} customers this month",
        body="{% for r in rows %}{{ r.name }}: {{ r.balance }} EUR\n{% endfor %}",
        table_formats=["html", "xlsx"],
        smtp_conn_id="smtp_default",
    )
    statements >> summaries
