"""Input as an attacker (or a careless script) sends it to the console: text over its cap,
JSON of the wrong type, and errors about uploads that must name the file, never the server's
folders. Real HTTP against a console on 127.0.0.1."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailconduit import api
from mailconduit.config import TEXT_LIMITS
from webconsole import Console, SignedIn, form_values, running_console

MESSAGE = {"connection": "local", "to": "{{ email }}", "subject": "Hi {{ name }}", "body": "b"}
ROWS = "email,name\nada@example.com,Ada\nbob@example.com,Bob\n"
CONNECTION = {
    "name": "relay",
    "server_url": "127.0.0.1",
    "port": 2525,
    "auth_mechanism": "none",
    "security": "none",
}


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    with running_console() as running:
        yield running


@pytest.fixture
def browser(console: Console) -> Iterator[SignedIn]:
    signed = console.signed_in()
    yield signed
    signed.http.close()


def upload(browser: SignedIn, content: bytes, name: str) -> str:
    response = browser.api("POST", "/api/uploads", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return str(response.json()["upload"])


def fields_of(response: Any) -> set[str]:
    return {str(d["loc"][-1]) for d in response.json()["detail"]}


def assert_no_server_path(text: str, home: Path) -> None:
    for form in {str(home), str(home.resolve())}:
        assert form not in text
    assert "/uploads/" not in text and "uploads/" not in text


# --------------------------------------------------------------------------- length caps


def test_a_900_kib_display_name_is_a_422_naming_it(browser: SignedIn) -> None:
    response = browser.api(
        "POST", "/api/connections", json={**CONNECTION, "from_name": "x" * 900 * 1024}
    )
    assert response.status_code == 422
    assert fields_of(response) == {"from_name"}
    assert len(response.text) < 2000
    assert api.list_connections()[1:] == []


def test_the_console_form_refuses_it_too(browser: SignedIn) -> None:
    values = form_values(browser.http.get("/connections/new/smtp").text, "connection-form")
    values.pop("csrf_token")
    values.pop("use_ssl", None)
    values.update({k: str(v) for k, v in CONNECTION.items()}, from_name="x" * 300_000)
    page = browser.post_form("/connections/new/smtp", values)
    assert page.status_code == 422
    assert re.search(r'id="err-from_name"[^>]*>[^<]*too long: 300000 characters', page.text)


def test_inputs_carry_their_caps(browser: SignedIn) -> None:
    form = browser.http.get("/connections/new/smtp").text
    for field in ("name", "server_url", "from_name", "username", "password"):
        limit = TEXT_LIMITS["connection"][field]
        assert re.search(rf'name="{field}"[^>]*maxlength="{limit}"', form), field
    export = browser.http.get("/exports/new").text
    assert re.search(r'name="where"[^>]*maxlength="10000"', export)
    assert re.search(r'name="body"[^>]*maxlength="524288"', export)


def test_the_api_schema_publishes_the_caps(browser: SignedIn) -> None:
    schema = browser.http.get("/api/openapi.json").json()["components"]["schemas"]
    connection = schema["ConnectionIn"]["properties"]
    for field, limit in TEXT_LIMITS["connection"].items():
        if connection[field]["type"] == "string":
            assert connection[field]["maxLength"] == limit, field
    export = schema["ExportIn"]["properties"]
    assert export["subject"]["maxLength"] == TEXT_LIMITS["export"]["subject"]
    assert export["from"]["maxLength"] == TEXT_LIMITS["export"]["from_"]


def test_export_settings_over_their_cap(browser: SignedIn, home: Path) -> None:
    ref = upload(browser, ROWS.encode(), "people.csv")
    response = browser.api(
        "POST", "/api/exports/preview", json={**MESSAGE, "upload": ref, "subject": "s" * 10_001}
    )
    assert response.status_code == 422 and fields_of(response) == {"subject"}


def test_test_connection_recipient_over_its_cap(browser: SignedIn) -> None:
    long = "a" * 250 + "@example.com"
    response = browser.api("POST", "/api/connections/local/test", json={"send_to": long})
    assert response.status_code == 422 and fields_of(response) == {"send_to"}
    page = browser.post_form("/connections/local/test", {"send_to": long})
    assert page.status_code == 422 and "send_to: is too long" in page.text


# --------------------------------------------------------------------------- JSON types


#: Settings given a JSON value of a type they never take.
WRONG_TYPES: tuple[tuple[str, Any], ...] = (
    ("where", 5),
    ("order_by", ["name"]),
    ("subject", {"a": 1}),
    ("encoding", 8),
    ("concurrency", ""),
    ("concurrency", "four"),
    ("max_errors", 1.5),
    ("table_formats", 5),
    ("fail_fast", 1),
    ("sheet", True),
    ("upload", 7),
)


def test_a_value_of_the_wrong_type_is_a_422_naming_it(browser: SignedIn) -> None:
    ref = upload(browser, ROWS.encode(), "people.csv")
    for setting, value in WRONG_TYPES:
        for path in ("/api/exports/preview", "/api/exports"):
            response = browser.api("POST", path, json={"upload": ref, **MESSAGE, setting: value})
            assert response.status_code == 422, (setting, value, response.text)
            assert setting in fields_of(response), (setting, value)
    assert api.list_runs() == []


def test_the_export_form_refuses_a_number_that_is_not_one(browser: SignedIn) -> None:
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update({**MESSAGE, "concurrency": "four"})
    page = browser.http.post(
        "/exports/new",
        data=form,
        files={"file": ("people.csv", ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )
    assert page.status_code == 422
    assert re.search(r'id="err-concurrency"[^>]*>[^<]*whole number', page.text)


def test_an_unknown_connection_in_the_settings_is_a_422(browser: SignedIn) -> None:
    ref = upload(browser, ROWS.encode(), "people.csv")
    response = browser.api(
        "POST", "/api/exports/preview", json={**MESSAGE, "upload": ref, "connection": "nope"}
    )
    assert response.status_code == 422 and fields_of(response) == {"connection"}


# --------------------------------------------------------------------------- upload names


def test_errors_about_an_upload_name_the_file_not_the_path(browser: SignedIn, home: Path) -> None:
    ref = upload(browser, b'[{"email": "a@example.com"}, 5]', "broken.json")
    response = browser.api("POST", "/api/exports/preview", json={**MESSAGE, "upload": ref})
    assert response.status_code == 422
    assert "broken.json" in response.text
    assert_no_server_path(response.text, home)
    csv_ref = upload(browser, ROWS.encode(), "people.csv")
    for extra in ({"where": "no_such_column = 1"}, {"to": "{{ mail }}"}, {"key": "nope"}):
        response = browser.api(
            "POST", "/api/exports/preview", json={**MESSAGE, "upload": csv_ref, **extra}
        )
        assert response.status_code == 422, (extra, response.text)
        assert "people.csv" in response.text
        assert_no_server_path(response.text, home)


def test_the_export_form_names_the_upload_too(browser: SignedIn, home: Path) -> None:
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update({**MESSAGE, "where": "no_such_column = 1"})
    page = browser.http.post(
        "/exports/new",
        data=form,
        files={"file": ("my data.csv", ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )
    assert page.status_code == 422
    assert "my data.csv" in page.text
    assert_no_server_path(page.text, home)


def test_starting_an_export_whose_data_is_broken_names_the_upload(
    browser: SignedIn, home: Path
) -> None:
    """The data is read whole before the first message: a broken record far down the file
    refuses the export with the upload's name and the line."""
    lines = [f'{{"email": "r{n}@example.com", "name": "R{n}"}}' for n in range(1000)]
    lines[900] = "{broken"
    ref = upload(browser, "\n".join(lines).encode(), "late.jsonl")
    started = browser.api("POST", "/api/exports", json={**MESSAGE, "upload": ref})
    assert started.status_code == 422
    assert "late.jsonl:901:" in started.text
    assert_no_server_path(started.text, home)
    assert api.list_runs() == []
