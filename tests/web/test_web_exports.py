"""Exports from the console: upload, preview, start, progress, per-row results, reports,
resume, saved interface files, and the refusal of anything naming server files."""

from __future__ import annotations

import csv
import email
import email.message
import email.policy
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from export_support import BAD_JSON_TYPES, BAD_TEXT_SETTINGS
from mailconduit import api
from mailconduit.sink import ensure_running, list_messages
from webconsole import UPLOAD_LIMIT, SignedIn, form_values

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


@pytest.fixture
def sink() -> Iterator[int]:
    with ensure_running(port=0) as info:
        yield info.port


def upload(browser: SignedIn, content: str = ROWS, name: str = "people.csv") -> str:
    response = browser.api("POST", "/api/uploads", files={"file": (name, content.encode())})
    assert response.status_code == 201, response.text
    return str(response.json()["upload"])


def wait_for_run(browser: SignedIn, run_id: str, *, seconds: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        status = browser.http.get(f"/api/exports/{run_id}").json()
        if status["status"] in FINAL:
            return status
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
    assert status["counts"] == {"sent": 3} or status["counts"].get("sent") == 3
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
        {"html_body_file": "/etc/hostname"},
        {"text_body_file": "/etc/hostname"},
        {"attach": "{{ name }}", "attach_dir": "/"},
    ],
)
def test_settings_naming_server_files_are_refused(browser: SignedIn, extra: dict[str, str]) -> None:
    ref = upload(browser)
    response = browser.api("POST", "/api/exports", json={"upload": ref, **MESSAGE, **extra})
    assert response.status_code == 422
    refused = {d["loc"][-1] for d in response.json()["detail"]}
    assert set(extra) - {"kind", "attach"} <= refused  # attach names the upload's own files
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


# --------------------------------------------------------------------------- HTML, inline images, files

FILE_ROWS = (
    "email,name,pdf,logo\n"
    "ada@example.com,Ada,ada.pdf,logo.png\nbob@example.com,Bob,,\ncy@example.com,Cy,gone.pdf,\n"
)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
HTML_MESSAGE = {
    "connection": "local",
    "to": "{{ email }}",
    "subject": "Invoice for {{ name }}",
    "html_body": '<p>Dear {{ name }}</p><img src="cid:logo">',
    "text_body": "Dear {{ name }}, in plain text.",
}


def received() -> dict[str, email.message.EmailMessage]:
    """The sink's messages by recipient, parsed."""
    from mailconduit.sink import raw_message

    out = {}
    for summary in list_messages():
        message = email.message_from_bytes(raw_message(summary.id), policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        out[summary.envelope_recipients[0]] = message
    return out


def add_files(browser: SignedIn, ref: str, *files: tuple[str, bytes]) -> httpx.Response:
    upload_id = ref.split("/")[0]
    return browser.api(
        "POST", f"/api/uploads/{upload_id}/files", files=[("files", f) for f in files]
    )


def test_api_exports_html_with_text_inline_logo_and_optional_attachments(
    browser: SignedIn, sink: int, home: Path
) -> None:
    ref = upload(browser, FILE_ROWS)
    added = add_files(browser, ref, ("logo.png", PNG), ("ada.pdf", b"%PDF Ada"))
    assert added.status_code == 201, added.text
    assert added.json() == {"upload": ref, "files": ["ada.pdf", "logo.png"]}
    request = {
        "upload": ref,
        **HTML_MESSAGE,
        "inline": {"logo": "{{ logo }}"},
        "attach": ["{{ pdf }}"],
    }
    previews = browser.api("POST", "/api/exports/preview", json=request)
    assert previews.status_code == 200, previews.text
    ada, bob, cy = previews.json()
    assert ada["inline"] == [["logo", "logo.png"]] and ada["attachments"] == ["ada.pdf"]
    assert ada["text"].strip() == "Dear Ada, in plain text." and 'src="cid:logo"' in ada["html"]
    assert bob["inline"] == [] and bob["attachments"] == []
    assert cy["error"] == "column pdf: attachment 'gone.pdf' not found in the attachment folder"

    started = browser.api("POST", "/api/exports", json=request)
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert wait_for_run(browser, run_id)["counts"] == {"sent": 2, "skipped": 1}
    got = received()
    mail = got["ada@example.com"]
    html = mail.get_body(preferencelist=("html",))
    assert html is not None and 'src="cid:logo"' in html.get_content()
    (image,) = (p for p in mail.walk() if p["Content-ID"])
    assert (image["Content-ID"], image.get_payload(decode=True)) == ("<logo>", PNG)
    assert [p.get_filename() for p in mail.iter_attachments()] == ["ada.pdf"]
    assert got["bob@example.com"].get_content_type() == "multipart/alternative"
    report = browser.http.get(f"/api/exports/{run_id}/report").text
    assert "gone.pdf" in report and str(home) not in report


def test_api_files_are_kept_inside_the_upload_folder(browser: SignedIn, home: Path) -> None:
    ref = upload(browser)
    sneaky = add_files(browser, ref, ("../../../escape.pdf", b"x"), ("..\\win.pdf", b"y"))
    assert sneaky.status_code == 201, sneaky.text
    assert sneaky.json()["files"] == ["escape.pdf", "win.pdf"]
    assert sorted(p.relative_to(home) for p in home.rglob("*.pdf")) == [
        Path("uploads", ref.split("/")[0], "files", name) for name in ("escape.pdf", "win.pdf")
    ]
    replaced = add_files(browser, ref, ("escape.pdf", b"new"))
    assert replaced.json()["files"] == ["escape.pdf", "win.pdf"]
    too_big = add_files(browser, ref, ("big.pdf", b"x" * (UPLOAD_LIMIT + 1)))
    assert too_big.status_code == 413  # the request as a whole is over the upload limit
    assert "big.pdf" not in add_files(browser, ref, ("small.pdf", b"s")).json()["files"]
    assert browser.api("POST", "/api/uploads/0123456789abcdef/files",
                       files=[("files", ("a.pdf", b"a"))]).status_code == 404  # fmt: skip
    assert browser.api("POST", "/api/uploads/..%2F..%2Fetc/files",
                       files=[("files", ("a.pdf", b"a"))]).status_code in (404, 422)  # fmt: skip


def test_api_refuses_an_inline_image_with_a_text_body(browser: SignedIn) -> None:
    ref = upload(browser, FILE_ROWS)
    response = browser.api(
        "POST",
        "/api/exports/preview",
        json={"upload": ref, **MESSAGE, "html": False, "inline": ["logo=logo.png"]},
    )
    assert response.status_code == 422
    assert [d["loc"][-1] for d in response.json()["detail"]] == ["html"]


def submit_export_form(
    browser: SignedIn, settings: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]
) -> httpx.Response:
    """The new-export form as the page offers it, changed by ``settings``, posted with
    ``files``: the answer is the preview, or the form with errors."""
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update(settings)
    return browser.http.post(
        "/exports/new", data=form, files=files, headers={"Origin": browser.origin}
    )


def test_page_form_uploads_files_and_previews_html_with_inline_images(
    browser: SignedIn, sink: int
) -> None:
    settings = {**HTML_MESSAGE, "attach": "{{ pdf }}\nterms.txt\n", "inline": "logo={{ logo }}"}
    preview = submit_export_form(
        browser,
        settings,
        [
            ("file", ("people.csv", FILE_ROWS.encode(), "text/csv")),
            ("files", ("logo.png", PNG, "image/png")),
            ("files", ("ada.pdf", b"%PDF Ada", "application/pdf")),
            ("files", ("terms.txt", b"Terms\n", "text/plain")),
        ],
    )
    assert preview.status_code == 200, preview.text
    assert "<code>cid:logo</code> (logo.png)" in preview.text
    assert "Attachments: ada.pdf, terms.txt" in preview.text
    assert "gone.pdf" in preview.text and "/uploads/" not in preview.text
    confirm = form_values(
        preview.text.replace('class="row buttons"', 'class="row buttons" id="send"'), "send"
    )
    assert confirm["attach"] == "{{ pdf }}\nterms.txt\n" and confirm["inline"] == "logo={{ logo }}"
    started = browser.http.post("/exports/start", data=confirm, headers={"Origin": browser.origin})
    assert started.status_code == 303
    wait_for_run(browser, started.headers["location"].split("?")[0].rsplit("/", 1)[1])
    got = received()
    assert sorted(got) == ["ada@example.com", "bob@example.com"]
    assert [p.get_filename() for p in got["ada@example.com"].iter_attachments()] == [
        "ada.pdf",
        "terms.txt",
    ]
    assert [p.get_filename() for p in got["bob@example.com"].iter_attachments()] == ["terms.txt"]
    # the form lists the files already there when it comes back
    again = submit_export_form(
        browser, {**settings, "upload": confirm["upload"], "subject": ""}, []
    )
    assert again.status_code == 422 and "Already there: ada.pdf, logo.png, terms.txt." in again.text


def test_page_preview_says_when_a_document_is_sent_as_html(browser: SignedIn) -> None:
    document = "<!DOCTYPE html><html><body>Hi {{ name }}</body></html>"
    preview = submit_export_form(
        browser,
        {**MESSAGE, "body": document},
        [("file", ("people.csv", ROWS.encode(), "text/csv"))],
    )
    assert preview.status_code == 200, preview.text
    assert re.search(r'class="notice export-note">the body is an HTML document', preview.text)


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


def test_a_column_differing_within_a_table_message_is_422(browser: SignedIn) -> None:
    ref = upload(browser)
    response = browser.api(
        "POST", "/api/exports/preview", json={"upload": ref, **MESSAGE, "mode": "table"}
    )
    assert response.status_code == 422, response.text
    detail = [(d["loc"][-1], d["msg"]) for d in response.json()["detail"]]
    assert [field for field, _ in detail] == ["to", "subject", "subject"]
    assert "--to-column email" in detail[0][1]
    assert "rows[0].name" in detail[1][1] and "rows[0].plan" in detail[2][1]
