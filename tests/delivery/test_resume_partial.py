"""A row delivered to some of its recipients, then stopped: resume sends it to the rest only.

A server answers 452 to every RCPT for one recipient of a three-recipient row, so the row
is sent to the other two and the third stays owed. The run is then stopped (SIGTERM to a
``mailconduit export`` subprocess, kill -9, --max-errors) or gives up on it, and resumed
against the same server accepting everything: the owed recipient alone gets the message,
with the same Message-ID, and the row's final entry names every recipient. Also: a store
created by the previous schema (no ``owed`` column) keeps working.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from delivery_support import (
    MAILCONDUIT,
    cli_process,
    connection_url,
    export_args,
    fault_env,
    journal_rows,
    message_id,
    people,
    run_cli,
    send,
    stop,
    use_server,
    wait_until,
    write_csv,
)
from mailconduit import api
from mailconduit.journal import Journal, RowState, RowStatus
from mailconduit.testing import Fault, FaultServer, ReceivedMessage

A, B, C, D = (f"{name}@example.com" for name in "abcd")
TEAM = {"id": 0, "email": f"{A}, {B}, {C}", "name": "Team"}
#: Retries that never run out during a test: the row waits for its deferred recipient.
PATIENT = ("--max-attempts", "1000", "--retry-seconds", "600")


class RecipientServer(FaultServer):
    """Answers 452 to every RCPT for the addresses in ``defer`` and 550 to those in
    ``refuse`` (sets a test may change while it runs). Run clients one session at a time:
    the command is read from the newest session."""

    def __init__(self, *, defer: set[str] | None = None, refuse: set[str] | None = None) -> None:
        super().__init__()
        self.defer = set(defer or ())
        self.refuse = set(refuse or ())
        self.rcpts: list[str] = []

    def next_fault(self, command: str) -> Fault | None:
        fault = super().next_fault(command)
        if command != "RCPT" or not self.sessions or not self.sessions[-1].commands:
            return fault
        line = self.sessions[-1].commands[-1]
        address = line.partition("<")[2].partition(">")[0]
        self.rcpts.append(address)
        if address in self.defer:
            return Fault.parse("452 4.2.2 mailbox busy, try later")
        if address in self.refuse:
            return Fault.parse("550 5.1.1 no such user")
        return fault


def team_copies(messages: list[ReceivedMessage]) -> list[tuple[tuple[str, ...], str]]:
    """(recipients, Message-ID) of every copy of the team row the server accepted."""
    return [(m.rcpt_tos, message_id(m.data)) for m in messages if b"Dear Team" in m.data]


def show(run_id: str) -> dict[str, Any]:
    result = run_cli("runs", "show", run_id, "--json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def report_rows(run_id: str) -> dict[str, dict[str, Any]]:
    result = run_cli("runs", "report", run_id, "--format", "json")
    assert result.returncode == 0, result.stderr
    return {r["row_key"]: r for r in json.loads(result.stdout)["rows"]}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The team row, then three rows of one recipient each."""
    return write_csv(tmp_path / "team.csv", [TEAM, *people(3, start=1)])


def assert_served_in_two_parts(server: RecipientServer, row: RowState) -> None:
    """a and c got the first copy, b the resumed one alone, all under the row's Message-ID."""
    assert team_copies(server.messages) == [((A, C), row.message_id), ((B,), row.message_id)]
    assert (row.state, row.recipients, row.detail, row.owed) == ("sent", (A, B, C), (), ())


def test_sigterm_then_resume_sends_the_row_only_to_the_recipient_still_owed(
    source: Path,
) -> None:
    with RecipientServer(defer={B}) as server:
        env = fault_env(server.port)
        with cli_process(export_args(source, "part", "--concurrency", "1", *PATIENT), env) as proc:
            # the row went to a and c, b was deferred and tried again alone; the others went
            wait_until(
                lambda: len(server.messages) >= 4 and server.rcpts.count(B) >= 2,
                timeout=30,
                what="the deferred recipient to be tried again",
            )
            out = stop(proc, signal.SIGTERM)
        assert proc.returncode == 1, out
        assert "stopped by SIGTERM" in out
        row = journal_rows("part")["0"]
        assert row.state == "retry" and row.owed == (B,)
        assert row.recipients == (A, B, C)
        assert team_copies(server.messages) == [((A, C), row.message_id)]

        server.defer.clear()
        rcpts_before = len(server.rcpts)
        resumed = subprocess.run(
            [MAILCONDUIT, "runs", "resume", "part", "--json"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert server.rcpts[rcpts_before:] == [B]  # a and c were not even asked again
    rows = journal_rows("part")
    assert_served_in_two_parts(server, rows["0"])
    assert {k: r.state for k, r in rows.items()} == dict.fromkeys("0123", "sent")
    assert len(server.messages) == 5  # each single-recipient row once
    reported = report_rows("part")["0"]
    assert (reported["status"], reported["recipients"]) == ("sent", [A, B, C])
    assert reported["refused_recipients"] == []
    assert show("part")["counts"] == {"sent": 4}


def test_kill_9_while_a_recipient_is_owed_then_resume_sends_to_it_alone(source: Path) -> None:
    with RecipientServer(defer={B}) as server:
        env = fault_env(server.port)
        def journaled() -> bool:
            journal = Journal()
            if not journal.run_exists("kill"):
                return False
            states = journal.states("kill")
            return "0" in journal.partial_rows("kill") and all(
                states.get(k, ("",))[0] == "sent" for k in "123"
            )

        with cli_process(export_args(source, "kill", "--concurrency", "1", *PATIENT), env) as proc:
            wait_until(journaled, timeout=30, what="the partly delivered row in the journal")
            stop(proc, signal.SIGKILL)
        # the journal knew who was still owed while the row waited for its retry
        row = journal_rows("kill")["0"]
        assert (row.state, row.owed, row.recipients) == ("claimed", (B,), (A, B, C))
        assert team_copies(server.messages) == [((A, C), row.message_id)]
        delivered = len(server.messages)
        assert delivered == 4

        server.defer.clear()
        # the row's fate is unknown (the kill may have come during b's transaction): held
        conn = connection_url(server.port)
        held = run_cli(
            "runs", "resume", "kill", "--no-resend-uncertain", MAILCONDUIT_CONN_FAULT=conn
        )
        assert held.returncode == 1, held.stdout + held.stderr
        assert "1 uncertain" in held.stdout
        row = journal_rows("kill")["0"]
        assert (row.state, row.owed, row.recipients) == ("uncertain", (B,), (A, B, C))
        assert len(server.messages) == delivered

        resumed = run_cli("runs", "resume", "kill", "--json", MAILCONDUIT_CONN_FAULT=conn)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        report = json.loads(resumed.stdout)
    assert report["uncertain_resent"] == 1
    assert [m.rcpt_tos for m in server.messages[delivered:]] == [(B,)]
    assert_served_in_two_parts(server, journal_rows("kill")["0"])
    assert report["counts"] == {"sent": 4}
    [team] = [r for r in report["rows"] if r["row_key"] == "0"]
    assert (team["status"], team["recipients"]) == ("sent", [A, B, C])


def test_max_errors_pause_keeps_the_owed_recipient_and_the_refused_one_stays_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows_in = [{"id": 0, "email": f"{A}, {B}, {C}, {D}", "name": "Team"}, *people(3, start=1)]
    refuse = {D, "user1@example.com", "user2@example.com"}
    with RecipientServer(defer={B}, refuse=refuse) as server:
        use_server(monkeypatch, server.port)
        retry = {"max_attempts": 1000, "max_seconds": 600, "initial_delay": 0.5}
        first = send(rows_in, max_errors=2, retry=retry)
        assert first.status == "paused", first.message
        row = journal_rows(first.run_id)["0"]
        assert (row.state, row.owed) == ("retry", (B,))
        assert row.detail == ((D, 550, "no such user"),)

        server.defer.clear()
        server.refuse.clear()
        rcpts_before = len(server.rcpts)
        resumed = api.resume(first.run_id, source=rows_in)
        # b, and user3 (never tried); d keeps its refusal, the failed rows stay failed
        assert sorted(server.rcpts[rcpts_before:]) == [B, "user3@example.com"]
    assert resumed.status == "finished"
    rows = journal_rows(first.run_id)
    team = rows["0"]
    assert team_copies(server.messages) == [((A, C), team.message_id), ((B,), team.message_id)]
    assert (team.state, team.recipients, team.owed) == ("sent", (A, B, C, D), ())
    assert team.detail == ((D, 550, "no such user"),)
    assert {k: r.state for k, r in rows.items()} == {
        "0": "sent", "1": "failed", "2": "failed", "3": "sent"
    }  # fmt: skip
    assert resumed.counts == {"sent": 2, "failed": 2}


def test_retry_failed_sends_a_row_that_gave_up_on_a_recipient_to_that_recipient_only(
    monkeypatch: pytest.MonkeyPatch, source: Path, cli: Any
) -> None:
    with RecipientServer(defer={B}) as server:
        use_server(monkeypatch, server.port)
        first = cli(*export_args(source, "gave", "--concurrency", "1", "--max-attempts", "2"))
        assert first.code == 1, first.output
        row = journal_rows("gave")["0"]
        assert row.state == "failed" and row.reply.startswith("gave up after 2 attempt(s)")
        assert row.owed == (B,) and row.detail == ((B, 452, "mailbox busy, try later"),)
        assert server.rcpts.count(B) == 2

        server.defer.clear()
        again = cli("runs", "resume", "gave")  # the run finished: a failed row stays failed
        assert again.code == 1 and server.rcpts.count(B) == 2
        rcpts_before = len(server.rcpts)
        retried = cli("runs", "resume", "gave", "--retry-failed", "--json")
        assert retried.code == 0, retried.output
        assert server.rcpts[rcpts_before:] == [B]
    team = journal_rows("gave")["0"]
    assert_served_in_two_parts(server, team)
    assert team.attempts == 3
    [reported] = [r for r in json.loads(retried.out)["rows"] if r["row_key"] == "0"]
    assert reported["recipients"] == [A, B, C] and reported["refused_recipients"] == []


def test_a_row_served_in_two_transactions_lists_every_recipient(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FaultServer(faults={("RCPT", 2): "452 4.5.3 too many recipients"}) as server:
        use_server(monkeypatch, server.port)
        report = send([TEAM])
    row = journal_rows(report.run_id)["0"]
    assert [m.rcpt_tos for m in server.messages] == [(A, C), (B,)]
    assert (row.state, row.recipients, row.owed, row.attempts) == ("sent", (A, B, C), (), 2)


# --------------------------------------------------------------------------- old stores

#: run_rows as the previous version created it (no ``owed`` column).
OLD_RUN_ROWS = """CREATE TABLE run_rows (
    run_id VARCHAR(80) NOT NULL, row_key VARCHAR(255) NOT NULL, seq INTEGER NOT NULL,
    row_number INTEGER NOT NULL, state VARCHAR(12) NOT NULL, attempts INTEGER NOT NULL,
    recipients TEXT NOT NULL, message_id TEXT NOT NULL, code INTEGER NOT NULL,
    enhanced VARCHAR(16) NOT NULL, reply TEXT NOT NULL, col VARCHAR(255) NOT NULL,
    detail TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, row_key))"""
OLD_ROW = (
    "INSERT INTO run_rows VALUES ('old', 'k1', 1, 1, 'sent', 1, '[\"a@example.com\"]', "
    "'<m1@x>', 250, '2.0.0', 'ok', '', '', 1.0)"
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def old_store(request: pytest.FixtureRequest, home: Path) -> Iterator[str]:
    """A store holding one row written by the previous schema."""
    if request.param == "sqlite":
        path = home / "old.db"
        with sqlite3.connect(path) as db:
            db.execute(OLD_RUN_ROWS)
            db.execute(OLD_ROW)
        yield f"sqlite:///{path}"
        return
    import psycopg

    url = request.getfixturevalue("pg_url")
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(OLD_RUN_ROWS)
        db.execute(OLD_ROW)
    yield url


def test_a_store_made_by_the_previous_schema_gets_the_new_column(old_store: str) -> None:
    journal = Journal(old_store)
    [old] = journal.rows("old")
    assert (old.row_key, old.state, old.recipients, old.owed) == ("k1", "sent", (A,), ())
    assert journal.partial_rows("old") == {}
    owed = RowState("k2", 2, 2, RowStatus.RETRY, 1, (A, B), "<m2@x>", owed=(B,))
    journal.write_rows("old", [owed])
    assert journal.partial_rows("old")["k2"].owed == (B,)
    journal.close()
    again = Journal(old_store)  # a second open finds the column there
    assert [r.owed for r in again.rows("old")] == [(), (B,)]
    again.close()
