"""Exports from the console: upload, preview, start, progress, per-row results, reports,
resume, saved interface files, and the refusal of anything naming server files."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailconduit import api
from mailconduit.sink import ensure_running, list_messages
from test_export_settings_types import BAD_JSON_TYPES, BAD_TEXT_SETTINGS
from webconsole import Console, SignedIn, form_values, running_console

ROWS = (
    "email,name,plan\n"
    "ada@example.com,Ada,gold\nbob@example.com,Bob,silver\ncy@example.com,Cy,gold\n"
)
MESSAGE = {
    "connection": "local",
    "to": "{{ email }}",
    "subject": "Plan {{ plan }} for {{ name }}",
    "body": "Hi {{ name }}",
}
FINAL = {"finished", "failed", "aborted", "paused", "interrupted"}


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    with running_console() as running:
        yield running


@pytest.fixture
def browser(console: Console) -> Iterator[SignedIn]:
    signed = console.signed_in()
    yield signed
    signed.http.close()


@pytest.fixture
def sink() -> Iterator[int]:
    with ensure_running(port=0) as info:
        yield info.port


def upload(browser: SignedIn, content: str = ROWS, name: str = "people.csv") -> str:
    response = browser.api("POST", "/api/uploads", files={"file": (name, content.encode())})
    assert response.status_code == 201, response.text
    return str(response.json()["upload"])


def wait_for_run(browser: SignedIn, run_id: str, *, seconds: float = 30) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while True:
        status = browser.http.get(f"/api/exports/{run_id}").json()
        if status["status"] in FINAL:
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"run {run_id} did not end: {status}"
        time.sleep(0.1)


def test_preview_renders_without_sending(browser: SignedIn, sink: int) -> None:
    ref = upload(browser)
    response = browser.api("POST", "/api/exports/preview", json={"upload": ref, **MESSAGE})
    assert response.status_code == 200, response.text
    previews = response.json()
    assert len(previews) == 3
    subjects = [dict(p["headers"])["Subject"] for p in previews]
    assert subjects == ["Plan gold for Ada", "Plan silver for Bob", "Plan gold for Cy"]
    assert previews[0]["text"].strip() == "Hi Ada"
    assert list_messages() == []
    assert api.list_runs() == []


def test_export_runs_to_the_end_and_reports_every_row(browser: SignedIn, sink: int) -> None:
    ref = upload(browser)
    started = browser.api("POST", "/api/exports", json={"upload": ref, **MESSAGE})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    status = wait_for_run(browser, run_id)
    assert status["status"] == "finished"
    assert status["counts"] == {"sent": 3} or status["counts"].get("sent") == 3  # type: ignore[union-attr]
    assert sorted(m.subject for m in list_messages()) == [
        "Plan gold for Ada",
        "Plan gold for Cy",
        "Plan silver for Bob",
    ]
    report = browser.http.get(f"/api/exports/{run_id}/report").json()
    assert [r["status"] for r in report["rows"]] == ["sent"] * 3
    as_csv = browser.http.get(f"/api/exports/{run_id}/report", params={"format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert {r["recipients"] for r in rows} >= {"ada@example.com"} or len(rows) == 3
    assert run_id in [r["run_id"] for r in browser.http.get("/api/runs").json()]


def test_export_settings_get_field_errors(browser: SignedIn, sink: int) -> None:
    ref = upload(browser)
    response = browser.api(
        "POST", "/api/exports", json={"upload": ref, "connection": "local", "to": "{{ email }}"}
    )
    assert response.status_code == 422
    fields = {d["loc"][-1] for d in response.json()["detail"]}
    assert {"subject", "body"} <= fields
    missing = browser.api(
        "POST", "/api/exports", json={**MESSAGE, "upload": "0123456789abcdef/nope.csv"}
    )
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"][-1] == "upload"


@pytest.mark.parametrize(
    "extra",
    [
        {"source": "/etc/passwd"},
        {"database_url": "postgresql://169.254.169.254/db", "kind": "sql"},
        {"body_file": "/etc/hostname"},
        {"attach": "{{ name }}", "attach_dir": "/"},
    ],
)
def test_settings_naming_server_files_are_refused(browser: SignedIn, extra: dict[str, str]) -> None:
    ref = upload(browser)
    response = browser.api("POST", "/api/exports", json={"upload": ref, **MESSAGE, **extra})
    assert response.status_code == 422
    refused = {d["loc"][-1] for d in response.json()["detail"]}
    assert set(extra) - {"kind"} <= refused
    assert api.list_runs() == []


def test_upload_reference_cannot_escape_the_uploads_folder(browser: SignedIn, home: Path) -> None:
    (home / "secret.csv").write_text("email\nroot@example.com\n")
    for ref in (
        "../secret.csv",
        "0123456789abcdef/../../secret.csv",
        "/etc/passwd",
        "..\\secret.csv",
    ):
        response = browser.api("POST", "/api/exports/preview", json={"upload": ref, **MESSAGE})
        assert response.status_code == 422, ref
        assert response.json()["detail"][0]["loc"][-1] == "upload"


def test_saved_interface_file(browser: SignedIn, sink: int, home: Path) -> None:
    folder = home / "interfaces"
    folder.mkdir(exist_ok=True)
    (folder / "people.csv").write_text(ROWS)
    (folder / "weekly.yaml").write_text(
        "source: people.csv\nconnection: local\nto: '{{ email }}'\n"
        "subject: 'Weekly {{ name }}'\nbody: 'Hello'\n"
    )
    started = browser.api("POST", "/api/exports", json={"interface": "weekly.yaml"})
    assert started.status_code == 202, started.text
    assert wait_for_run(browser, started.json()["run_id"])["status"] == "finished"
    assert sorted(m.subject for m in list_messages()) == ["Weekly Ada", "Weekly Bob", "Weekly Cy"]
    for name in ("../weekly.yaml", "nope.yaml", "people.csv"):
        refused = browser.api("POST", "/api/exports", json={"interface": name})
        assert refused.status_code == 422, name
    overriding = browser.api(
        "POST", "/api/exports", json={"interface": "weekly.yaml", "to": "x@example.com"}
    )
    assert overriding.status_code == 422


def test_pages_upload_preview_send_and_follow(browser: SignedIn, sink: int) -> None:
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update(MESSAGE)
    preview = browser.http.post(
        "/exports/new",
        data=form,
        files={"file": ("people.csv", ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )
    assert preview.status_code == 200, preview.text
    assert "Plan gold for Ada" in preview.text
    assert list_messages() == []
    confirm = form_values(
        preview.text.replace('class="row buttons"', 'class="row buttons" id="send"'), "send"
    )
    assert confirm["upload"] and confirm["csrf_token"] == browser.csrf
    started = browser.http.post("/exports/start", data=confirm, headers={"Origin": browser.origin})
    assert started.status_code == 303
    run_path = started.headers["location"].split("?")[0]
    run_id = run_path.rsplit("/", 1)[1]
    fragment = browser.http.get(f"{run_path}/status")
    assert 'id="run-status"' in fragment.text and "<html" not in fragment.text
    wait_for_run(browser, run_id)
    page = browser.http.get(run_path).text
    assert re.search(r'id="run-state">finished<', page)
    assert page.count('class="row-sent"') == 3
    report = browser.http.get(f"{run_path}/report.csv")
    assert report.headers["content-disposition"].startswith("attachment;")
    assert "ada@example.com" in report.text
    assert run_id in browser.http.get("/exports").text


def test_page_form_shows_errors_next_to_fields(browser: SignedIn) -> None:
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update({"to": "{{ email }}", "subject": ""})
    page = browser.http.post(
        "/exports/new",
        data=form,
        files={"file": ("people.csv", ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )
    assert page.status_code == 422
    assert re.search(r'id="err-subject"[^>]*>is required', page.text)
    assert re.search(r'id="err-body"', page.text)
    # The upload is kept, so the user does not upload it again.
    assert re.search(r'<option value="[0-9a-f]{16}/people.csv" selected>', page.text)


def test_failed_rows_can_be_retried(browser: SignedIn, sink: int) -> None:
    rows = ROWS + "not-an-address,Nobody,none\n"
    ref = upload(browser, rows)
    started = browser.api("POST", "/api/exports", json={"upload": ref, **MESSAGE})
    run_id = started.json()["run_id"]
    status = wait_for_run(browser, run_id)
    counts = status["counts"]
    assert isinstance(counts, dict)
    assert counts.get("sent") == 3
    assert counts.get("failed", 0) + counts.get("skipped", 0) == 1
    page = browser.http.get(f"/runs/{run_id}").text
    assert "not-an-address" in page
    resumed = browser.api("POST", f"/api/runs/{run_id}/resume", json={"retry_failed": True})
    assert resumed.status_code == 202, resumed.text
    wait_for_run(browser, resumed.json()["run_id"])
    assert len(list_messages()) == 3  # confirmed rows are never sent again


# --------------------------------------------------------------------------- wrong settings


WIDE_ROWS = "email,name,plan\nada@example.com,Ada,gold\nbob@example.com,Bob,silver\n"


@pytest.mark.parametrize("path", ["/api/exports/preview", "/api/exports"])
@pytest.mark.parametrize(
    ("setting", "value"), [*((s, v) for s, v, _ in BAD_TEXT_SETTINGS), *BAD_JSON_TYPES]
)
def test_wrong_settings_are_422_naming_the_field(
    browser: SignedIn, path: str, setting: str, value: Any
) -> None:
    """Never a 500: a codec that is not a text encoding, a charset mail cannot carry, a
    number or a list where text belongs (the catalogues of test_export_settings_types)."""
    ref = upload(browser)
    response = browser.api("POST", path, json={"upload": ref, **MESSAGE, setting: value})
    assert response.status_code == 422, response.text
    assert setting in {d["loc"][-1] for d in response.json()["detail"]}
    assert api.list_runs() == []


def test_utf16_without_a_bom_is_read(browser: SignedIn) -> None:
    response = browser.api(
        "POST", "/api/uploads", files={"file": ("wide.csv", WIDE_ROWS.encode("utf-16-be"))}
    )
    ref = response.json()["upload"]
    for extra in ({}, {"encoding": "utf-16"}):
        preview = browser.api(
            "POST", "/api/exports/preview", json={"upload": ref, **MESSAGE, **extra}
        )
        assert preview.status_code == 200, preview.text
        subjects = [dict(p["headers"])["Subject"] for p in preview.json()]
        assert subjects == ["Plan gold for Ada", "Plan silver for Bob"]


def test_the_api_schema_gives_the_settings_types(browser: SignedIn) -> None:
    schema = browser.http.get("/api/openapi.json").json()
    body = schema["components"]["schemas"]["ExportIn"]["properties"]
    assert body["where"]["type"] == "string" and body["encoding"]["type"] == "string"
    assert "integer" in body["concurrency"]["type"] and "boolean" in body["fail_fast"]["type"]


@pytest.mark.parametrize("value", ["rot13", "base64", "zlib_codec", "no-such-codec"])
def test_page_form_names_a_wrong_encoding(browser: SignedIn, value: str) -> None:
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update({**MESSAGE, "encoding": value})
    page = browser.http.post(
        "/exports/new",
        data=form,
        files={"file": ("people.csv", ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )
    assert page.status_code == 422, page.text[:500]
    assert re.search(r'id="err-encoding"[^>]*>[^<]*encoding', page.text)
