"""Export settings of the wrong kind: codecs that are not text encodings, charsets mail cannot
carry, numbers or lists where text belongs. Each is one line naming the field with exit
status 2 on the CLI, and a 422 naming the field from the REST API and the console form:
never a 500, never a traceback. UTF-16 without a byte-order mark is read, not refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit import api
from mailconduit.config import validate_export_spec
from mailconduit.errors import ConfigError
from webconsole import Console, SignedIn, form_values, running_console

ROWS = "email,name\nada@example.com,Ada\nbob@example.com,Bob\n"
MESSAGE = {"connection": "local", "to": "{{ email }}", "subject": "Hi {{ name }}", "body": "b"}

#: (setting, value, words of the error) — one per class of wrong value.
BAD_TEXT_SETTINGS: list[tuple[str, str, str]] = [
    ("encoding", "rot13", "not a character encoding"),
    ("encoding", "base64", "not a character encoding"),
    ("encoding", "zlib_codec", "not a character encoding"),
    ("encoding", "idna", "not a character encoding"),
    ("encoding", "undefined", "not a character encoding"),
    ("encoding", "klingon-8", "unknown encoding"),
    ("charset", "rot13", "not a character encoding"),
    ("charset", "utf-16", "cannot be the charset of a message"),
    ("charset", "cp037", "cannot be the charset of a message"),
    ("charset", "iso2022_jp", "cannot be the charset of a message"),
]
#: (setting, JSON value) that is not of the setting's type.
BAD_JSON_TYPES: list[tuple[str, Any]] = [
    ("where", 5),
    ("order_by", ["name"]),
    ("key", 1),
    ("subject", 3.5),
    ("to", True),
    ("encoding", 8),
    ("charset", {"name": "utf-8"}),
    ("by", ["region"]),
    ("table_formats", [1, 2]),
    ("delimiter", 44),
    ("limit", "many"),
]


@pytest.fixture
def people(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(ROWS, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(("setting", "value", "words"), BAD_TEXT_SETTINGS)
def test_cli_exit_2_naming_the_field(
    cli: Any, people: Path, setting: str, value: str, words: str
) -> None:
    result = cli("export", str(people), "--to", "{{ email }}", "--subject", "s", "--body", "b",
                 f"--{setting}", value, "--dry-run", str(people.parent / "out"))  # fmt: skip
    assert result.code == 2, result.output
    assert result.out == "" and "Traceback" not in result.err
    (line,) = result.err.strip().splitlines()
    assert f"{setting}: " in line and words in line, line
    assert not (people.parent / "out").exists()


def test_cli_reads_utf16_without_a_bom(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes(ROWS.encode("utf-16-le"))
    for encoding in ((), ("--encoding", "utf-16"), ("--encoding", "utf-16-le")):
        out = tmp_path / f"out{len(encoding)}"
        result = cli("export", str(path), "--to", "{{ email }}", "--subject", "Hi {{ name }}",
                     "--body", "b", *encoding, "--dry-run", str(out))  # fmt: skip
        assert result.code == 0, result.output
        assert "Subject: Hi Ada" in result.out and len(list(out.iterdir())) == 2


@pytest.mark.parametrize(("setting", "value"), BAD_JSON_TYPES)
def test_interface_files_with_wrong_types_exit_2(
    cli: Any, people: Path, setting: str, value: Any
) -> None:
    import yaml

    interface = people.parent / "job.yaml"
    doc = {"source": str(people), **MESSAGE, setting: value}
    interface.write_text(yaml.safe_dump(doc))
    result = cli("run", str(interface))
    assert result.code == 2, result.output
    (line,) = result.err.strip().splitlines()
    assert f"{setting}: " in line and "Traceback" not in result.err


# --------------------------------------------------------------------------- the rule itself


settings_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.one_of(st.integers(), st.text(max_size=3)), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)  # fmt: skip
SETTINGS = ["to", "cc", "bcc", "from", "reply_to", "subject", "body", "body_file", "mode", "by",
            "to_column", "table_formats", "table_row_cap", "oversize", "where", "order_by", "key",
            "kind", "encoding", "delimiter", "sheet", "database_url", "charset", "html", "dry_run",
            "limit", "fail_fast", "run_id", "concurrency", "rate", "max_errors", "resend_uncertain",
            "journal", "messages_per_connection", "data_timeout_ms", "report", "report_format",
            "attach", "attach_dir", "headers", "connection", "retry", "max_attempts"]  # fmt: skip


@given(st.dictionaries(st.sampled_from(SETTINGS), settings_values, max_size=4))
def test_any_value_of_any_setting_is_accepted_or_named(changes: dict[str, Any]) -> None:
    """validate_export_spec never fails with anything but a ConfigError naming fields."""
    data = {"source": "people.csv", "to": "{{ email }}", "subject": "s", "body": "b", **changes}
    try:
        spec = validate_export_spec(data)
    except ConfigError as exc:
        assert exc.errors and all(e.field for e in exc.errors), exc
        return
    for name in ("to", "subject", "where", "order_by", "key", "encoding", "charset", "sheet"):
        assert isinstance(getattr(spec, name), str), name


# --------------------------------------------------------------------------- web


@pytest.fixture(scope="module")
def console() -> Iterator[Console]:
    with running_console() as running:
        yield running


@pytest.fixture
def browser(console: Console) -> Iterator[SignedIn]:
    signed = console.signed_in()
    yield signed
    signed.http.close()


def upload(browser: SignedIn, content: bytes = ROWS.encode(), name: str = "people.csv") -> str:
    response = browser.api("POST", "/api/uploads", files={"file": (name, content)})
    assert response.status_code == 201, response.text
    return str(response.json()["upload"])


@pytest.mark.parametrize("path", ["/api/exports/preview", "/api/exports"])
@pytest.mark.parametrize(
    ("setting", "value"),
    [*((s, v) for s, v, _ in BAD_TEXT_SETTINGS), *BAD_JSON_TYPES],
)
def test_rest_api_422_naming_the_field(
    browser: SignedIn, path: str, setting: str, value: Any
) -> None:
    ref = upload(browser)
    response = browser.api("POST", path, json={"upload": ref, **MESSAGE, setting: value})
    assert response.status_code == 422, response.text
    assert setting in {d["loc"][-1] for d in response.json()["detail"]}
    assert api.list_runs() == []


def test_rest_api_reads_utf16_without_a_bom(browser: SignedIn) -> None:
    ref = upload(browser, ROWS.encode("utf-16-be"))
    for extra in ({}, {"encoding": "utf-16"}):
        response = browser.api(
            "POST", "/api/exports/preview", json={"upload": ref, **MESSAGE, **extra}
        )
        assert response.status_code == 200, response.text
        assert [dict(p["headers"])["Subject"] for p in response.json()] == ["Hi Ada", "Hi Bob"]


def test_the_api_schema_gives_the_types(browser: SignedIn) -> None:
    schema = browser.http.get("/api/openapi.json").json()
    body = schema["components"]["schemas"]["ExportIn"]["properties"]
    assert body["where"]["type"] == "string" and body["encoding"]["type"] == "string"
    assert "integer" in body["concurrency"]["type"] and "boolean" in body["fail_fast"]["type"]


@pytest.mark.parametrize("value", ["rot13", "base64", "zlib_codec", "no-such-codec"])
def test_console_form_422_next_to_the_field(browser: SignedIn, value: str) -> None:
    form = form_values(browser.http.get("/exports/new").text, "export-form")
    form.update({"to": "{{ email }}", "subject": "s", "body": "b", "encoding": value})
    page = browser.http.post(
        "/exports/new",
        data=form,
        files={"file": ("people.csv", ROWS.encode(), "text/csv")},
        headers={"Origin": browser.origin},
    )
    assert page.status_code == 422, page.text[:500]
    assert re.search(r'id="err-encoding"[^>]*>[^<]*encoding', page.text), page.text[-3000:]
