"""The hook: an Airflow connection (from Airflow's secrets backends) as a mailconduit
connection, its errors named by Airflow field, and Airflow's "Test" button running
mailconduit's Test Connection through Airflow's own REST endpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import dag_test, dag_test_command, outcome_of, write_dag

from mailconduit.airflow.hooks import MailconduitHook
from mailconduit.config import Security
from mailconduit.errors import ConfigError
from mailconduit.testing import FaultServer, free_port


def _airflow_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_an_smtp_connection_means_what_the_smtp_provider_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _airflow_connection(
        monkeypatch, "office", conn_type="smtp", host="smtp.example.com", port=587,
        login="reports@example.com", password="p@ss:w/rd",
        extra={"from_email": "noreply@example.com", "timeout": 12, "disable_ssl": "true",
               "ssl_context": "none", "retry_limit": 3, "from_name": "Reports"},
    )  # fmt: skip
    conn = MailconduitHook("office").get_conn()

    assert (conn.host, conn.port, conn.security) == ("smtp.example.com", 587, Security.STARTTLS)
    assert conn.username == "reports@example.com"
    assert conn.password is not None and conn.password.reveal() == "p@ss:w/rd"
    assert (conn.from_address, conn.from_name) == ("noreply@example.com", "Reports")
    assert (conn.timeout_ms, conn.verify_tls) == (12000, False)


def test_a_mailconduit_connection_chooses_security_by_port(monkeypatch: pytest.MonkeyPatch) -> None:
    _airflow_connection(monkeypatch, "tls", conn_type="mailconduit", host="smtp.example.com",
                        port=465, login="u", password="secret")  # fmt: skip
    _airflow_connection(monkeypatch, "submission", conn_type="mailconduit",
                        host="smtp.example.com", port=587, login="u", password="secret")  # fmt: skip

    assert MailconduitHook("tls").get_conn().security is Security.TLS
    assert MailconduitHook("submission").get_conn().security is Security.STARTTLS


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"disable_ssl": "maybe"}, "extra.disable_ssl: 'maybe' must be true or false"),
        ({"from_email": "nobody"}, "extra.from_email: 'nobody' is not an e-mail address"),
        ({"colour": "blue"}, "extra.colour: is not a connection field"),
        (
            {"auth_type": "oauth2"},
            "extra.auth_type: only basic, or oauth2 with an access_token extra",
        ),
    ],
)
def test_a_wrong_field_is_named_as_airflow_shows_it(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, str], named: str
) -> None:
    _airflow_connection(monkeypatch, "bad", conn_type="smtp", host="smtp.example.com",
                        port=465, login="u", password="secret", extra=extra)  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        MailconduitHook("bad").get_conn()
    assert str(caught.value).startswith(f"invalid Airflow connection 'bad': {named}")


def _test_button(api_server: str, **connection: Any) -> dict[str, Any]:
    """What the connection form's "Test" button asks Airflow's REST API."""
    reply = httpx.post(f"{api_server}/api/v2/connections/test", timeout=120,
                       json={"connection_id": "draft", **connection})  # fmt: skip
    reply.raise_for_status()
    result: dict[str, Any] = reply.json()
    return result


def test_the_test_button_gives_mailconduits_diagnosis_stage_by_stage(api_server: str) -> None:
    with FaultServer(credentials={"reports": "right"}) as server:
        fields = {"conn_type": "mailconduit", "host": "127.0.0.1", "port": server.port,
                  "login": "reports", "extra": json.dumps({"security": "none"})}  # fmt: skip
        passed = _test_button(api_server, password="right", **fields)
        refused = _test_button(api_server, password="wrong", **fields)
    closed = _test_button(api_server, **{**fields, "port": free_port()}, password="right")

    assert passed["status"] is True
    first, *details = passed["message"].splitlines()
    assert first.startswith(f"success: 127.0.0.1:{server.port} (security none)")
    assert "  stages passed: dns, tcp, banner, ehlo, auth, quit" in details
    assert "  authenticated as: reports" in details
    assert refused["status"] is False
    assert refused["message"].startswith("FAILED at stage auth")
    assert "wrong" not in refused["message"]
    assert closed["status"] is False
    assert closed["message"].startswith("FAILED at stage tcp")


def test_the_password_is_kept_nowhere_by_mailconduit(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "Pa55-only-in-airflow"
    with FaultServer(credentials={"reports": password}) as server:
        _airflow_connection(monkeypatch, "authed", conn_type="mailconduit", host="127.0.0.1",
                            port=server.port, login="reports", password=password,
                            extra={"security": "none", "from_address": "r@example.com"})  # fmt: skip
        dag_file = write_dag(
            "authed",
            """
import datetime as dt
from airflow.sdk import DAG
from mailconduit.airflow.operators import MailconduitExportOperator

with DAG("authed", schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
    MailconduitExportOperator(task_id="send", source=[{"email": "ann@example.com"}],
                              smtp_conn_id="authed", to="{{ email }}", subject="S", body="B")
""",
        )
        result = dag_test(dag_file, "authed", "2024-03-01")

    assert result.state == "success"
    assert {s.authenticated_as for s in server.sessions} == {"reports"}
    assert not [var for var in os.environ if var.startswith("MAILCONDUIT_CONN_")]
    for path in home.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_the_connection_can_come_from_a_secrets_backend(tmp_path: Path) -> None:
    """Airflow's local-file secrets backend, in a process of its own (backends are read once
    per process): the operator reads the connection through Airflow, as any hook does."""
    import subprocess

    dag_file = write_dag(
        "from_file",
        """
import datetime as dt
from airflow.sdk import DAG
from mailconduit.airflow.operators import MailconduitExportOperator

with DAG("from_file", schedule=None, start_date=dt.datetime(2024, 1, 1)) as dag:
    MailconduitExportOperator(task_id="send", source=[{"email": "ann@example.com"}],
                              smtp_conn_id="from_file", to="{{ email }}", subject="S", body="B")
""",
    )
    with FaultServer() as server:
        conn_file = tmp_path / "connections.json"
        conn_file.write_text(json.dumps({"from_file": {
            "conn_type": "smtp", "host": "127.0.0.1", "port": server.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "r@example.com"},
        }}), encoding="utf-8")  # fmt: skip
        done = subprocess.run(
            dag_test_command(dag_file, "from_file", "2024-03-01", "--conn-file", str(conn_file)),
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    assert outcome_of(done.returncode, done.stdout + done.stderr)["state"] == "success"
    assert [m.rcpt_tos for m in server.messages] == [("ann@example.com",)]
