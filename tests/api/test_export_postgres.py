"""The same export from PostgreSQL: a query on the local server (a table in a database of its
own, dropped afterwards), through the Python API and the CLI, in row and group mode.
"""

from __future__ import annotations

import decimal
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import mailconduit
from export_support import by_recipient, sink_messages
from mailconduit import api
from mailconduit.delivery.resume import spec_of_run

pytestmark = pytest.mark.postgres

ACCOUNTS = [
    (1, "Zoë Ärger", "zoe@example.com", decimal.Decimal("10.50"), "anna@example.com"),
    (2, "Bob", "bob@example.com", decimal.Decimal("-3.00"), "ben@example.com"),
    (3, "李伟", "li@example.com", None, "anna@example.com"),
]


@dataclass(frozen=True)
class Accounts:
    """The ACCOUNTS table in a fresh database of the local PostgreSQL server."""

    url: str
    table: str = "accounts"


@pytest.fixture
def accounts(pg_url: str) -> Accounts:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True, connect_timeout=5) as db:
        db.execute(
            "CREATE TABLE accounts (id integer PRIMARY KEY, name text, email text, "
            "balance numeric(10, 2), manager text)"
        )
        with db.cursor() as cur:
            cur.executemany("INSERT INTO accounts VALUES (%s, %s, %s, %s, %s)", ACCOUNTS)
    return Accounts(pg_url)


def test_row_mode_from_a_postgresql_query(accounts: Accounts) -> None:
    report = mailconduit.export(
        f"SELECT id, name, email, balance FROM {accounts.table} ORDER BY id",
        connection="local",
        database_url=accounts.url,
        key="id",
        to="{{ name }} <{{ email }}>",
        subject="Balance of {{ name }}",
        body="{{ balance }}",
    )
    assert (report.status, report.sent, report.failed) == ("finished", 3, 0)
    assert [r.row_key for r in report.rows()] == ["1", "2", "3"]
    got = by_recipient(sink_messages())
    assert {a: (m.header("Subject"), m.text()) for a, m in got.items()} == {
        "zoe@example.com": ("Balance of Zoë Ärger", "10.50\n"),
        "bob@example.com": ("Balance of Bob", "-3.00\n"),
        "li@example.com": ("Balance of 李伟", ""),
    }


def test_group_mode_from_postgresql_through_the_cli(cli: Any, accounts: Accounts) -> None:
    result = cli(
        "export", "--query", f"SELECT * FROM {accounts.table} ORDER BY id", "--database-url", accounts.url,
        "--mode", "group", "--by", "manager", "--to", "{{ group }}",
        "--subject", "{{ count }} accounts", "--body", "{% for r in rows %}{{ r.email }}\n{% endfor %}",
    )  # fmt: skip
    assert result.code == 0, result.output
    got = by_recipient(sink_messages())
    assert sorted(got) == ["anna@example.com", "ben@example.com"]
    assert got["anna@example.com"].header("Subject") == "2 accounts"
    assert got["anna@example.com"].text().startswith("zoe@example.com\nli@example.com\n")
    assert got["ben@example.com"].text().startswith("bob@example.com\n")


def test_a_bad_query_sends_nothing(cli: Any, accounts: Accounts) -> None:
    result = cli(
        "export", "--query", f"SELECT nosuch FROM {accounts.table}", "--database-url", accounts.url,
        "--to", "{{ email }}", "--subject", "s", "--body", "b",
    )  # fmt: skip
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and "nosuch" in result.err
    assert sink_messages() == []


def test_the_database_password_is_sealed_in_the_journal_and_opened_by_resume(accounts: Accounts) -> None:
    """The journal (read by `runs show`, the console and REST, maybe on a shared server) keeps
    the query's URL with its password as ***; resume still reads the query with it."""
    password = "pw-" + secrets.token_hex(8)  # the local server trusts, so any password works
    url = accounts.url.replace("postgres@", f"postgres:{password}@", 1)
    assert password in url
    report = mailconduit.export(
        f"SELECT id, email FROM {accounts.table} ORDER BY id",
        connection="local",
        database_url=url,
        key="id",
        to="{{ email }}",
        subject="s",
        body="b",
        run_id="sealed-url",
    )
    assert (report.status, report.sent) == ("finished", 3)
    recorded = api.get_run("sealed-url").spec
    assert password not in repr(recorded)
    assert recorded["database_url"] == url.replace(password, "***")
    journal_file = Path(os.environ["MAILCONDUIT_HOME"]) / "mailconduit.db"
    assert password.encode() not in journal_file.read_bytes()
    assert spec_of_run("sealed-url").database_url == url  # what resume reads the query with
    again = mailconduit.resume("sealed-url")
    assert (again.status, again.sent) == ("finished", 3)
    assert len(sink_messages()) == 3  # resume read the query again and sent nothing twice
