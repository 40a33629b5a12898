"""Control characters in data, files that are not text, and text encodings, per source kind.

A cell holding a character data may not hold (C0 controls other than TAB/LF/CR, DEL, C1
controls, lone surrogates) marks its row with the problem (column and character) while the
row's values come back exactly as written and every other row reads normally; only a file
that is not text is refused as a whole. Property tests write generated cells in every kind
of container and read them back.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import random
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailconduit.errors import ConfigError, SourceError
from mailconduit.sources import Row, open_source
from mailconduit.sources.cells import CellProblem, cell_problem, holds_forbidden

FORBIDDEN = [
    chr(c) for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0))
]
ALLOWED_ODD = ["\t", "\n", "\r", "\r\n", "\u2028", "\u00a0", "\ufeff", "\u200b", "é", "€", "😀"]
COLUMNS = ("id", "a", "b")

#: A cell: ordinary text mixed with CSV syntax, allowed oddities and forbidden characters.
cells = st.lists(
    st.one_of(
        st.text(alphabet="xyz ,;\"'=@.-", max_size=4),
        st.sampled_from(ALLOWED_ODD),
        st.sampled_from(FORBIDDEN),
    ),
    max_size=5,
).map("".join)
tables = st.lists(st.tuples(cells, cells), min_size=1, max_size=8)


def expected_problem(values: dict[str, Any]) -> CellProblem | None:
    """The first forbidden character, column by column, left to right (the documented rule)."""
    for column, value in values.items():
        if isinstance(value, str):
            for char in value:
                if char in FORBIDDEN or "\ud800" <= char <= "\udfff":
                    return CellProblem(column, char)
    return None


def records(table: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"id": str(n), "a": a, "b": b} for n, (a, b) in enumerate(table, 1)]


def check_rows(rows: list[Row], written: list[dict[str, Any]]) -> None:
    assert [r.values for r in rows] == written
    assert [r.number for r in rows] == list(range(1, len(written) + 1))
    for row in rows:
        assert row.problem == expected_problem(row.values), row
        if row.problem is not None:
            assert "\x00" not in row.key and not holds_forbidden(row.key)


def read(path: Any, **options: Any) -> list[Row]:  # a file, rows, or a DataFrame
    with open_source(path, **options) as source:
        total = source.validate()
        rows = list(source.rows())
    assert total == len(rows)
    return rows


# --------------------------------------------------------------------------- every kind


def write_csv(
    path: Path,
    written: list[dict[str, Any]],
    *,
    delimiter: str,
    quoting: Literal[0, 1, 2, 3],
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, COLUMNS, delimiter=delimiter, quoting=quoting)
        writer.writeheader()
        writer.writerows(written)
    return path


@pytest.mark.parametrize(
    ("name", "delimiter", "quoting"),
    [
        ("unquoted.csv", ",", csv.QUOTE_MINIMAL),
        ("quoted.csv", ",", csv.QUOTE_ALL),
        ("tabs.tsv", "\t", csv.QUOTE_MINIMAL),
    ],
)
@given(table=tables)
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_csv_and_tsv_cells(
    tmp_path: Path,
    name: str,
    delimiter: str,
    quoting: Literal[0, 1, 2, 3],
    table: list[tuple[str, str]],
) -> None:
    written = records(table)
    path = write_csv(tmp_path / name, written, delimiter=delimiter, quoting=quoting)
    check_rows(read(path, delimiter=delimiter), written)


@given(table=tables)
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_csv_cells_behind_a_filter(tmp_path: Path, table: list[tuple[str, str]]) -> None:
    """where/order_by stage the rows in DuckDB: the cells and their problems survive it."""
    written = records(table)
    path = write_csv(tmp_path / "f.csv", written, delimiter=",", quoting=csv.QUOTE_MINIMAL)
    rows = read(path, delimiter=",", where="id <> '0'", order_by="id DESC")
    check_rows(sorted(rows, key=lambda r: r.number), written)


@pytest.mark.parametrize("layout", ["json", "jsonl"])
@given(table=tables, escaped=st.booleans())
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_json_cells_escaped_or_raw(
    tmp_path: Path, layout: str, table: list[tuple[str, str]], escaped: bool
) -> None:
    """Escaped (\\u0000) or raw in the file, a control character in a string is data."""
    written = records(table)
    if layout == "json":
        text = json.dumps(written, ensure_ascii=escaped)
    else:
        text = "\n".join(json.dumps(r, ensure_ascii=escaped) for r in written) + "\n"
    if not escaped:  # raw control characters in the strings, as sloppy exporters write them
        for char in {c for r in written for v in r.values() for c in v if c in FORBIDDEN}:
            text = text.replace(json.dumps(char)[1:-1], char)
    path = tmp_path / f"data.{layout}"
    path.write_text(text, encoding="utf-8")
    check_rows(read(path), written)


def test_nested_json_values_are_checked_too(tmp_path: Path) -> None:
    path = tmp_path / "nested.jsonl"
    path.write_text(
        '{"id": 1, "tags": ["ok", {"x": "fine"}]}\n'
        '{"id": 2, "tags": ["ok", {"x": "bad\\u001b[31m"}]}\n'
        '{"id": 3, "tags": [], "name": "half a pair \\ud83d"}\n',
        encoding="utf-8",
    )
    rows = read(path)
    assert rows[0].problem is None
    assert rows[1].problem == CellProblem("tags", "\x1b")
    assert "U+001B ESCAPE" in rows[1].problem.reason
    assert rows[2].problem == CellProblem("name", "\ud83d")
    assert "surrogate" in rows[2].problem.reason


@given(table=tables)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_xlsx_cells(tmp_path: Path, table: list[tuple[str, str]]) -> None:
    """XML cannot hold most C0 controls, but DEL and the C1 controls reach a workbook."""
    openpyxl = pytest.importorskip("openpyxl")
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    written = [
        {k: ILLEGAL_CHARACTERS_RE.sub("", v) or None if k != "id" else v for k, v in r.items()}
        for r in records(table)
    ]
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(COLUMNS))
    for number, row in enumerate(written, 2):
        for position, column in enumerate(COLUMNS, 1):
            cell = sheet.cell(number, position, row[column])
            if isinstance(row[column], str):
                cell.data_type = "s"  # text as text, never a formula ("=;")
    path = tmp_path / "data.xlsx"
    book.save(path)
    # openpyxl reads a lone CR back as LF (XML line ends): compare what it reads
    check_rows(read(path), [_xml_text(r) for r in written])


def _xml_text(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.replace("\r\n", "\n").replace("\r", "\n") if v else v for k, v in row.items()}


def write_parquet(path: Path, written: list[dict[str, Any]]) -> Path:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE t (id VARCHAR, a VARCHAR, b VARCHAR)")
        if written:
            con.executemany("INSERT INTO t VALUES (?, ?, ?)", [list(r.values()) for r in written])
        con.execute(f"COPY (SELECT * FROM t ORDER BY CAST(id AS INT)) TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    return path


@given(table=tables)
@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_parquet_cells(tmp_path: Path, table: list[tuple[str, str]]) -> None:
    written = records(table)
    check_rows(read(write_parquet(tmp_path / "data.parquet", written)), written)


@given(table=tables)
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_sql_query_rows(tmp_path: Path, table: list[tuple[str, str]]) -> None:
    written = records(table)
    path = tmp_path / "data.sqlite"
    path.unlink(missing_ok=True)  # the folder is shared by the examples
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id TEXT, a TEXT, b TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [list(r.values()) for r in written])
    db.close()
    rows = read(
        "SELECT id, a, b FROM t ORDER BY CAST(id AS INTEGER)", database_url=f"sqlite:///{path}"
    )
    check_rows(rows, written)


def test_postgresql_query_rows(pg_url: str) -> None:
    """PostgreSQL text cannot hold NUL, but every other control character comes through."""
    import psycopg

    written = [{"id": "1", "a": "fine", "b": "ok"}, {"id": "2", "a": "bell\x07", "b": "ok"},
               {"id": "3", "a": "c1\x9b", "b": "ok"}, {"id": "4", "a": "tab\tlf\n", "b": "ok"}]  # fmt: skip
    with psycopg.connect(pg_url) as db:
        db.execute("CREATE TABLE t (id TEXT, a TEXT, b TEXT)")
        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO t VALUES (%s, %s, %s)", [list(r.values()) for r in written]
            )
    check_rows(read("SELECT id, a, b FROM t ORDER BY id", database_url=pg_url), written)


surrogate_cells = st.lists(
    st.one_of(cells, st.sampled_from(["\ud800", "\udfff", "x\udc80y"])), min_size=1, max_size=3
).map("".join)


@given(table=st.lists(st.tuples(surrogate_cells, cells), min_size=1, max_size=6))
def test_python_rows_and_dataframes(table: list[tuple[str, str]]) -> None:
    """Python strings can hold lone surrogates (surrogateescape), which are not text."""
    written = records(table)
    check_rows(read(written), written)
    check_rows(read(iter(written)), written)
    pandas = pytest.importorskip("pandas")
    check_rows(read(pandas.DataFrame(written, columns=list(COLUMNS))), written)


@given(table=tables)
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_standard_input(monkeypatch: pytest.MonkeyPatch, table: list[tuple[str, str]]) -> None:
    written = records(table)
    buffer = io.StringIO()
    csv.DictWriter(buffer, COLUMNS, lineterminator="\r\n").writeheader()
    csv.DictWriter(buffer, COLUMNS, lineterminator="\r\n").writerows(written)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(buffer.getvalue().encode())))
    check_rows(read("-", delimiter=","), written)


# --------------------------------------------------------------------------- cheap and exact


@given(st.text(alphabet=st.characters(max_codepoint=0x2100, exclude_categories=["Cs"])))
def test_the_block_scan_agrees_with_the_cell_rule(text: str) -> None:
    assert holds_forbidden(text) == (cell_problem({"c": text}) is not None)


def test_a_long_file_flags_exactly_the_bad_rows(tmp_path: Path) -> None:
    """Rows past the first 64 KB block, and quoted cells spanning lines, keep their numbers."""
    lines = ["id,note"]
    bad = {7, 1500, 3001, 3002}
    for n in range(1, 4001):
        note = f"row {n} " + "é" * (n % 50)
        if n in bad:
            note = f'"two\nlines\x00 {n}"'
        elif n % 7 == 0:
            note = f'"two\nlines {n}"'
        lines.append(f"{n},{note}")
    path = tmp_path / "long.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = read(path)
    assert len(rows) == 4000
    assert {r.number for r in rows if r.problem is not None} == bad
    assert all(r.values["id"] == str(r.number) for r in rows)


def test_a_forbidden_key_value_is_shown_escaped_and_still_unique(tmp_path: Path) -> None:
    path = tmp_path / "keys.csv"
    path.write_text("key,email\nk1,a@example.com\nk\x002,b@example.com\nk3,c@example.com\n")
    with open_source(path, key="key") as source:
        source.validate()
        keys = [(r.key, r.problem) for r in source.rows()]
    assert keys == [("k1", None), ("k\\x002", CellProblem("key", "\x00")), ("k3", None)]
    twice = tmp_path / "twice.csv"
    twice.write_text("key,email\nk\x00,a@example.com\nk\x00,b@example.com\n")
    with (
        open_source(twice, key="key") as source,
        pytest.raises(SourceError, match="more than one row"),
    ):
        source.validate()


# --------------------------------------------------------------------------- not text


RANDOM = random.Random(9).randbytes(4096)


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("book.csv", b"PK\x03\x04\x14\x00\x06\x00" + RANDOM, "ZIP archive"),
        ("report.csv", b"%PDF-1.7\n" + RANDOM, "PDF"),
        ("photo.json", b"\x89PNG\r\n\x1a\n" + RANDOM, "PNG"),
        ("data.jsonl", b"\x1f\x8b\x08\x00" + RANDOM, "gzip"),
        ("app.csv", b"SQLite format 3\x00" + RANDOM, "SQLite"),
        ("old.csv", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + RANDOM, ".xls"),
    ],
)
def test_a_binary_file_is_refused_as_a_whole(
    tmp_path: Path, name: str, content: bytes, words: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match="this is not a text file") as caught:
        open_source(path)
    assert words in str(caught.value) and caught.value.location == str(path)


@pytest.mark.parametrize("encoding", [None, "latin-1", "cp1252", "utf-16"])
def test_random_bytes_are_refused_before_any_row(tmp_path: Path, encoding: str | None) -> None:
    path = tmp_path / "noise.csv"
    path.write_bytes(RANDOM)
    with pytest.raises(SourceError), open_source(path, encoding=encoding) as source:
        source.validate()


def test_utf16_read_as_utf8_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes("name,email\nAnn,a@example.com\n".encode("utf-16-le"))
    with pytest.raises(SourceError, match="--encoding utf-16"):
        open_source(path, encoding="utf-8")


# --------------------------------------------------------------------------- encodings

TEXT = "name,email,note\nZoë,zoe@example.com,€ 5\nBob,bob@example.com,日本\n"
EXPECTED = [
    {"name": "Zoë", "email": "zoe@example.com", "note": "€ 5"},
    {"name": "Bob", "email": "bob@example.com", "note": "日本"},
]


@pytest.mark.parametrize(
    ("codec", "bom"),
    [
        ("utf-16-le", codecs.BOM_UTF16_LE), ("utf-16-be", codecs.BOM_UTF16_BE),
        ("utf-32-le", codecs.BOM_UTF32_LE), ("utf-32-be", codecs.BOM_UTF32_BE),
        ("utf-8", codecs.BOM_UTF8),
    ],
)  # fmt: skip
@pytest.mark.parametrize("with_bom", [True, False])
@pytest.mark.parametrize("named", [None, "family", "exact"])
def test_wide_unicode_with_or_without_bom(
    tmp_path: Path, codec: str, bom: bytes, with_bom: bool, named: str | None
) -> None:
    path = tmp_path / "wide.csv"
    path.write_bytes((bom if with_bom else b"") + TEXT.encode(codec))
    encoding = {None: None, "family": codec[:6], "exact": codec}[named]
    with open_source(path, encoding=encoding) as source:
        assert source.columns == ("name", "email", "note")
        assert [r.values for r in source.rows()] == EXPECTED
        assert all(r.problem is None for r in source.rows())


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32-le"])
def test_wide_unicode_json_from_standard_input(monkeypatch: pytest.MonkeyPatch, codec: str) -> None:
    data = json.dumps(EXPECTED, ensure_ascii=False).encode(codec)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="latin-1"))
    with open_source("-", encoding=codec) as source:
        assert [r.values for r in source.rows()] == EXPECTED


@pytest.mark.parametrize("codec", ["cp037", "cp1252", "latin-1", "shift_jis", "gb18030"])
def test_other_text_encodings_read_when_named(tmp_path: Path, codec: str) -> None:
    text = "name,email\nAnn,ann@example.com\n"
    path = tmp_path / "x.csv"
    path.write_bytes(text.encode(codec))
    assert [r.values for r in read(path, encoding=codec)] == [
        {"name": "Ann", "email": "ann@example.com"}
    ]


@pytest.mark.parametrize(
    "encoding",
    ["rot13", "base64", "zlib_codec", "hex", "bz2", "uu", "quopri", "idna", "punycode",
     "unicode_escape", "raw_unicode_escape", "undefined", "no-such-thing", "utf\x00-8", "utf-7"],
)  # fmt: skip
def test_codecs_that_are_not_text_encodings_are_refused(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text("name,email\nAnn,ann@example.com\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        open_source(path, encoding=encoding)
    assert caught.value.field == "encoding"
    assert "\n" not in str(caught.value)


def test_control_characters_in_a_header_refuse_the_file(tmp_path: Path) -> None:
    path = tmp_path / "head.csv"
    path.write_text("name,e\x01mail\nAnn,a@example.com\n", encoding="utf-8")
    with pytest.raises(SourceError, match="U\\+0001"):
        open_source(path)


def test_reasons_say_what_and_never_the_value() -> None:
    problem = cell_problem({"a": "ok", "b": "secret\x92value"})
    assert problem == CellProblem("b", "\x92")
    assert "secret" not in problem.reason
    assert "--encoding cp1252" in problem.reason
    lone = cell_problem({"a": "x\udc80"})
    assert lone is not None and "surrogate" in lone.reason
