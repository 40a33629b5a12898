"""Export settings of the wrong kind: codecs that are not text encodings, charsets mail cannot
carry, numbers or lists where text belongs. Each is one line naming the field with exit
status 2 on the CLI (and a 422 from the web: test_web_exports.py runs these catalogues),
never a traceback. UTF-16 without a byte-order mark is read, not refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from export_support import BAD_JSON_TYPES, BAD_TEXT_SETTINGS
from mailconduit.config import validate_export_spec
from mailconduit.errors import ConfigError

ROWS = "email,name\nada@example.com,Ada\nbob@example.com,Bob\n"
MESSAGE = {"connection": "local", "to": "{{ email }}", "subject": "Hi {{ name }}", "body": "b"}

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


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"X-Id": 5}, "the value of 'X-Id' is a number"),
        ({"X-Id": None}, "the value of 'X-Id' is empty (null)"),
        ({5: "a"}, "a name is a number"),
        ([["X-Id"]], "one is a list"),
    ],
)
def test_a_wrong_header_says_which_part_is_wrong(headers: Any, words: str) -> None:
    """A mapping's bad value was called "a list" (the pair it was read as)."""
    with pytest.raises(ConfigError) as caught:
        validate_export_spec({"source": "x.csv", "to": "t", "subject": "s", "headers": headers})
    assert words in str(caught.value)
