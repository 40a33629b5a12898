"""examples/airflow_dag.py, the README's DAG, run as written against PostgreSQL and an SMTP
server given as the Airflow connections it names."""

from __future__ import annotations

import csv
import email
import os
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import HERE, dag_test, write_dag

EXAMPLE = HERE.parent.parent / "examples" / "airflow_dag.py"


def test_the_readme_dag_sends_statements_and_summaries(
    smtp_server: Any, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE customers (customer_id int PRIMARY KEY, email text, name text, "
            "balance numeric(10, 2), account_manager text, billed_on date)"
        )
        db.execute(
            "INSERT INTO customers VALUES "
            "(1, 'ann@example.com', 'Ann', 120.50, 'max@example.com', '2024-03-01'), "
            "(2, 'bob@example.com', 'Bob', 0, 'max@example.com', '2024-03-01'), "
            "(3, 'cy@example.com', 'Cy', 80, 'eva@example.com', '2024-03-01'), "
            "(4, 'dee@example.com', 'Dee', 99, 'eva@example.com', '2024-02-01')"
        )
    monkeypatch.setenv("AIRFLOW_CONN_BILLING_DB", pg_url)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", os.environ["AIRFLOW_CONN_SMTP_TEST"])
    monkeypatch.setenv("STATEMENT_REPORTS", str(tmp_path))
    dag_file = write_dag("example_statements", EXAMPLE.read_text(encoding="utf-8"))

    result = dag_test(dag_file, "customer_statements", "2024-03-01")

    assert result.state == "success", result.states
    messages = [
        email.message_from_bytes(m.data, policy=default_policy) for m in smtp_server.messages
    ]
    by_to = {str(m["To"]): m for m in messages}
    assert sorted(by_to) == ["ann@example.com", "cy@example.com", "eva@example.com",
                             "max@example.com"]  # fmt: skip
    assert by_to["ann@example.com"]["Subject"] == "[2024-03-01] Your statement, Ann"
    body = by_to["ann@example.com"].get_body()
    assert body is not None and "your balance is 120.50 EUR" in body.get_content()
    summary = by_to["max@example.com"]
    assert summary["Subject"] == "Your 2 customers this month"
    attached = [part.get_filename() for part in summary.iter_attachments()]
    assert any(name and name.endswith(".xlsx") for name in attached), attached
    with open(tmp_path / "statements-20240301.csv", newline="", encoding="utf-8") as fh:
        assert [row["status"] for row in csv.DictReader(fh)] == ["sent", "sent"]
    assert result.xcom["statements"]["counts"] == {"sent": 2}
    assert result.xcom["manager_summaries"]["counts"] == {"sent": 2}
