"""The server's SIZE limit: a message that would exceed it is refused before MAIL with a clear
reason; in table mode the user may instead attach the data or split the table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from export_support import assert_wire_safe, connect_to, only, server_messages, write_csv
from mailconduit import api
from mailconduit.testing import FaultServer

LIMIT = 12_000
ROWS = [{"id": str(i), "email": f"u{i}@example.com", "amount": str(i * 3)} for i in range(200)]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer(size_limit=LIMIT) as srv:
        yield srv


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch, server: FaultServer) -> str:
    return connect_to(monkeypatch, server.port, use_html_body="true")


@pytest.fixture
def table(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "table.csv", ROWS)


def mail_commands(server: FaultServer) -> list[str]:
    return [c for s in server.sessions for c in s.commands if c.startswith("MAIL")]


def test_row_mode_refuses_only_the_oversized_row_before_mail(
    tmp_path: Path, server: FaultServer, target: str
) -> None:
    rows = [{"email": f"r{i}@example.com", "text": f"short {i}"} for i in range(5)]
    rows[2]["text"] = "long " * 3000
    data = write_csv(tmp_path / "rows.csv", rows)
    report = api.export(
        str(data), connection=target, to="{{ email }}", subject="s", body="{{ text }}"
    )
    assert (report.sent, report.failed) == (4, 1)
    failed = only(r for r in report.rows() if r.state == "failed")
    assert failed.row_number == 3
    assert "SIZE" in failed.reply and str(LIMIT) in failed.reply and "not sent" in failed.reply
    assert "r2@example.com" not in " ".join(c for s in server.sessions for c in s.commands)
    assert len(mail_commands(server)) == 4
    # each MAIL declares the size (RFC 1870), at least the bytes the server then received
    declared = sorted(int(c.rsplit("SIZE=", 1)[1].split()[0]) for c in mail_commands(server))
    assert all(
        d >= r
        for d, r in zip(declared, sorted(len(m.raw) for m in server_messages(server)), strict=True)
    )


def test_table_mode_by_default_fails_with_the_reason(
    table: Path, server: FaultServer, target: str
) -> None:
    report = api.export(str(table), connection=target, mode="table", to="boss@example.com",
                        subject="All", body="<p>Data:</p>")  # fmt: skip
    row = only(report.rows())
    assert row.state == "failed" and "SIZE" in row.reply and str(LIMIT) in row.reply
    assert mail_commands(server) == [] and server.messages == []


def test_table_mode_attaches_the_data_when_the_inline_table_is_too_big(
    table: Path, server: FaultServer, target: str
) -> None:
    report = api.export(str(table), connection=target, mode="table", to="boss@example.com",
                        subject="All", body="<p>Data:</p>", oversize="attach")  # fmt: skip
    assert report.sent == 1
    message = only(server_messages(server))
    assert_wire_safe(message.raw)
    assert len(message.raw) <= LIMIT
    assert "<table" not in message.html()
    assert message.html().startswith("<p>Data:</p>\nThe data is attached.")
    assert message.text().startswith("Data:\n\nThe data is attached.")
    attached = message.attachments()["data.csv"].decode("utf-8")
    assert list(csv.DictReader(io.StringIO(attached))) == ROWS


def test_table_mode_splits_the_table_into_parts_that_fit(
    table: Path, server: FaultServer, target: str
) -> None:
    report = api.export(str(table), connection=target, mode="table", to="boss@example.com",
                        subject="All", body="<p>Data:</p>", oversize="split",
                        table_formats=["html", "csv"])  # fmt: skip
    keys = [r.row_key for r in report.rows()]
    assert len(keys) >= 2 and report.sent == len(keys)
    assert keys == [f"table#part{n}of{len(keys)}" for n in range(1, len(keys) + 1)]
    messages = server_messages(server)
    assert len({m.header("Message-ID") for m in messages}) == len(keys)
    rows: list[dict[str, str]] = []
    for message in messages:
        assert len(message.raw) <= LIMIT
        rows += csv.DictReader(io.StringIO(message.attachments()["data.csv"].decode("utf-8")))
    assert sorted(rows, key=lambda r: int(r["id"])) == ROWS


def test_split_tries_one_row_per_message_before_giving_up(
    tmp_path: Path, server: FaultServer, target: str
) -> None:
    # two of these rows never fit one message: only one row per message does
    rows = [{"id": str(i), "email": f"u{i}@example.com", "note": "n " * 2800} for i in range(7)]
    data = write_csv(tmp_path / "wide.csv", rows)
    report = api.export(str(data), connection=target, mode="table", to="boss@example.com",
                        subject="All", body="<p>Data:</p>", oversize="split",
                        table_formats=["csv"])  # fmt: skip
    assert report.sent == 7, [r.reply for r in report.rows()]
    rows[4]["note"] = "n " * 9000
    data = write_csv(tmp_path / "too-wide.csv", rows)
    report = api.export(str(data), connection=target, mode="table", to="boss@example.com",
                        subject="All", body="<p>Data:</p>", oversize="split",
                        table_formats=["csv"])  # fmt: skip
    refused = only(report.rows())
    assert refused.state == "skipped" and "even one row per message" in refused.reply
