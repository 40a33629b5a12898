"""Data files as users really have them, end to end through real SMTP servers.

A control character in a cell rejects that row only (row number, column, reason in the
report) while the other rows are delivered, from every kind of source, to our aiosmtpd
test server and to Postfix's smtp-sink, read back from what they received: no such
character ever reaches the wire, in headers, bodies or table attachments. Table and group
messages leave such a row out (and report it). A template column whose value differs
across one table or group message, and a database URL given as a file, stop the export
before anything is sent.
"""

from __future__ import annotations

import csv
import email
import io
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from export_support import connect_to
from mailconduit import api
from mailconduit.delivery.report import ExportReport
from mailconduit.errors import ConfigError
from mailconduit.testing import FaultServer, SmtpSink

#: Bytes that must never be on the wire: C0 controls but TAB/LF/CR, and DEL.
RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: What a decoded text part or header may not hold either (C1 controls too).
TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

GOOD = ("ann@example.com", "fay@example.com")
ROWS: list[dict[str, str]] = [
    {"id": "1", "email": "ann@example.com", "name": "Ann", "note": 'fine, "quoted"'},
    {"id": "2", "email": "bob@example.com", "name": "Bob\x00", "note": "NUL in the name"},
    {"id": "3", "email": "cy@example.com", "name": "Cy", "note": "esc \x1b[31m red"},
    {"id": "4", "email": "dee@example.com", "name": "Dee", "note": 'a,"b"\x00\nc'},
    {"id": "5", "email": "eve@example.com", "name": "Eve", "note": "C1 \x9b here"},
    {"id": "6", "email": "fay@example.com", "name": "Fay", "note": "lines\nand\ttabs\r\nok"},
]
#: row number → (column, words of the reason)
REJECTED = {
    2: ("name", "U+0000 NUL"),
    3: ("note", "U+001B ESCAPE"),
    4: ("note", "U+0000 NUL"),
    5: ("note", "U+009B"),
}
#: Excel (XML) cannot hold C0 controls: its hostile cells carry DEL and C1 controls.
XLSX_ROWS = [
    {**ROWS[0]},
    {**ROWS[1], "name": "Bob\x7f"},
    {**ROWS[2], "note": "nel \x85 here"},
    {**ROWS[3], "note": "csi \x9b here"},
    {**ROWS[4]},
    {**ROWS[5], "note": "lines\nand\ttabs"},
]
XLSX_REJECTED = {2: ("name", "U+007F DELETE"), 3: ("note", "U+0085"), 4: ("note", "U+009B"),
                 5: ("note", "U+009B")}  # fmt: skip
MESSAGE: dict[str, Any] = {"to": "{{ email }}", "subject": "Hello {{ name }}", "body": "{{ note }}\n"}


@dataclass
class Target:
    """A real SMTP server behind connection ``name``; ``received()`` reads back what it got."""

    name: str
    received: Callable[[], list[bytes]]


@pytest.fixture(params=["aiosmtpd", "postfix"])
def target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Target]:
    if request.param == "aiosmtpd":
        with FaultServer() as server:
            name = connect_to(monkeypatch, server.port)
            yield Target(name, lambda: [m.data for m in list(server.messages)])
        return
    sink = SmtpSink(dump=True)
    with sink:
        name = connect_to(monkeypatch, sink.port)

        def received() -> list[bytes]:
            sink.__exit__(None, None, None)  # the dump is complete once the sink has stopped
            return sink.dumped()

        yield Target(name, received)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_clean(raw: bytes) -> EmailMessage:
    """No control character on the wire, in any header, text part or attachment."""
    found = RAW_CONTROL.search(raw)
    assert found is None, f"raw {found.group()!r} on the wire"
    message = parse(raw)
    for name, value in message.items():
        assert not TEXT_CONTROL.search(str(value)), (name, value)
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        name = part.get_filename("")
        if name.endswith(".xlsx"):
            texts = [str(c) for row in xlsx_rows(payload) for c in row if c is not None]
        elif part.get_content_maintype() == "text" or name.endswith((".csv", ".json")):
            texts = [payload.decode(part.get_content_charset() or "utf-8")]
        else:
            texts = []
        for text in texts:
            assert not TEXT_CONTROL.search(text), (part.get_content_type(), text)
    return message


def xlsx_rows(data: bytes) -> list[list[Any]]:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    return [list(r) for r in book.active.iter_rows(values_only=True)]


def recipients(messages: list[EmailMessage]) -> list[str]:
    return sorted(str(m["To"]) for m in messages)


def assert_report(report: ExportReport, rejected: dict[int, tuple[str, str]], sent: int) -> None:
    rows = list(report.rows())
    skipped = {r.row_number: r for r in rows if r.state == "skipped"}
    assert sorted(skipped) == sorted(rejected), [(r.row_number, r.state, r.reply) for r in rows]
    for number, (column, words) in rejected.items():
        assert skipped[number].column == column, skipped[number]
        assert words in skipped[number].reply, skipped[number].reply
        assert "\x00" not in skipped[number].reply and "\x00" not in skipped[number].row_key
    assert report.sent == sent and report.status == "finished"


# --------------------------------------------------------------------------- every source kind


def csv_text(
    rows: list[dict[str, str]], *, delimiter: str = ",", quoting: Literal[0, 1, 2, 3] = csv.QUOTE_MINIMAL
) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, list(rows[0]), delimiter=delimiter, quoting=quoting)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_source(kind: str, folder: Path, rows: list[dict[str, str]]) -> Any:
    """The rows as a source of ``kind``: a path, a SQL query + URL, or Python data."""
    if kind == "csv":
        path = folder / "people.csv"
        path.write_text(csv_text(rows), encoding="utf-8", newline="")
        return str(path), {}
    if kind == "csv-quoted":
        path = folder / "people.csv"
        path.write_text(csv_text(rows, quoting=csv.QUOTE_ALL), encoding="utf-8", newline="")
        return str(path), {}
    if kind == "tsv":
        path = folder / "people.tsv"
        path.write_text(csv_text(rows, delimiter="\t"), encoding="utf-8", newline="")
        return str(path), {}
    if kind == "csv-utf16":
        path = folder / "people.csv"
        path.write_bytes(csv_text(rows).encode("utf-16-le"))  # no byte-order mark
        return str(path), {}
    if kind == "json":
        path = folder / "people.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
        return str(path), {}
    if kind == "jsonl":
        path = folder / "people.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return str(path), {}
    if kind == "xlsx":
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.append(list(rows[0]))
        for row in rows:
            sheet.append(list(row.values()))
        path = folder / "people.xlsx"
        book.save(path)
        return str(path), {}
    if kind == "parquet":
        import duckdb

        path = folder / "people.parquet"
        con = duckdb.connect()
        con.execute("CREATE TABLE t (id VARCHAR, email VARCHAR, name VARCHAR, note VARCHAR)")
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [list(r.values()) for r in rows])
        con.execute(f"COPY (SELECT * FROM t ORDER BY id) TO '{path}' (FORMAT parquet)")
        con.close()
        return str(path), {}
    if kind == "sql":
        path = folder / "people.sqlite"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (id TEXT, email TEXT, name TEXT, note TEXT)")
            db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [list(r.values()) for r in rows])
        db.close()
        return "SELECT * FROM t ORDER BY id", {"database_url": f"sqlite:///{path}"}
    if kind == "iterable":
        return [dict(r) for r in rows], {}
    if kind == "dataframe":
        import pandas

        return pandas.DataFrame(rows), {}
    raise AssertionError(kind)


KINDS = ["csv", "csv-quoted", "tsv", "csv-utf16", "json", "jsonl", "parquet", "sql", "iterable",
         "dataframe"]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_control_character_rejects_its_row_and_the_others_go(
    tmp_path: Path, target: Target, kind: str
) -> None:
    source, options = write_source(kind, tmp_path, ROWS)
    report = api.export(source, connection=target.name, **MESSAGE, **options)
    assert_report(report, REJECTED, sent=2)
    messages = [assert_clean(raw) for raw in target.received()]
    assert recipients(messages) == list(GOOD)
    fay = next(m for m in messages if str(m["To"]) == GOOD[1])
    body = fay.get_body(preferencelist=("plain",))
    assert body is not None and "lines\nand\ttabs" in body.get_content().replace("\r\n", "\n")


def test_excel_cells_with_del_and_c1_controls(tmp_path: Path, target: Target) -> None:
    source, _ = write_source("xlsx", tmp_path, XLSX_ROWS)
    report = api.export(source, connection=target.name, **MESSAGE)
    assert_report(report, XLSX_REJECTED, sent=2)
    assert recipients([assert_clean(raw) for raw in target.received()]) == list(GOOD)


def test_standard_input_through_the_cli(cli: Any, target: Target) -> None:
    result = cli(
        "export", "-", "--connection", target.name, "--to", MESSAGE["to"],
        "--subject", MESSAGE["subject"], "--body", MESSAGE["body"], stdin=csv_text(ROWS),
    )  # fmt: skip
    assert result.code == 1, result.output  # some rows were not sent
    assert "Traceback" not in result.output
    for number, (column, words) in REJECTED.items():
        line = next(ln for ln in result.out.splitlines() if ln.strip().startswith(f"row {number} "))
        assert f"column {column}" in line and words in line, line
    assert recipients([assert_clean(raw) for raw in target.received()]) == list(GOOD)


@given(
    cell=st.lists(
        st.one_of(
            st.text(alphabet="ab ,\"'\n", max_size=3),
            st.sampled_from([chr(c) for c in (*range(0x20), 0x7F, 0x85, 0x9B, 0x2028)]),
        ),
        min_size=1,
        max_size=6,
    ).map("".join)
)
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_cell_either_arrives_intact_or_rejects_its_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cell: str
) -> None:
    """Generated cells in a quoted CSV: the row is sent with the cell as it was, or
    rejected naming the column; never a control character on the wire."""
    path = tmp_path / "cells.csv"
    rows = [{"email": "ok@example.com", "note": cell}]
    path.write_text(csv_text(rows, quoting=csv.QUOTE_ALL), encoding="utf-8", newline="")
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        report = api.export(str(path), connection=name, to="{{ email }}", subject="s",
                            body="[{{ note }}]", headers={"X-Len": "{{ note|length }}"})  # fmt: skip
        received = [m.data for m in list(server.messages)]
    forbidden = [c for c in cell if c in "\x7f\x85\x9b" or (c < " " and c not in "\t\n\r")]
    (row,) = list(report.rows())
    if forbidden:
        assert (row.state, row.column) == ("skipped", "note"), row
        assert received == []
    else:
        assert row.state == "sent", row
        body = parse(received[0]).get_body(preferencelist=("plain",))
        assert body is not None
        # line ends as the builder documents (a lone CR sends the text exactly, base64)
        expected = ("[" + cell + "]").replace("\r\n", "\n")
        assert body.get_content().replace("\r\n", "\n").rstrip("\n") == expected.rstrip("\n")
    for raw in received:
        assert_clean(raw)


# --------------------------------------------------------------------------- table and group


def attachment_texts(message: EmailMessage) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in message.iter_attachments():
        name = part.get_filename()
        payload = part.get_payload(decode=True)
        assert name and isinstance(payload, bytes)
        if name.endswith(".xlsx"):
            out[name] = xlsx_rows(payload)
        else:
            out[name] = payload.decode("utf-8")
    return out


def test_table_mode_leaves_a_bad_row_out_and_reports_it(tmp_path: Path, target: Target) -> None:
    source, _ = write_source("csv", tmp_path, ROWS)
    report = api.export(
        source, connection=target.name, mode="table", to="team@example.com",
        subject="{{ count }} people", body="All:\n{{ table_text }}",
        table_formats=["html", "csv", "xlsx", "json"],
    )  # fmt: skip
    assert_report(report, REJECTED, sent=1)
    (raw,) = target.received()
    message = assert_clean(raw)
    assert str(message["Subject"]) == "2 people"
    files = attachment_texts(message)
    people = {"Ann", "Fay"}
    for name in ("Bob", "Cy", "Dee", "Eve"):
        assert all(name not in str(content) for content in files.values()), name
    assert all(p in files["data.csv"] and p in files["data.json"] for p in people)
    assert [row[2] for row in files["data.xlsx"]] == ["name", "Ann", "Fay"]
    html = message.get_body(preferencelist=("html",))
    text = message.get_body(preferencelist=("plain",))
    for part in (html, text):
        if part is not None:
            content = part.get_content()
            assert "Ann" in content and "Bob" not in content and "Eve" not in content


def test_group_mode_drops_the_row_and_a_group_left_empty(tmp_path: Path, target: Target) -> None:
    rows = [
        {"team": "north", "email": "lead-n@example.com", "name": "Ann"},
        {"team": "north", "email": "lead-n@example.com", "name": "Bob\x00"},
        {"team": "south", "email": "lead-s@example.com", "name": "Cy\x1b"},
        {"team": "west", "email": "lead-w@example.com", "name": "Dee"},
    ]
    source, _ = write_source("jsonl", tmp_path, rows)
    report = api.export(
        source, connection=target.name, mode="group", by="team", to="{{ email }}",
        subject="Team {{ group }}: {{ count }}", body="{{ table_text }}", table_formats=["csv"],
    )  # fmt: skip
    assert_report(report, {2: ("name", "NUL"), 3: ("name", "ESCAPE")}, sent=2)
    messages = {str(m["To"]): m for m in map(assert_clean, target.received())}
    assert sorted(messages) == ["lead-n@example.com", "lead-w@example.com"]
    assert str(messages["lead-n@example.com"]["Subject"]) == "Team north: 1"
    assert "Bob" not in attachment_texts(messages["lead-n@example.com"])["data-north.csv"]


def test_fail_fast_in_table_mode_sends_nothing_when_a_row_is_bad(
    tmp_path: Path, target: Target
) -> None:
    source, _ = write_source("csv", tmp_path, ROWS)
    report = api.export(source, connection=target.name, mode="table", to="team@example.com",
                        subject="s", body="{{ table_text }}", fail_fast=True)  # fmt: skip
    assert report.sent == 0 and report.skipped >= 1
    assert target.received() == []


def test_running_again_keeps_the_rejected_rows_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = write_source("csv", tmp_path, ROWS)
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        first = api.export(source, connection=name, run_id="hostile-1", key="id", **MESSAGE)
        again = api.export(source, connection=name, run_id="hostile-1", key="id", **MESSAGE)
        assert len(server.messages) == 2
    assert (first.sent, first.skipped) == (2, 4)
    assert (again.sent, again.skipped) == (2, 4)  # from the journal: nothing sent twice


@pytest.mark.parametrize(
    ("mode", "template", "words"),
    [
        ({"mode": "table"}, {"to": "{{ manager_email }}"}, ("to:", "--to-column manager_email")),
        ({"mode": "table"}, {"cc": "{{ row.manager_email }}"}, ("cc:", "--to-column")),
        ({"mode": "table"}, {"subject": "Report for {{ name }}"},
         ("subject:", "rows[0].name", "map(attribute='name')")),
        ({"mode": "group", "by": "region"}, {"to": "{{ manager_email }}"},
         ("to:", "group 'north'", "--to-column manager_email")),
        ({"mode": "group", "by": "region"}, {"body": "{% for r in rows %}{{ name }}{% endfor %}"},
         ("body", "'name'")),
        ({"mode": "group", "by": "region"}, {"headers": ["X-Who: {{ row['full name'] }}"]},
         ("header X-Who", "rows[0]['full name']")),
        # row read by keys worked out at render time: the first row's values went silently
        ({"mode": "table"}, {"to": "{{ row.get('manager_email') }}"},
         ("to:", "row.get(...)", "--to-column manager_email")),
        ({"mode": "table"}, {"subject": "{% for k, v in row.items() %}{{ v }}{% endfor %}"},
         ("subject:", "any column")),
        ({"mode": "group", "by": "region"}, {"cc": "{{ row['manager' ~ '_email'] }}"},
         ("cc:", "group 'north'")),
        ({"mode": "group", "by": "region"}, {"subject": "{{ row[region ~ ''] }}"},
         ("subject:", "any column")),
    ],
)  # fmt: skip
def test_a_column_that_differs_within_a_message_stops_the_export(
    tmp_path: Path, mode: dict[str, str], template: dict[str, Any], words: tuple[str, ...],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    rows = [
        {"region": "north", "manager_email": "a@example.com", "name": "Ann", "full name": "A"},
        {"region": "north", "manager_email": "b@example.com", "name": "Bob", "full name": "B"},
        {"region": "south", "manager_email": "c@example.com", "name": "Cy", "full name": "C"},
    ]
    source, _ = write_source("json", tmp_path, rows)
    settings_ = {"to": "team@example.com", "subject": "s", "body": "b", **mode, **template}
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        with pytest.raises(ConfigError) as caught:
            api.export(source, connection=name, **settings_)
        assert server.session_count == 0
    text = str(caught.value)
    assert "\n" not in text
    for word in words:
        assert word in text, (word, text)


def test_row_as_a_loop_variable_or_by_constant_keys_is_not_the_first_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"region": "north", "manager_email": f"{n}@example.com", "name": n} for n in "ab"]
    source, _ = write_source("json", tmp_path, rows)
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        report = api.export(
            source, connection=name, mode="group", by="region", to="{{ row.region }}@example.com",
            subject="{% for row in rows %}{{ row.get('name') }} {% endfor %}", body="b",
        )  # fmt: skip
        assert report.sent == 1
        assert list(server.messages[0].rcpt_tos) == ["north@example.com"]


def test_the_cli_says_which_option_to_use(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "managers.csv"
    path.write_text("manager_email,name\na@example.com,Ann\nb@example.com,Bob\n")
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        result = cli("export", str(path), "--connection", name, "--mode", "table",
                     "--to", "{{ manager_email }}", "--subject", "s", "--body", "b")  # fmt: skip
        assert server.session_count == 0
    assert result.code == 2 and result.out == ""
    (line,) = result.err.strip().splitlines()
    assert "rows 1 and 2" in line and "--to-column manager_email" in line


def test_a_column_constant_within_each_message_is_fine(tmp_path: Path, target: Target) -> None:
    rows = [
        {"region": "north", "manager_email": "a@example.com", "name": "Ann"},
        {"region": "north", "manager_email": "a@example.com", "name": "Bob"},
        {"region": "south", "manager_email": "c@example.com", "name": "Cy"},
        {"region": "south", "manager_email": "c@example.com", "name": "Cy\x00"},  # left out
    ]
    source, _ = write_source("jsonl", tmp_path, rows)
    report = api.export(
        source, connection=target.name, mode="group", by="region", to="{{ manager_email }}",
        subject="{{ region }} for {{ manager_email }}",
        body="{{ rows|map(attribute='name')|join(', ') }} / first {{ rows[0].name }}",
    )  # fmt: skip
    assert report.sent == 2 and report.skipped == 1
    messages = {str(m["To"]): m for m in map(assert_clean, target.received())}
    assert str(messages["a@example.com"]["Subject"]) == "north for a@example.com"
    body = messages["a@example.com"].get_body(preferencelist=("plain",))
    assert body is not None and body.get_content().strip() == "Ann, Bob / first Ann"


def test_to_column_sends_the_table_to_every_manager(tmp_path: Path, target: Target) -> None:
    path = tmp_path / "managers.csv"
    path.write_text("manager_email,name\na@example.com,Ann\nb@example.com,Bob\na@example.com,Cy\n")
    report = api.export(str(path), connection=target.name, mode="table",
                        to_column="manager_email", subject="s", body="{{ count }} rows")  # fmt: skip
    assert report.sent == 1
    (raw,) = target.received()
    assert {a.strip() for a in str(assert_clean(raw)["To"]).split(",")} == {
        "a@example.com",
        "b@example.com",
    }


# --------------------------------------------------------------------------- database URLs


def test_a_database_url_given_as_the_file_says_how_to_pass_it(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        result = cli("export", "postgresql://reader:s3cret@127.0.0.1/db", "--connection", name,
                     "--to", "{{ email }}", "--subject", "s", "--body", "b")  # fmt: skip
        assert server.session_count == 0
    assert result.code == 2 and result.out == ""
    (line,) = result.err.strip().splitlines()
    assert "database URL" in line and "--query" in line and "no such file" not in line
    assert "s3cret" not in line


@pytest.mark.parametrize("url", ["https://example.com/people.csv", "s3://bucket/people.csv"])
def test_a_web_address_is_not_fetched(cli: Any, url: str) -> None:
    result = cli("export", url, "--to", "{{ email }}", "--subject", "s", "--body", "b")
    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert "local files" in line and "no such file" not in line


def test_a_database_url_with_a_query_is_accepted(
    cli: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch, target: Target
) -> None:
    import psycopg

    with psycopg.connect(pg_url) as db:
        db.execute("CREATE TABLE people (email TEXT, name TEXT)")
        db.execute("INSERT INTO people VALUES ('ann@example.com', 'Ann'), "
                   "('bob@example.com', E'Bob\\x07')")  # fmt: skip
    result = cli("export", pg_url, "--query", "SELECT * FROM people ORDER BY email",
                 "--connection", target.name, "--to", "{{ email }}", "--subject", "Hi {{ name }}",
                 "--body", "b")  # fmt: skip
    assert result.code == 1, result.output  # Bob's row holds BEL: rejected
    assert "U+0007" in result.out
    messages = [assert_clean(raw) for raw in target.received()]
    assert [str(m["Subject"]) for m in messages] == ["Hi Ann"]


def test_an_interface_file_with_a_database_url_as_source(tmp_path: Path, cli: Any) -> None:
    interface = tmp_path / "job.yaml"
    interface.write_text("source: sqlite:///data.db\nto: '{{ email }}'\nsubject: s\nbody: b\n")
    result = cli("run", str(interface))
    assert result.code == 2
    (line,) = result.err.strip().splitlines()
    assert "sqlite:///data.db" in line and "database URL" in line


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [("--body", "Hello \x1b[31mred", "body"), ("--subject", "Hi\x00", "subject"),
     ("--header", "X-Note: a\x7fb", "header X-Note")],
)  # fmt: skip
def test_a_template_holding_a_control_character_sends_nothing(
    cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, value: str, field: str
) -> None:
    path = tmp_path / "people.csv"
    path.write_text("email\nann@example.com\n")
    settings_ = {"--to": "{{ email }}", "--subject": "s", "--body": "b", option: value}
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port)
        result = cli("export", str(path), "--connection", name,
                     *(part for pair in settings_.items() for part in pair))  # fmt: skip
        assert server.session_count == 0
    assert result.code == 2, result.output
    (line,) = result.err.strip().splitlines()
    assert f"{field}: the template holds U+00" in line, line


def test_a_lone_surrogate_from_json_is_left_out_of_a_table(tmp_path: Path, target: Target) -> None:
    """JSON can escape half a surrogate pair, which no charset can encode: rejected too."""
    path = tmp_path / "people.jsonl"
    path.write_text('{"name": "Ann"}\n{"name": "half \\ud83d"}\n', encoding="utf-8")
    report = api.export(str(path), connection=target.name, mode="table", to="t@example.com",
                        subject="s", body="{{ table_text }}", table_formats=["csv", "json", "xlsx"])  # fmt: skip
    assert_report(report, {2: ("name", "surrogate")}, sent=1)
    (raw,) = target.received()
    assert "Ann" in attachment_texts(assert_clean(raw))["data.csv"]
