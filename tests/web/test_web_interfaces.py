"""Interfaces over real HTTP: REST operations (in the OpenAPI schema), console pages, a
PostgreSQL query source, database URLs never shown, failure notifications by e-mail and
webhook."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from export_support import connect_to, sink_messages, use_free_sink_port, write_csv
from mailconduit import api
from mailconduit.errors import MailconduitError
from mailconduit.interfaces import runner, service, store
from mailconduit.interfaces.model import DATA_DIRS_ENV
from mailconduit.testing import FaultServer
from webconsole import Console, SignedIn, form_values, running_console

ROWS = [
    {"email": "ann@example.com", "name": "Ann"},
    {"email": "bob@example.com", "name": "Bob"},
]
DB_SECRET = "Db-pa55word-never-shown"


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(DATA_DIRS_ENV, str(tmp_path / "data"))
    use_free_sink_port(monkeypatch)
    with running_console() as running:
        yield running


def export_settings(**extra: Any) -> dict[str, Any]:
    return {"connection": "local", "to": "{{ email }}", "subject": "Hi {{ name }}",
            "body": "Dear {{ name }}", **extra}  # fmt: skip


def upload(browser: SignedIn, tmp_path: Path, rows: list[dict[str, Any]] = ROWS) -> str:
    path = write_csv(tmp_path / "people.csv", rows)
    response = browser.api("POST", "/api/uploads", files={"file": ("people.csv", path.read_bytes())})
    assert response.status_code == 201, response.text
    return str(response.json()["upload"])


def wait_finished(browser: SignedIn, run_id: str) -> dict[str, Any]:
    done = threading.Event()
    status: dict[str, Any] = {}
    while not done.wait(0.05):
        status = browser.api("GET", f"/api/exports/{run_id}").json()
        if status["status"] != "running":
            done.set()
    return status


def test_rest_create_run_history_yaml_and_delete(browser: SignedIn, tmp_path: Path) -> None:
    ref = upload(browser, tmp_path)
    doc = {"name": "hello", "export": {"upload": ref, **export_settings()}}
    created = browser.api("POST", "/api/interfaces", json=doc)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["document"]["export"]["upload"] == ref
    assert str(tmp_path) not in created.text and "uploads" not in created.text
    shown = browser.api("GET", "/api/interfaces/hello").json()
    assert shown["problem"] == "" and shown["schedule"] == "by hand only"

    started = browser.api("POST", "/api/interfaces/hello/run")
    assert started.status_code == 202, started.text
    assert wait_finished(browser, started.json()["run_id"])["counts"]["sent"] == 2
    (run,) = browser.api("GET", "/api/interfaces/hello/runs").json()
    assert run["trigger"] == "manual" and run["run_id"] == started.json()["run_id"]

    text = browser.api("GET", "/api/interfaces/hello/yaml").text
    copy = yaml.safe_load(text)
    copy["name"] = "hello-again"
    copy["schedule"] = {"every_minutes": 15}
    imported = browser.api("POST", "/api/interfaces/import", json={"yaml": yaml.safe_dump(copy)})
    assert imported.status_code == 201, imported.text
    assert imported.json()["schedule"] == "every 15 minutes"
    assert imported.json()["next_run"]

    dup = browser.api("POST", "/api/interfaces/hello/duplicate", json={"name": "hello-3"})
    assert dup.status_code == 201 and dup.json()["schedule"] == "by hand only"
    names = [i["name"] for i in browser.api("GET", "/api/interfaces").json()]
    assert names == ["hello", "hello-3", "hello-again"]
    assert browser.api("DELETE", "/api/interfaces/hello").status_code == 204
    assert browser.api("GET", "/api/interfaces/hello").status_code == 404


def test_rest_refuses_server_files_and_names_the_field(browser: SignedIn, tmp_path: Path) -> None:
    doc = {"name": "sneaky", "export": {"source": "/etc/passwd", **export_settings()}}
    refused = browser.api("POST", "/api/interfaces", json=doc)
    assert refused.status_code == 422
    fields = [d["loc"][-1] for d in refused.json()["detail"]]
    assert fields == ["export.source"]
    ref = upload(browser, tmp_path)
    bad = {"name": "typo", "export": {"upload": ref, **export_settings(connection="nowhere")}}
    refused = browser.api("POST", "/api/interfaces", json=bad)
    assert refused.status_code == 422
    assert [d["loc"][-1] for d in refused.json()["detail"]] == ["connection"]


def test_operations_are_in_the_openapi_schema(browser: SignedIn) -> None:
    paths = browser.api("GET", "/api/openapi.json").json()["paths"]
    for path, method in [
        ("/api/interfaces", "get"), ("/api/interfaces", "post"), ("/api/interfaces/{name}", "put"),
        ("/api/interfaces/{name}", "delete"), ("/api/interfaces/{name}/run", "post"),
        ("/api/interfaces/{name}/duplicate", "post"), ("/api/interfaces/{name}/runs", "get"),
        ("/api/interfaces/{name}/yaml", "get"), ("/api/interfaces/import", "post"),
        ("/api/databases", "put"), ("/api/interface-files", "post"),
    ]:  # fmt: skip
        assert method in paths[path], (path, method)


def test_a_postgresql_query_interface(browser: SignedIn, pg_url: str, home: Path) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (email text, name text, active boolean)")
        conn.execute(
            "INSERT INTO customers VALUES ('ann@example.com', 'Ann', true), "
            "('bob@example.com', 'Bob', true), ('cy@example.com', 'Cy', false)"
        )
    user_url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_SECRET}@")
    saved = browser.api("PUT", "/api/databases", json={"name": "crm", "url": user_url})
    assert saved.status_code == 200, saved.text
    assert DB_SECRET not in saved.text
    doc: dict[str, Any] = {
        "name": "crm-mail",
        "database": "crm",
        "export": {"kind": "sql", "source": "SELECT email, name FROM customers WHERE active",
                   **export_settings()},
    }  # fmt: skip
    created = browser.api("POST", "/api/interfaces", json=doc)
    assert created.status_code == 201, created.text
    run_id = browser.api("POST", "/api/interfaces/crm-mail/run").json()["run_id"]
    assert wait_finished(browser, run_id)["counts"]["sent"] == 2
    assert sorted(m.recipients[0] for m in sink_messages()) == ["ann@example.com", "bob@example.com"]
    kept = b"".join(p.read_bytes() for p in home.glob("mailconduit.db*"))
    assert DB_SECRET.encode() not in kept, "the database password is in the store in clear"
    assert api.resume(run_id).status == "finished", "a sealed URL still opens for a resume"
    for path in ("/api/databases", "/api/interfaces/crm-mail", "/interfaces", "/interfaces/crm-mail"):
        page = browser.http.get(path)
        assert page.status_code == 200 and DB_SECRET not in page.text, path
    writes = {**doc, "export": {**doc["export"], "source": "DELETE FROM customers"}}
    assert browser.api("PUT", "/api/interfaces/crm-mail", json=writes).status_code == 200
    assert browser.api("GET", "/api/interfaces/crm-mail").json()["problem"]
    with pytest.raises(MailconduitError):
        runner.run_interface("crm-mail")
    latest = service.history("crm-mail")[0]
    assert latest.error and latest.run is None
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (3,)


def test_console_pages_create_edit_run_and_show_a_problem(
    browser: SignedIn, tmp_path: Path
) -> None:
    form = form_values(browser.http.get("/interfaces/new").text, "interface-form")
    form.update(name="monthly", to="{{ email }}", subject="Hi {{ name }}", body="Dear {{ name }}",
                source_type="upload", schedule_type="cron", cron="0 8 1 * *", timezone="Europe/Paris")  # fmt: skip
    data = write_csv(tmp_path / "people.csv", ROWS).read_bytes()
    saved = browser.http.post(
        "/interfaces/new",
        data={**form, "csrf_token": browser.csrf},
        files={"file": ("people.csv", data)},
        headers={"Origin": browser.origin},
    )
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"].startswith("/interfaces/monthly")
    page = browser.http.get("/interfaces/monthly").text
    assert 'id="problem-free"' in page and "cron 0 8 1 * * (Europe/Paris)" in page
    listing = browser.http.get("/interfaces").text
    assert "monthly" in listing and str(tmp_path) not in listing

    edit = form_values(browser.http.get("/interfaces/monthly/edit").text, "interface-form")
    assert edit["cron"] == "0 8 1 * *" and edit["to"] == "{{ email }}"
    edit.update(schedule_type="every", every_minutes="x")
    refused = browser.post_form("/interfaces/monthly/edit", edit)
    assert refused.status_code == 422 and 'id="err-every_minutes"' in refused.text
    edit.update(every_minutes="30", subject="Hello {{ name }}")
    assert browser.post_form("/interfaces/monthly/edit", edit).status_code == 303
    assert store.get_interface("monthly").schedule.every_minutes == 30

    ran = browser.post_form("/interfaces/monthly/run", {})
    assert ran.status_code == 303 and ran.headers["location"].startswith("/runs/monthly-")
    run_id = ran.headers["location"].split("/")[2].split("?")[0]
    wait_finished(browser, run_id)
    assert run_id in browser.http.get("/interfaces/monthly").text

    interface = store.get_interface("monthly")
    write_csv(Path(str(interface.export["source"])), [{"mail": "x@example.com", "name": "X"}])
    page = browser.http.get("/interfaces/monthly").text
    assert 'id="problem"' in page and "email" in page


def test_save_as_interface_from_an_export_preview(browser: SignedIn, tmp_path: Path) -> None:
    ref = upload(browser, tmp_path)
    preview = browser.post_form("/exports/new", {"upload": ref, **export_settings()})
    assert preview.status_code == 200 and 'id="save-as-interface"' in preview.text
    prefilled = browser.post_form("/interfaces/new", {"upload": ref, "from_export": "1", **export_settings()})
    assert prefilled.status_code == 200
    form = form_values(prefilled.text, "interface-form")
    assert form["upload"] == ref and form["subject"] == "Hi {{ name }}"
    form["name"] = "from-export"
    assert browser.post_form("/interfaces/new", form).status_code == 303
    assert runner.problem(store.get_interface("from-export")) == ""


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: Any) -> None:
        pass


def people_in_a_data_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ROWS as people.csv in an allowed data folder; the sink on a port of this test's own."""
    monkeypatch.setenv(DATA_DIRS_ENV, str(tmp_path))
    use_free_sink_port(monkeypatch)
    return write_csv(tmp_path / "people.csv", ROWS)


def test_failure_notifications_by_email_and_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = people_in_a_data_folder(tmp_path, monkeypatch)
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        with FaultServer(faults={("RCPT", 2): "550 5.1.1 no such user"}) as server:
            target = connect_to(monkeypatch, server.port)
            doc = {
                "name": "alerts",
                "export": {"source": str(source), **export_settings(connection=target)},
                "notify": {"emails": ["ops@example.com"], "connection": "local",
                           "webhook": f"http://127.0.0.1:{hook.server_port}/hook", "when": "failure"},
            }  # fmt: skip
            service.save_interface(doc)
            report = runner.run_interface("alerts")
        assert not report.ok and report.failed == 1
        (note,) = [m for m in sink_messages() if m.recipients == ("ops@example.com",)]
        assert "alerts" in note.header("Subject") and "failed" in note.header("Subject")
        assert "550 no such user" in note.text() or "550" in note.text()
        assert _Hook.arrived.wait(30)
        (summary,) = _Hook.received
        assert summary["interface"] == "alerts" and summary["ok"] is False
        assert summary["counts"]["failed"] == 1 and summary["failure_replies"][0]["rows"] == 1
    finally:
        hook.shutdown()


def test_no_notification_for_a_good_run_when_only_failures_are_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = people_in_a_data_folder(tmp_path, monkeypatch)
    doc = {"name": "quiet", "export": {"source": str(source), **export_settings()},
           "notify": {"emails": ["ops@example.com"], "when": "failure"}}  # fmt: skip
    service.save_interface(doc)
    assert runner.run_interface("quiet").ok
    assert all(m.recipients != ("ops@example.com",) for m in sink_messages())
    service.save_interface({**doc, "notify": {"emails": ["ops@example.com"], "when": "always"}},
                           existing="quiet")  # fmt: skip
    later = datetime.now(UTC) + timedelta(seconds=5)  # another run, not a resumption
    assert runner.run_interface("quiet", at=later).ok
    assert [m for m in sink_messages() if m.recipients == ("ops@example.com",)]


def test_pages_say_who_runs_the_schedules_and_how_notifications_went(
    browser: SignedIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import socket

    from mailconduit.interfaces import notify, schedule
    from mailconduit.interfaces.notify import WebhookRetry

    listing = browser.http.get("/interfaces").text
    assert "scheduler: not running" in listing
    with schedule.InterfaceScheduler().running():
        listing = browser.http.get("/interfaces").text
        here = f"scheduler: running in this process (pid {os.getpid()} on host {socket.gethostname()})"
        assert here in listing

    monkeypatch.setattr(notify, "WEBHOOK_RETRY", WebhookRetry(sleep=lambda _: None))
    hook = http.server.HTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        source = write_csv(tmp_path / "data" / "people.csv", ROWS)
        doc = {"name": "noted", "export": {"source": str(source), **export_settings()},
               "notify": {"emails": ["ops@example.com"], "connection": "local",
                          "webhook": f"http://127.0.0.1:{hook.server_port}/", "when": "always"}}  # fmt: skip
        service.save_interface(doc)
        report = runner.run_interface("noted")
    finally:
        hook.shutdown()
        hook.server_close()
    page = browser.http.get(f"/runs/{report.run_id}").text
    assert "webhook failed: 503 after 4 attempts" in page and "e-mail: delivered" in page
    assert "webhook failed: 503 after 4 attempts" in browser.http.get("/interfaces/noted").text


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass
