"""The operator in DAG runs (``dag.test()`` in this process): where data comes from, which
Jinja renders what, what goes to XCom, the log and the report, how failures end the task,
and a retry by Airflow itself resuming the run."""

from __future__ import annotations

import csv
import email
import textwrap
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import psycopg
import pytest
from support import dag_test, write_dag

from mailconduit import api
from mailconduit.airflow.mapping import run_id_for

HEADER = """
import datetime as dt
from airflow.sdk import DAG, task
from mailconduit.airflow.operators import MailconduitExportOperator

ARGS = {"retries": 1, "retry_delay": dt.timedelta(seconds=0)}
"""


def _dag_file(dag_id: str, tasks: str, preamble: str = "") -> Path:
    """A DAG file whose DAG ``dag_id`` (retries=1 without delay) holds ``tasks``."""
    head = f'with DAG("{dag_id}", schedule=None, start_date=dt.datetime(2024, 1, 1), default_args=ARGS) as dag:\n'
    return write_dag(dag_id, HEADER + preamble + head + textwrap.indent(tasks, "    "))


def _messages(server: Any) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(m.data, policy=default_policy) for m in server.messages]


def test_rows_from_xcom_go_out_with_the_row_templates_left_to_mailconduit(smtp_server: Any) -> None:
    dag_file = _dag_file(
        "xcom_rows",
        """
@task
def people():
    return [{"email": "ann@example.com", "name": "Ann"}, {"email": "bob@example.com", "name": "Bob"}]

MailconduitExportOperator(
    task_id="send", source=people(), smtp_conn_id="smtp_test",
    to="{{ email }}", subject="Hello {{ name }}", subject_prefix="[{{ ds }}] ",
    body="Dear {{ name }}, {{ '{{' }}literal{{ '}}' }}",
)
""",
    )
    result = dag_test(dag_file, "xcom_rows", "2024-03-01")

    assert result.state == "success"
    by_to = {str(m["To"]): m for m in _messages(smtp_server)}
    assert sorted(by_to) == ["ann@example.com", "bob@example.com"]
    assert by_to["ann@example.com"]["Subject"] == "[2024-03-01] Hello Ann"
    assert by_to["bob@example.com"].get_content().rstrip() == "Dear Bob, {{literal}}"
    expected = run_id_for("xcom_rows", "send", result.run_id, -1)
    assert result.xcom["send"]["run_id"] == expected
    assert result.xcom["send"]["counts"] == {"sent": 2}
    assert [run.run_id for run in api.list_runs()] == [expected]


def test_sql_on_an_airflow_postgres_connection_is_rendered_by_airflow(
    smtp_server: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("CREATE TABLE people (email text, name text, day date)")
        db.execute(
            "INSERT INTO people VALUES ('ann@example.com', 'Ann', '2024-03-01'), "
            "('bob@example.com', 'Bob', '2024-03-02'), ('cy@example.com', 'Cy', '2024-03-01')"
        )
    monkeypatch.setenv("AIRFLOW_CONN_PG_SOURCE", pg_url)
    dag_file = _dag_file(
        "pg_rows",
        """
MailconduitExportOperator(
    task_id="send", conn_id="pg_source", smtp_conn_id="smtp_test",
    sql="SELECT email, name FROM people WHERE day = '{{ ds }}' AND name <> %(skip)s ORDER BY name",
    parameters={"skip": "{{ params.skip }}"}, params={"skip": "Cy"},
    to="{{ email }}", subject="Today, {{ name }}", body="Hi",
)
""",
    )
    result = dag_test(dag_file, "pg_rows", "2024-03-01")

    assert result.state == "success"
    assert [(str(m["To"]), m["Subject"]) for m in _messages(smtp_server)] == [
        ("ann@example.com", "Today, Ann")
    ]
    assert result.xcom["send"]["counts"] == {"sent": 1}


def test_an_airflow_macro_in_a_row_template_reaches_mailconduit_and_fails_the_task_for_good(
    smtp_server: Any,
) -> None:
    dag_file = _dag_file(
        "macro_in_to",
        """
MailconduitExportOperator(
    task_id="send", source=[{"email": "ann@example.com"}], smtp_conn_id="smtp_test",
    to="{{ ds }}", subject="Hi", body="Hi",
)
""",
    )
    result = dag_test(dag_file, "macro_in_to", "2024-03-01")

    assert result.states["send"] == "failed"
    assert result.tries["send"] == 1  # bad settings: no retry, although retries=1
    assert smtp_server.messages == []
    assert api.list_runs() == []


def test_a_dataframe_with_a_bad_row_fails_the_task_and_the_report_file_says_which(
    smtp_server: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    dag_file = _dag_file(
        "frame",
        f"""
MailconduitExportOperator(
    task_id="send", source=FRAME, smtp_conn_id="smtp_test", to="{{{{ email }}}}",
    subject="Hi {{{{ name }}}}", body="Hi", report="{tmp_path}/report-{{{{ ds_nodash }}}}.csv",
)
""",
        preamble="""
import pandas as pd

FRAME = pd.DataFrame({"email": ["ann@example.com", "not an address", "cy@example.com"],
                      "name": ["Ann", "Nobody", "Cy"]})

""",
    )
    result = dag_test(dag_file, "frame", "2024-03-01")

    assert result.states["send"] == "failed"
    assert result.tries["send"] == 1  # a row that cannot be sent fails again on a retry
    assert sorted(str(m["To"]) for m in _messages(smtp_server)) == [
        "ann@example.com",
        "cy@example.com",
    ]
    with open(tmp_path / "report-20240301.csv", newline="", encoding="utf-8") as fh:
        rows = {row["row_number"]: row for row in csv.DictReader(fh)}
    assert [rows[n]["status"] for n in ("1", "2", "3")] == ["sent", "skipped", "sent"]
    assert rows["2"]["column"] == "email"
    task_log = "".join(capfd.readouterr())
    assert "row 2: skipped (column email)" in task_log


def test_each_mapped_task_instance_has_a_run_of_its_own(smtp_server: Any, tmp_path: Path) -> None:
    files = []
    for part in ("a", "b"):
        path = tmp_path / f"{part}.csv"
        path.write_text(f"email\n{part}1@example.com\n{part}2@example.com\n", encoding="utf-8")
        files.append(str(path))
    dag_file = _dag_file(
        "mapped",
        f"""
MailconduitExportOperator.partial(
    task_id="send", smtp_conn_id="smtp_test", to="{{{{ email }}}}", subject="Part", body="Hi",
).expand(source={files!r})
""",
    )
    result = dag_test(dag_file, "mapped", "2024-03-01")

    assert result.state == "success"
    assert len(smtp_server.messages) == 4
    run_ids = {result.xcom[f"send[{i}]"]["run_id"] for i in (0, 1)}
    assert run_ids == {run_id_for("mapped", "send", result.run_id, i) for i in (0, 1)}


def test_a_run_that_stops_is_resumed_by_airflows_own_retry(tmp_path: Path) -> None:
    """The server goes away after 30 messages and refuses sessions a while: the run stops
    (interrupted), the task fails, Airflow runs try 2, which sends the other 30 only."""
    from support import smtp_connection_json

    from mailconduit.testing import FaultServer

    faults = {("MAIL", 31): "421 4.3.2 going down"}
    faults |= {("BANNER", n): "421 4.3.2 not now" for n in range(2, 7)}
    source = tmp_path / "people.csv"
    with open(source, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email"])
        writer.writerows([f"r{i}@example.com"] for i in range(60))
    with FaultServer(faults=faults) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_SMTP_FLAKY", smtp_connection_json(server.port))
        dag_file = _dag_file(
            "flaky",
            f"""
MailconduitExportOperator(
    task_id="send", source="{source}", smtp_conn_id="smtp_flaky", to="{{{{ email }}}}",
    subject="Once", body="Hi", concurrency=1,
)
""",
        )
        result = dag_test(dag_file, "flaky", "2024-03-01")

    assert result.state == "success"
    assert result.tries["send"] == 2
    recipients = [m.rcpt_tos for m in server.messages]
    assert sorted(recipients) == sorted((f"r{i}@example.com",) for i in range(60))
    assert result.xcom["send"]["sent_before"] == 30
    assert [run.run_id for run in api.list_runs()] == [result.xcom["send"]["run_id"]]
