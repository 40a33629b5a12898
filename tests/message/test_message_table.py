"""Table rendering for table/group modes: HTML, text, CSV (formula guard), XLSX, JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal
from typing import Any

import pytest
from openpyxl import load_workbook

from mailconduit.errors import ConfigError
from mailconduit.message import (
    csv_bytes,
    html_table,
    json_bytes,
    table_attachment,
    table_context,
    text_table,
    xlsx_bytes,
)

COLUMNS = ["name", "amount", "note"]
ROWS: list[dict[str, Any]] = [
    {"name": "Zoë <script>", "amount": 12.5, "note": '=HYPERLINK("http://evil")'},
    {"name": "Bob & Co", "amount": -3, "note": None},
    {"name": "Multi\nline", "amount": "-42", "note": "+1 555 0100"},
]


def test_html_table_escapes_values_and_shows_empty_for_none() -> None:
    table = html_table(COLUMNS, ROWS)
    assert "<th>name</th><th>amount</th><th>note</th>" in table.replace("\n", "")
    assert "<td>Zoë &lt;script&gt;</td>" in table
    assert "<td>Bob &amp; Co</td>" in table
    assert "<td></td>" in table
    assert "<td>Multi<br>line</td>" in table
    assert "showing" not in table


def test_html_table_caps_rows_with_a_note() -> None:
    rows = ({"name": str(i), "amount": i, "note": ""} for i in range(1000))
    table = html_table(COLUMNS, rows, max_rows=10)
    assert table.count("<tr>") == 11
    assert "showing 10 of 1000 rows" in table


def test_text_table_is_aligned_and_capped() -> None:
    text = text_table(
        ["a", "long column"], [{"a": "x", "long column": 1}, {"a": "yyyy"}], max_rows=1
    )
    assert text == "a | long column\n--+------------\nx | 1\n(showing 1 of 2 rows)\n"
    long = text_table(["c"], [{"c": "z" * 100}], cell_width=10)
    assert "zzzzzzzzz…" in long


def test_csv_round_trips_and_neutralises_formulas() -> None:
    data = csv_bytes(COLUMNS, ROWS)
    assert data.startswith(b"name,amount,note\r\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1] == ["Zoë <script>", "12.5", '\'=HYPERLINK("http://evil")']
    assert rows[2] == ["Bob & Co", "-3", ""]
    assert rows[3] == ["Multi\nline", "-42", "'+1 555 0100"]
    for cell in ("@SUM(A1)", "\tx", "\rx", "-x", "+x", "=1+1"):
        (row,) = list(
            csv.reader(io.StringIO(csv_bytes(["c"], [{"c": cell}]).decode(), newline=""))
        )[1:]
        assert row == ["'" + cell]
    assert csv_bytes(["c"], [], bom=True).startswith("\ufeff".encode())


def test_xlsx_keeps_types_and_never_stores_formulas() -> None:
    rows: list[dict[str, Any]] = [
        *ROWS,
        {"name": "when", "amount": dt.datetime(2026, 1, 2, 3, 4), "note": Decimal("1.50")},
        {"name": "tz", "amount": dt.datetime(2026, 1, 2, tzinfo=dt.UTC), "note": float("nan")},
        {"name": "ctl\x01char", "amount": True, "note": ["list"]},
    ]
    workbook = load_workbook(io.BytesIO(xlsx_bytes(COLUMNS, rows, sheet="data/2026")))
    sheet = workbook.active
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert sheet.title == "data_2026"
    assert values[0] == COLUMNS
    assert values[1] == ["Zoë <script>", 12.5, '=HYPERLINK("http://evil")']
    assert sheet.cell(row=2, column=3).data_type == "s"
    assert values[2] == ["Bob & Co", -3, None]
    assert values[4] == ["when", dt.datetime(2026, 1, 2, 3, 4), 1.5]
    assert values[5] == ["tz", "2026-01-02T00:00:00+00:00", "nan"]
    assert values[6] == ["ctlchar", True, "['list']"]


def test_json_is_an_array_of_objects_in_column_order() -> None:
    rows: list[dict[str, Any]] = [*ROWS, {"name": "d", "amount": dt.date(2026, 1, 2), "note": {"k": Decimal("1.5")}}]
    decoded = json.loads(json_bytes(COLUMNS, rows))
    assert decoded[0] == {
        "name": "Zoë <script>",
        "amount": 12.5,
        "note": '=HYPERLINK("http://evil")',
    }
    assert list(decoded[0]) == COLUMNS
    assert decoded[1]["note"] is None
    assert decoded[3] == {"name": "d", "amount": "2026-01-02", "note": {"k": "1.5"}}
    assert "Zoë".encode() in json_bytes(COLUMNS, rows)


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("csv", "text/csv"),
        ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("json", "application/json"),
    ],
)
def test_table_attachment_kinds(kind: str, content_type: str) -> None:
    attachment = table_attachment(kind, COLUMNS, ROWS, filename=f"report.{kind}")
    assert (attachment.filename, attachment.content_type) == (f"report.{kind}", content_type)
    assert attachment.content


def test_unknown_table_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'pdf' is not one of csv, xlsx, json"):
        table_attachment("pdf", COLUMNS, ROWS)


def test_table_context_names() -> None:
    context = table_context(COLUMNS, ROWS, max_rows=2)
    assert set(context) == {"rows", "count", "columns", "table_html", "table_text"}
    assert context["count"] == 3
    assert "showing 2 of 3 rows" in context["table_html"]
    grouped = table_context(COLUMNS, ROWS, group="g")
    assert grouped["group"] == "g" and grouped["row"] is ROWS[0]


def test_xlsx_bytes_are_the_same_for_the_same_data_whenever_built() -> None:
    # openpyxl stamps the current time into the file: a resend must carry the same attachment.
    import time

    from mailconduit.message import xlsx_bytes

    first = xlsx_bytes(["a", "b"], [{"a": 1, "b": "x"}])
    time.sleep(1.1)
    assert xlsx_bytes(["a", "b"], [{"a": 1, "b": "x"}]) == first
