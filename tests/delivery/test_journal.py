"""The journal: the same code on SQLite and PostgreSQL, and an export resumed from it."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconduit import api
from mailconduit.errors import ConfigError, NotFoundError
from mailconduit.journal import DailyUsage, Journal, RowState, RowStatus, RunStatus
from mailconduit.testing import SmtpSink


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{home / 'journal.db'}"
    else:
        yield request.getfixturevalue("pg_url")


def test_runs_rows_and_states(store_url: str) -> None:
    journal = Journal(store_url)
    journal.create_run(
        "r1", connection="c", mode="row", spec={"to": "{{x}}"}, fingerprint="f", total=3
    )
    with pytest.raises(ConfigError):
        journal.create_run("r1", connection="c", mode="row", spec={}, fingerprint="f", total=3)
    journal.write_rows("r1", [RowState(f"k{i}", i, i, RowStatus.CLAIMED, attempts=1) for i in range(1, 4)])
    journal.write_rows(
        "r1",
        [
            RowState("k1", 1, 1, RowStatus.SENT, attempts=1, recipients=("a@example.com",), code=250, reply="ok"),
            RowState("k2", 2, 2, RowStatus.FAILED, attempts=1, code=550, enhanced="5.1.1",
                     reply="no such user", detail=(("b@example.com", 550, "no such user"),)),
        ],
    )  # fmt: skip
    info = journal.get_run("r1")
    assert info.counts == {"sent": 1, "failed": 1, "claimed": 1}
    assert info.spec == {"to": "{{x}}"} and info.total == 3
    assert journal.states("r1") == {"k1": ("sent", 1), "k2": ("failed", 1), "k3": ("claimed", 1)}
    failed = next(journal.rows("r1", states=["failed"]))
    assert (failed.code, failed.enhanced, failed.detail) == (
        550,
        "5.1.1",
        (("b@example.com", 550, "no such user"),),
    )
    journal.set_status("r1", RunStatus.FINISHED, message="done", finished=True)
    listed = journal.list_runs()
    assert [r.run_id for r in listed] == ["r1"] and listed[0].status == "finished"
    assert listed[0].finished_at is not None
    with pytest.raises(NotFoundError):
        journal.get_run("nope")


def test_rows_are_read_in_order_across_pages(store_url: str) -> None:
    journal = Journal(store_url)
    journal.create_run("big", connection="c", mode="row", spec={}, fingerprint="f", total=2500)
    journal.write_rows("big", [RowState(f"k{i:05d}", i, i, RowStatus.SENT) for i in range(2500, 0, -1)])
    seqs = [r.seq for r in journal.rows("big")]
    assert seqs == list(range(1, 2501))


def test_daily_usage_is_kept(store_url: str) -> None:
    journal = Journal(store_url)
    assert journal.daily_usage("c") is None
    journal.save_daily_usage("c", DailyUsage(dt.date(2026, 11, 29), 12))
    journal.save_daily_usage("c", DailyUsage(dt.date(2026, 11, 29), 40))
    assert journal.daily_usage("c") == DailyUsage(dt.date(2026, 11, 29), 40)


@pytest.mark.postgres
def test_export_and_resume_with_the_journal_on_postgresql(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAILCONDUIT_DB", pg_url)
    data = tmp_path / "rows.csv"
    with data.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name"])
        writer.writerows([f"p{i}@example.com", f"P{i}"] for i in range(40))
    with SmtpSink() as sink:
        monkeypatch.setenv(
            "MAILCONDUIT_CONN_PG", f"smtp://127.0.0.1:{sink.port}?from_address=me@example.com"
        )
        options: dict[str, Any] = {"connection": "pg", "to": "{{ email }}", "subject": "hi {{ name }}", "body": "b"}
        first = api.export(str(data), run_id="pg-run", limit=25, **options)
        assert first.sent == 25
        second = api.export(str(data), run_id="pg-run", **options)  # same run id: resumes
    assert second.status == "finished"
    delivered = [int(part[5:]) for part in sink.output.split() if part.startswith("mesg=")]
    assert delivered and delivered[-1] == 40  # the resumed run sent only the 15 missing rows
    info = api.get_run("pg-run")
    assert info.counts == {"sent": 40}
    import psycopg

    with psycopg.connect(pg_url) as db:
        (count,) = db.execute("SELECT count(*) FROM run_rows WHERE run_id = 'pg-run'").fetchone()  # type: ignore[misc]
    assert count == 40


def test_claim_mark_counts_rows_whose_outcome_was_never_written(store_url: str) -> None:
    journal = Journal(store_url)
    journal.create_run("m", connection="c", mode="row", spec={}, fingerprint="f", total=10)
    journal.claim_through("m", 6)
    journal.claim_through("m", 4)  # the mark never moves back
    journal.write_rows("m", [RowState(f"k{i}", i, i, RowStatus.SENT) for i in (1, 2, 3)])
    info = journal.get_run("m")
    assert info.claimed_seq == 6
    assert info.counts == {"sent": 3, "claimed": 3}  # rows 4-6 were handed over, fate unknown


@given(st.lists(st.text(max_size=12), max_size=3))
def test_recipients_are_stored_exactly_as_json_writes_them(recipients: list[str]) -> None:
    """The shortcut for one plain address writes what json.dumps writes, for any text."""
    from mailconduit.journal.records import _json_strings

    assert _json_strings(tuple(recipients)) == json.dumps(recipients)
    assert json.loads(_json_strings(tuple(recipients))) == recipients


def test_states_are_enums_stored_as_their_plain_values(home: Path) -> None:
    """RowStatus and RunStatus come back as enums; the store holds the same words as ever."""
    import sqlite3

    path = home / "journal.db"
    with Journal(f"sqlite:///{path}") as journal:
        journal.create_run("e", connection="c", mode="row", spec={}, fingerprint="f", total=1)
        journal.write_rows("e", [RowState("k1", 1, 1, RowStatus.SENT, attempts=1)])
        journal.set_status("e", RunStatus.PAUSED, message="held")
        row = next(journal.rows("e"))
        assert row.state is RowStatus.SENT
        assert journal.get_run("e").status is RunStatus.PAUSED
        assert journal.states("e") == {"k1": (RowStatus.SENT, 1)}
    stored = sqlite3.connect(path)
    try:
        assert stored.execute("SELECT state, typeof(state) FROM run_rows").fetchall() == [
            ("sent", "text")
        ]
        assert stored.execute("SELECT status FROM runs").fetchall() == [("paused",)]
    finally:
        stored.close()


def test_a_journal_left_by_with_holds_no_file_open(home: Path) -> None:
    """Leaving ``with`` closes the store connection (no file descriptor left on it)."""
    import os

    path = home / "journal.db"

    def open_on_store() -> int:
        fds = Path("/proc/self/fd")
        return sum(
            1 for fd in os.listdir(fds) if os.path.realpath(fds / fd).startswith(str(path))
        )

    with Journal(f"sqlite:///{path}") as journal:
        journal.create_run("c1", connection="c", mode="row", spec={}, fingerprint="f", total=0)
        assert open_on_store() > 0
    assert open_on_store() == 0
