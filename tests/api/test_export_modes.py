"""Exports in every mode through real servers, read back and compared field by field.

row (mail merge), table (inline HTML/text table with a row cap, CSV/XLSX/JSON attachments,
recipients from a column) and group (one message per value of a column); HTML or text
bodies; Message-ID, Date and MIME-Version; no line beyond 998 characters.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from export_support import (
    SENDER,
    assert_wire_safe,
    by_recipient,
    connect_to,
    header_names,
    only,
    server_messages,
    sink_messages,
    write_csv,
)
from mailconduit import api
from mailconduit.testing import FaultServer

CUSTOMERS = [
    {"id": "c1", "name": "Zoë Ärger", "email": "zoe@example.com", "amount": "12.50",
     "manager": "anna@example.com", "city": "Zürich"},
    {"id": "c2", "name": "Bob <Builder> & Sons", "email": "bob@example.org", "amount": "7",
     "manager": "ben@example.com", "city": "Leeds"},
    {"id": "c3", "name": "Ødegård, Åse", "email": "ase@example.net", "amount": "99.99",
     "manager": "ANNA@example.com", "city": "Tromsø"},
    {"id": "c4", "name": "Li Wei 李伟", "email": "li@example.com", "amount": "0",
     "manager": "ben@example.com", "city": "北京"},
    {"id": "c5", "name": "Plain Person", "email": "plain@example.com", "amount": "1",
     "manager": "anna@example.com", "city": "Paris"},
]  # fmt: skip


@pytest.fixture
def customers(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "customers.csv", CUSTOMERS)


# --------------------------------------------------------------------------- row mode


def test_row_mode_delivers_every_field_of_every_row(customers: Path) -> None:
    report = api.export(
        str(customers),
        connection="local",
        to='"{{ name }}" <{{ email }}>',
        cc="{{ manager }}",
        bcc="audit@example.com",
        reply_to="Accounts Team <accounts@example.com>",
        subject="Statement for {{ name }} — {{ city }}",
        body="Dear {{ name }},\nyou owe {{ amount }} EUR.\n.\nBye\n",
        headers={"X-Customer": "{{ id }}"},
        key="id",
    )
    assert (report.status, report.sent, report.failed, report.skipped) == ("finished", 5, 0, 0)
    rows = {r.row_key: r for r in report.rows()}
    got = by_recipient(sink_messages())
    assert sorted(got) == sorted(c["email"] for c in CUSTOMERS)
    for customer in CUSTOMERS:
        message = got[customer["email"]]
        assert_wire_safe(message.raw)
        row = rows[customer["id"]]
        assert row.state == "sent" and row.code == 250
        assert message.envelope_from == "mailconduit@example.com"
        assert message.recipients == (customer["email"], customer["manager"], "audit@example.com")
        msg = message.message
        assert msg["To"].addresses[0].display_name == customer["name"]
        assert msg["To"].addresses[0].addr_spec == customer["email"]
        assert str(msg["Cc"]) == customer["manager"]
        assert msg["Bcc"] is None and b"audit@" not in message.raw
        assert str(msg["Reply-To"]) == "Accounts Team <accounts@example.com>"
        assert str(msg["From"]) == "mailconduit <mailconduit@example.com>"
        assert str(msg["Subject"]) == f"Statement for {customer['name']} — {customer['city']}"
        assert str(msg["X-Customer"]) == customer["id"]
        assert msg["Message-ID"] == row.message_id
        assert msg.get_content_type() == "text/plain"
        assert message.text() == (
            f"Dear {customer['name']},\nyou owe {customer['amount']} EUR.\n.\nBye\n"
        )
    # every Message-ID is distinct, and each names the sender's domain
    ids = [m.header("Message-ID") for m in got.values()]
    assert len(set(ids)) == 5 and all(i.endswith("@example.com>") for i in ids)


def test_html_body_from_the_connection_setting_and_its_override(
    monkeypatch: pytest.MonkeyPatch, server: FaultServer, customers: Path
) -> None:
    name = connect_to(monkeypatch, server.port, name="htmlconn", use_html_body="true")
    body = '<p>Hello <b>{{ name }}</b>, see <a href="https://example.com/c/{{ id }}">your page</a>.</p>'
    common: dict[str, Any] = {"connection": name, "to": "{{ email }}", "subject": "Hi", "body": body, "limit": 2}

    api.export(str(customers), **common)
    html_messages = by_recipient(server_messages(server))
    assert sorted(html_messages) == ["bob@example.org", "zoe@example.com"]
    bob = html_messages["bob@example.org"]
    assert bob.message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in bob.message.iter_parts()] == ["text/plain", "text/html"]
    # the row value is escaped in HTML: it cannot open a tag
    assert bob.html() == (
        "<p>Hello <b>Bob &lt;Builder&gt; &amp; Sons</b>, see "
        '<a href="https://example.com/c/c2">your page</a>.</p>\n'
    )
    # the generated text part is readable and keeps the link
    text = bob.text()
    assert "Bob <Builder> & Sons" in text and "https://example.com/c/c2" in text
    assert "<b>" not in text and "&lt;" not in text

    # --text: the same template goes out as text/plain, unescaped
    api.export(str(customers), html=False, **common)
    plain = [m for m in server_messages(server) if m.recipients == ("bob@example.org",)][1]
    assert plain.message.get_content_type() == "text/plain"
    assert "<b>Bob <Builder> & Sons</b>" in plain.text()

    # --html on a text-only connection (local) turns HTML on
    api.export(str(customers), **{**common, "connection": "local", "html": True})
    assert by_recipient(sink_messages())["bob@example.org"].html() == bob.html()


# --------------------------------------------------------------------------- table mode


def test_table_mode_inline_html_table_with_a_row_cap_note(
    monkeypatch: pytest.MonkeyPatch, server: FaultServer, customers: Path
) -> None:
    name = connect_to(monkeypatch, server.port, use_html_body="true")
    report = api.export(
        str(customers),
        connection=name,
        mode="table",
        to="board@example.com",
        subject="All {{ count }} customers",
        body="<h1>Customers</h1>\n{{ table_html }}\n<p>All rows are listed above.</p>",
        table_row_cap=3,
    )
    assert (report.sent, report.failed) == (1, 0)
    message = only(server_messages(server))
    assert_wire_safe(message.raw)
    assert message.recipients == ("board@example.com",)
    assert message.header("Subject") == "All 5 customers"
    html = message.html()
    assert html.count("<tr>") == 1 + 3  # header row + capped rows
    assert "showing 3 of 5 rows" in html
    assert "Bob &lt;Builder&gt; &amp; Sons" in html and "<Builder>" not in html
    assert "Zoë Ärger" in html and "Plain Person" not in html
    assert "showing 3 of 5 rows" in message.text()


def test_table_mode_text_body_gets_the_table_even_when_it_mentions_rows(
    customers: Path,
) -> None:
    """Without a table placeholder the table follows the body, whatever words the body uses."""
    api.export(
        str(customers),
        connection="local",
        mode="table",
        to="board@example.com",
        subject="Customers",
        body="All rows of today:",
    )
    text = only(sink_messages()).text()
    assert text.startswith("All rows of today:\n")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("id "))
    assert [c.strip() for c in header.split("|")] == list(CUSTOMERS[0])
    for customer in CUSTOMERS:
        assert any(customer["email"] in line and customer["id"] in line for line in lines)


def test_table_mode_attachments_csv_xlsx_json(customers: Path) -> None:
    from openpyxl import load_workbook

    report = api.export(
        str(customers),
        connection="local",
        mode="table",
        to="board@example.com",
        subject="Export",
        body="Attached: {{ count }} rows.",
        table_formats=["csv", "xlsx", "json"],
    )
    assert report.sent == 1
    message = only(sink_messages())
    assert_wire_safe(message.raw)
    assert message.text() == "Attached: 5 rows.\n"
    files = message.attachments()
    assert sorted(files) == ["data.csv", "data.json", "data.xlsx"]
    assert list(csv.DictReader(io.StringIO(files["data.csv"].decode("utf-8")))) == CUSTOMERS
    assert json.loads(files["data.json"]) == CUSTOMERS
    sheet = load_workbook(io.BytesIO(files["data.xlsx"]), read_only=True).active
    assert sheet is not None
    cells = [[c for c in row] for row in sheet.iter_rows(values_only=True)]
    assert cells[0] == list(CUSTOMERS[0])
    assert [list(r) for r in cells[1:]] == [list(c.values()) for c in CUSTOMERS]
    content_types = {
        p.get_filename(): p.get_content_type() for p in message.message.iter_attachments()
    }
    assert content_types == {
        "data.csv": "text/csv",
        "data.json": "application/json",
        "data.xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }


def test_table_mode_recipients_from_a_column_receive_it_in_one_go(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, customers: Path
) -> None:
    name = connect_to(monkeypatch, server.port)
    report = api.export(
        str(customers),
        connection=name,
        mode="table",
        to_column="manager",
        subject="Portfolio",
        body="{{ table_text }}",
    )
    assert (report.sent, report.failed) == (1, 0)
    message = only(server_messages(server))
    # every distinct address once (ANNA@ and anna@ are the same mailbox), one transaction
    assert message.recipients == ("anna@example.com", "ben@example.com")
    assert message.envelope_from == SENDER
    assert sorted(a.addr_spec for a in message.message["To"].addresses) == [
        "anna@example.com",
        "ben@example.com",
    ]
    mails = [c for s in server.sessions for c in s.commands if c.startswith("MAIL")]
    assert len(mails) == 1


# --------------------------------------------------------------------------- group mode


def test_group_mode_one_message_per_value_with_that_groups_rows(
    customers: Path, tmp_path: Path
) -> None:
    data = write_csv(
        tmp_path / "by_manager.csv",
        [{**c, "manager": c["manager"].lower()} for c in CUSTOMERS],
    )
    report = api.export(
        str(data),
        connection="local",
        mode="group",
        by="manager",
        to="{{ group }}",
        subject="{{ count }} customers for {{ group }}",
        body="Your customers:\n{{ table_text }}",
        table_formats=["html", "csv"],
    )
    assert (report.sent, report.failed, report.skipped) == (2, 0, 0)
    got = {m.recipients: m for m in sink_messages()}
    assert sorted(got) == [("anna@example.com",), ("ben@example.com",)]
    for manager, message in got.items():
        assert_wire_safe(message.raw)
        mine = [c for c in CUSTOMERS if c["manager"].lower() == manager[0]]
        assert message.header("Subject") == f"{len(mine)} customers for {manager[0]}"
        ((file_name, content),) = message.attachments().items()
        assert file_name == f"data-{manager[0].replace('@', '_')}.csv"
        attached = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
        assert [r["id"] for r in attached] == [c["id"] for c in mine]
        text = message.text()
        for customer in CUSTOMERS:
            assert (customer["email"] in text) == (customer in mine)


def test_group_mode_recipients_from_a_column(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch, customers: Path
) -> None:
    name = connect_to(monkeypatch, server.port)
    api.export(
        str(customers),
        connection=name,
        mode="group",
        by="city",
        to_column="email",
        subject="{{ group }}",
        body="{{ count }}",
    )
    got = by_recipient(server_messages(server))
    assert {e: m.header("Subject") for e, m in got.items()} == {
        c["email"]: c["city"] for c in CUSTOMERS
    }


# --------------------------------------------------------------------------- identity and shape


def test_message_ids_are_the_same_for_the_same_run_and_row(customers: Path, tmp_path: Path) -> None:
    def ids(run_id: str, folder: str) -> dict[str, str]:
        report = api.export(
            str(customers), connection="local", to="{{ email }}", subject="s", body="b",
            key="id", run_id=run_id, dry_run=str(tmp_path / folder),
        )  # fmt: skip
        return {r.recipients[0]: r.message_id for r in report.rows()}

    first = ids("run-a", "one")
    assert ids("run-a", "two") == first
    other = ids("run-b", "three")
    assert len(set(first.values())) == 5 and not set(first.values()) & set(other.values())

    # a real send with that run id carries exactly those ids
    report = api.export(
        str(customers),
        connection="local",
        to="{{ email }}",
        subject="s",
        body="b",
        key="id",
        run_id="run-a",
    )
    assert report.sent == 5
    assert {e: m.header("Message-ID") for e, m in by_recipient(sink_messages()).items()} == first


def test_date_and_mime_version_and_long_lines(tmp_path: Path) -> None:
    long_word = "x" * 3000
    data = write_csv(
        tmp_path / "long.csv",
        [{"email": "long@example.com", "word": long_word, "words": " ".join(["wörd"] * 600)}],
    )
    api.export(
        str(data),
        connection="local",
        to="{{ email }}",
        subject="{{ words }}",
        body="{{ word }}\n{{ words }}\n",
        headers={"X-Long": "{{ words }}"},
    )
    message = only(sink_messages())
    assert_wire_safe(message.raw)
    names = header_names(message.raw)
    assert names[:1] == ["Date"] and "MIME-Version" in names
    assert message.header("Subject") == " ".join(["wörd"] * 600)
    assert message.header("X-Long") == " ".join(["wörd"] * 600)
    assert message.text() == f"{long_word}\n{' '.join(['wörd'] * 600)}\n"


# --------------------------------------------------------------------------- a second server


def _postfix_message(dumped: bytes) -> bytes:
    """The message smtp-sink dumped: its own X-* and Received lines dropped, CRLF restored."""
    lines = dumped.split(b"\n")
    start = next(i for i, line in enumerate(lines) if line.startswith(b"Date: "))
    text = b"\n".join(lines[start:])
    assert text.endswith(b"\n\n")  # smtp-sink adds an empty line after the message
    return text[:-1].replace(b"\n", b"\r\n")


def _without_date(raw: bytes) -> bytes:
    return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date: "))


@pytest.mark.postfix
@pytest.mark.parametrize(
    "mode",
    [
        {"to": '"{{ name }}" <{{ email }}>', "subject": "Hi {{ name }}", "body": "<p>{{ name }}</p>\n.\n"},
        {"mode": "table", "to": "board@example.com", "subject": "All", "body": "<p>All:</p>",
         "table_formats": "html,csv"},
        {"mode": "group", "by": "manager", "to": "{{ group }}", "subject": "{{ group }}",
         "body": "{{ table_html }}", "table_formats": "html,xlsx,json"},
    ],
    ids=["row", "table", "group"],
)  # fmt: skip
def test_postfix_receives_the_same_bytes_as_aiosmtpd(
    monkeypatch: pytest.MonkeyPatch, customers: Path, mode: dict[str, str]
) -> None:
    from mailconduit.testing import SmtpSink

    options: dict[str, Any] = {"run_id": "same-run", "journal": False, **mode}
    with FaultServer() as server:
        name = connect_to(monkeypatch, server.port, name="aiosmtpd", use_html_body="true")
        first = api.export(str(customers), connection=name, **options)
    with SmtpSink(dump=True) as postfix:
        name = connect_to(monkeypatch, postfix.port, name="postfix", use_html_body="true")
        second = api.export(str(customers), connection=name, **options)
    assert first.sent == second.sent == len(server.messages) > 0
    from_postfix = [_postfix_message(d) for d in postfix.dumped()]
    assert postfix.counters()["messages"] == len(from_postfix) == first.sent
    assert sorted(map(_without_date, from_postfix)) == sorted(
        _without_date(m.raw) for m in server_messages(server)
    )
