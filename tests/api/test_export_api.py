"""The Python API: ``mailconduit.export(source, connection=..., to=..., subject=..., body=...)``
with a file path, a SQL query (SQLite here; PostgreSQL in test_export_postgres.py), any
iterable of mappings and a pandas DataFrame; it returns the report and raises for bad input.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailconduit
from export_support import by_recipient, sink_messages, write_csv
from mailconduit.delivery.report import ExportReport
from mailconduit.errors import ConfigError, SourceError

TEMPLATE: dict[str, Any] = {"connection": "local", "to": "{{ name }} <{{ email }}>",
            "subject": "Balance {{ name }}", "body": "Balance: {{ balance }}\n"}  # fmt: skip


def assert_delivered(report: ExportReport, expected: dict[str, tuple[str, str]]) -> None:
    """``expected``: address → (name, balance as the body shows it)."""
    assert isinstance(report, ExportReport)
    assert report.status == "finished" and report.ok
    assert report.sent == len(expected) and report.total == len(expected)
    got = by_recipient(sink_messages())
    assert sorted(got) == sorted(expected)
    ids = {r.recipients[0]: r.message_id for r in report.rows()}
    for address, (name, balance) in expected.items():
        message = got[address]
        assert message.header("Subject") == f"Balance {name}"
        assert message.message["To"].addresses[0].display_name == name
        assert message.text() == f"Balance: {balance}\n"
        assert message.header("Message-ID") == ids[address]


def test_export_a_file_path(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "balances.csv", [
        {"name": "Zoë", "email": "zoe@example.com", "balance": "10.50"},
        {"name": "Bob", "email": "bob@example.com", "balance": "-3"},
    ])  # fmt: skip
    report = mailconduit.export(data, **TEMPLATE)
    assert_delivered(
        report, {"zoe@example.com": ("Zoë", "10.50"), "bob@example.com": ("Bob", "-3")}
    )
    assert report.to_dict()["counts"] == {"sent": 2}


def test_export_a_sql_query_on_sqlite(tmp_path: Path) -> None:
    database = tmp_path / "crm.sqlite"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT, email TEXT, "
                   "balance REAL, active INTEGER)")  # fmt: skip
        db.executemany(
            "INSERT INTO customer VALUES (?, ?, ?, ?, ?)",
            [(1, "Zoë", "zoe@example.com", 10.5, 1), (2, "Bob", "bob@example.com", None, 1),
             (3, "Gone", "gone@example.com", 1.0, 0)],
        )  # fmt: skip
    db.close()
    report = mailconduit.export(
        "SELECT name, email, balance FROM customer WHERE active = 1 ORDER BY id",
        database_url=f"sqlite:///{database}",
        **TEMPLATE,
    )
    # None renders as an empty string; a REAL as Python prints it
    assert_delivered(report, {"zoe@example.com": ("Zoë", "10.5"), "bob@example.com": ("Bob", "")})


def test_export_a_generator_of_dicts() -> None:
    def rows() -> Iterator[dict[str, object]]:
        yield {"name": "Gen One", "email": "one@example.com", "balance": 1}
        yield {"name": "Gen Two", "email": "two@example.com", "balance": 2.25}

    report = mailconduit.export(rows(), **TEMPLATE)
    assert_delivered(
        report, {"one@example.com": ("Gen One", "1"), "two@example.com": ("Gen Two", "2.25")}
    )


def test_export_a_list_with_filter_and_order(tmp_path: Path) -> None:
    rows = [{"name": f"N{i}", "email": f"n{i}@example.com", "balance": i} for i in range(10)]
    report = mailconduit.export(rows, where="balance >= 7", order_by="balance DESC", **TEMPLATE)
    assert_delivered(report, {f"n{i}@example.com": (f"N{i}", str(i)) for i in (7, 8, 9)})


def test_export_a_pandas_dataframe() -> None:
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(
        {
            "name": ["Frame A", "Frame B"],
            "email": ["a@example.com", "b@example.com"],
            "balance": [1.5, None],
            "since": pandas.to_datetime(["2024-02-29", None]),
        }
    )
    body = "Balance: {{ balance }} since {{ since }}\n"
    report = mailconduit.export(frame, **{**TEMPLATE, "body": body})
    got = by_recipient(sink_messages())
    assert report.sent == 2
    assert got["a@example.com"].text() == f"Balance: 1.5 since {dt.datetime(2024, 2, 29)}\n"
    # missing values (NaN, NaT) are empty, not "nan"/"NaT"
    assert got["b@example.com"].text() == "Balance:  since \n"


def test_bad_input_raises_and_sends_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        mailconduit.export([{"email": "a@example.com"}], connection="local", to="{{ mail }}",
                           subject="s", body="b")  # fmt: skip
    assert "'mail'" in str(refused.value) and refused.value.exit_code == 2
    with pytest.raises(SourceError):
        mailconduit.export(tmp_path / "missing.csv", **TEMPLATE)
    with pytest.raises(TypeError, match="colour"):  # a typo is caught by the call itself
        mailconduit.export([{"email": "a@example.com"}], connection="local", to="{{ email }}",
                           subject="s", body="b", colour="blue")  # type: ignore[call-arg]  # fmt: skip
    assert sink_messages() == []


def test_a_python_run_resumes_with_the_same_data(tmp_path: Path) -> None:
    rows = [{"name": f"R{i}", "email": f"r{i}@example.com", "balance": i} for i in range(4)]
    first = mailconduit.export(rows, run_id="py-run", **TEMPLATE)
    assert first.sent == 4
    again = mailconduit.resume("py-run", source=rows)
    assert again.sent == 4 and again.sent_before == 4
    assert len(sink_messages()) == 4
    with pytest.raises(ConfigError, match="source"):
        mailconduit.resume("py-run")
