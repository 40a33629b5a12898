"""A whole table (or one group's rows) as message content: HTML, plain text, CSV, XLSX, JSON.

Used by the ``table`` and ``group`` export modes. Values are escaped in HTML, neutralised
against formula injection in CSV and XLSX, and ``None`` is shown as an empty cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import markupsafe

from mailconduit.errors import ConfigError, FieldError
from mailconduit.message.attachment import Attachment

__all__ = [
    "DEFAULT_MAX_TABLE_ROWS",
    "TABLE_FORMATS",
    "csv_bytes",
    "html_table",
    "json_bytes",
    "table_attachment",
    "table_context",
    "text_table",
    "xlsx_bytes",
]

DEFAULT_MAX_TABLE_ROWS = 500
#: Attachment formats: file extension → MIME type.
TABLE_FORMATS = {
    "csv": "text/csv",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "json": "application/json",
}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_XLSX_ILLEGAL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_XLSX_MAX_CELL = 32_767
_TEXT_CELL_WIDTH = 40
Row = Mapping[str, Any]


def _text(value: Any) -> str:
    """A cell as text: None is empty, everything else ``str()`` (as templates render it)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _capped(rows: Iterable[Row], max_rows: int) -> tuple[list[Row], int]:
    """The first ``max_rows`` rows and the total count (the rest is only counted)."""
    shown: list[Row] = []
    total = 0
    for row in rows:
        if total < max_rows:
            shown.append(row)
        total += 1
    return shown, total


def _note(shown: int, total: int) -> str:
    return f"showing {shown} of {total} rows"


def html_table(
    columns: Sequence[str], rows: Iterable[Row], *, max_rows: int = DEFAULT_MAX_TABLE_ROWS
) -> markupsafe.Markup:
    """An HTML table with a header row; values escaped; a note when rows were left out."""
    shown, total = _capped(rows, max_rows)
    out = [
        '<table border="1" cellpadding="4" cellspacing="0" style="border-collapse:collapse">',
        "<thead><tr>",
        *(f"<th>{html.escape(str(c))}</th>" for c in columns),
        "</tr></thead>",
        "<tbody>",
    ]
    for row in shown:
        out.append("<tr>")
        for column in columns:
            cell = html.escape(_text(row.get(column))).replace("\n", "<br>")
            out.append(f"<td>{cell}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    if total > len(shown):
        out.append(f"<p><em>{_note(len(shown), total)}</em></p>")
    return markupsafe.Markup("\n".join(out) + "\n")  # noqa: S704 - every value escaped above


def _fit(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def text_table(
    columns: Sequence[str],
    rows: Iterable[Row],
    *,
    max_rows: int = DEFAULT_MAX_TABLE_ROWS,
    cell_width: int = _TEXT_CELL_WIDTH,
) -> str:
    """An aligned plain-text table for the text part; long cells are shortened with "…"."""
    shown, total = _capped(rows, max_rows)
    header = [_fit(str(c), cell_width) for c in columns]
    body = [[_fit(_text(row.get(c)), cell_width) for c in columns] for row in shown]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    lines = [line(header).rstrip(), "-+-".join("-" * w for w in widths)]
    lines.extend(line(cells).rstrip() for cells in body)
    if total > len(shown):
        lines.append(f"({_note(len(shown), total)})")
    return "\n".join(lines) + "\n"


def _neutralised(text: str) -> str:
    """Prefix an apostrophe to a cell a spreadsheet would run as a formula (not to numbers)."""
    if text.startswith(_FORMULA_START) and not _NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


def csv_bytes(
    columns: Sequence[str], rows: Iterable[Row], *, bom: bool = False, delimiter: str = ","
) -> bytes:
    """RFC 4180 CSV in UTF-8 (CRLF rows); formula-like cells neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow([_neutralised(str(c)) for c in columns])
    for row in rows:
        writer.writerow([_neutralised(_text(row.get(c))) for c in columns])
    return ("\ufeff" if bom else "").encode("utf-8") + buffer.getvalue().encode("utf-8")


def _xlsx_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | decimal.Decimal):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.time):
        return value if value.tzinfo is None else value.isoformat()
    if isinstance(value, dt.date):
        return value
    text = _XLSX_ILLEGAL_RE.sub("", _text(value))
    return text[:_XLSX_MAX_CELL]


def xlsx_bytes(columns: Sequence[str], rows: Iterable[Row], *, sheet: str = "data") -> bytes:
    """An Excel workbook (streamed, write-only); strings are never stored as formulas.

    Cells drop characters XML cannot hold and are cut at Excel's 32,767-character limit;
    time-zone aware datetimes are written as ISO text (Excel has no time zones).
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(title=re.sub(r"[\\/*?:\[\]]", "_", sheet)[:31] or "data")

    def cells(values: Iterable[Any]) -> list[WriteOnlyCell]:
        out = []
        for value in values:
            cell = WriteOnlyCell(worksheet, value=_xlsx_value(value))
            if isinstance(cell.value, str):
                cell.data_type = "s"  # a leading "=" would otherwise make it a formula
            out.append(cell)
        return out

    worksheet.append(cells(str(c) for c in columns))
    for row in rows:
        worksheet.append(cells(row.get(c) for c in columns))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return _deterministic_zip(buffer.getvalue())


_XLSX_TIMESTAMP_RE = re.compile(
    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(</dcterms:(?:created|modified)>)"
)


def _deterministic_zip(data: bytes) -> bytes:
    """The same workbook bytes for the same data: fixed zip entry times and document dates.

    openpyxl stamps the current time into the zip and into docProps/core.xml, so a resend
    (or a second build of the same message) would otherwise carry a different attachment.
    """
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "docProps/core.xml":
                content = _XLSX_TIMESTAMP_RE.sub(rb"\g<1>2000-01-01T00:00:00Z\g<2>", content)
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = info.external_attr
            target.writestr(entry, content)
    return out.getvalue()


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def json_bytes(columns: Sequence[str], rows: Iterable[Row]) -> bytes:
    """A JSON array of objects (keys in column order), UTF-8; other values become strings."""
    records = [{str(c): _json_value(row.get(c)) for c in columns} for row in rows]
    return json.dumps(records, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def table_attachment(
    kind: str, columns: Sequence[str], rows: Iterable[Row], *, filename: str = ""
) -> Attachment:
    """The table as an attachment of ``kind`` ``csv``, ``xlsx`` or ``json``."""
    if kind not in TABLE_FORMATS:
        choices = ", ".join(TABLE_FORMATS)
        raise ConfigError.for_fields(
            "table attachment", [FieldError("attach_table", f"{kind!r} is not one of {choices}")]
        )
    if kind == "csv":
        data = csv_bytes(columns, rows)
    elif kind == "xlsx":
        data = xlsx_bytes(columns, rows)
    else:
        data = json_bytes(columns, rows)
    return Attachment(filename or f"data.{kind}", data, TABLE_FORMATS[kind])


def table_context(
    columns: Sequence[str],
    rows: Sequence[Row],
    *,
    group: Any = None,
    max_rows: int = DEFAULT_MAX_TABLE_ROWS,
) -> dict[str, Any]:
    """Template names for table/group mode: rows, count, columns, table_html, table_text.

    With ``group`` (group mode) also ``group`` and ``row`` (the group's first row).
    """
    context: dict[str, Any] = {
        "rows": rows,
        "count": len(rows),
        "columns": list(columns),
        "table_html": html_table(columns, rows, max_rows=max_rows),
        "table_text": text_table(columns, rows, max_rows=max_rows),
    }
    if group is not None:
        context["group"] = group
        context["row"] = rows[0] if rows else {}
    return context
