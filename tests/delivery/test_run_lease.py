"""One sender per run across hosts: the run's lease in the journal.

Two homes (two machines, as far as mailconduit can tell) share one journal, on PostgreSQL
or in one SQLite file. While one sends a run, the other is refused with one line naming
the holder and when its lease expires (exit status 2); once the first is done, or its lease
has expired, the other takes the run. A sender killed with -9 leaves its lease to expire,
except for its own home, which takes it back at once. A sender whose lease was taken
over stops.
"""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from delivery_support import (
    TimedFaultServer,
    cli_env,
    cli_process,
    connection_url,
    deliveries,
    export_args,
    fault_connection,
    journal_rows,
    people,
    people_csv,
    run_cli,
    send,
    stop,
    use_server,
    wait_until,
)
from mailconduit.delivery import lease as run_lease
from mailconduit.journal import Journal

HOST = socket.gethostname()
#: Every message's final "." is answered late, so a run of a few rows takes seconds.
SLOW = {("DOT", "*"): "delay:0.4"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """One journal for every home of the test (this test's home uses it too)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("MAILCONDUIT_DB", url)
    yield url


@pytest.fixture
def other_home(tmp_path: Path) -> Path:
    path = tmp_path / "home-b"
    path.mkdir()
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return people_csv(tmp_path, 8)


def store_sql(url: str, sql: str) -> None:
    """Run one statement on the shared journal, as another host's clock or process would."""
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1], timeout=30) as db:
            db.execute(sql)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute(sql)


def sending(
    source: Path, run_id: str, conn: str
) -> AbstractContextManager[subprocess.Popen[str]]:
    """This home's ``mailconduit export`` of ``source`` through ``conn``, one session at a time."""
    return cli_process(
        export_args(source, run_id, "--concurrency", "1"), cli_env(MAILCONDUIT_CONN_FAULT=conn)
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    return line


def test_a_second_home_is_refused_while_the_first_sends_and_takes_the_run_after(
    shared_url: str, other_home: Path, source: Path, home: Path
) -> None:
    with TimedFaultServer(faults=SLOW, hold_dot=2) as server:
        conn = connection_url(server.port)
        with sending(source, "shared", conn) as proc:
            wait_until(lambda: len(server.messages) >= 1, timeout=30, what="the first message")
            # The second message is held at its "." until the checks below are done.
            lease = Journal(shared_url).lease("shared")
            assert lease is not None and lease.owner.startswith(f"{HOST}:{proc.pid}:")
            assert 0 < lease.seconds_left <= run_lease.LEASE_SECONDS

            elsewhere: dict[str, Any] = {"MAILCONDUIT_HOME": str(other_home), "MAILCONDUIT_CONN_FAULT": conn}
            for args in (["runs", "resume", "shared"], export_args(source, "shared")):
                line = one_line(run_cli(*args, **elsewhere))
                assert (
                    f"run 'shared' is being sent right now by process {proc.pid} on host {HOST}"
                    in line
                )
                assert re.search(r"lease on it runs until \d\d:\d\d:\d\d \(in \d+ s\)", line), line
            assert proc.poll() is None, "the first sender had finished: the test proves nothing"
            server.release()
            out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert Journal(shared_url).lease("shared") is None  # let go at the end
        sent = len(server.messages)

        after = run_cli("runs", "resume", "shared", **elsewhere)
        assert after.returncode == 0, after.stdout + after.stderr
        assert "8 sent (8 of them by an earlier attempt)" in after.stdout
    assert sent == len(server.messages) == 8
    assert all(len(ids) == 1 for ids in deliveries(server.messages).values())
    assert Journal(shared_url).lease("shared") is None


def test_a_lease_held_elsewhere_refuses_the_run_until_it_expires_then_is_taken_over(
    shared_url: str, source: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(shared_url)
    assert journal.take_lease("late", owner="far-away:4242:beef", home="other", ttl=60) is None
    with fault_connection(monkeypatch) as server:
        refused = cli(*export_args(source, "late"))
        assert refused.code == 2, refused.output
        [line] = refused.err.strip().splitlines()
        assert "is being sent right now by process 4242 on host far-away" in line
        assert "(if that process died, its lease expires by then)" in line
        assert server.session_count == 0 and not journal.run_exists("late")

        store_sql(shared_url, "UPDATE run_leases SET expires_at = expires_at - 3600")
        taken = cli(*export_args(source, "late"))
        assert taken.code == 0, taken.output
    assert len(server.messages) == 8
    assert {r.state for r in journal_rows("late").values()} == {"sent"}
    assert journal.lease("late") is None


def test_after_kill_9_another_home_waits_for_the_lease_and_the_own_home_resumes_at_once(
    shared_url: str, other_home: Path, source: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TimedFaultServer(faults=SLOW) as server:
        conn = connection_url(server.port)
        with sending(source, "crashed", conn) as proc:
            wait_until(lambda: len(server.messages) >= 2, timeout=30, what="two messages")
            stop(proc, signal.SIGKILL)
        lease = Journal(shared_url).lease("crashed")
        assert lease is not None and lease.seconds_left > 0  # nobody let it go

        line = one_line(
            run_cli(
                "runs", "resume", "crashed",
                MAILCONDUIT_HOME=str(other_home), MAILCONDUIT_CONN_FAULT=conn,
            )
        )  # fmt: skip
        assert f"by process {proc.pid} on host {HOST}" in line
        assert "if that process died, its lease expires by then" in line

        # the home it ran from holds the run's lock: the lease's holder there is gone
        server.clear_faults()
        use_server(monkeypatch, server.port)
        resumed = cli("runs", "resume", "crashed")
        assert resumed.code == 0, resumed.output
    rows = journal_rows("crashed")
    assert {r.state for r in rows.values()} == {"sent"} and len(rows) == 8
    got = deliveries(server.messages)
    assert all(got[f"user{k}@example.com"] == [r.message_id] * len(got[f"user{k}@example.com"])
               for k, r in rows.items())  # fmt: skip
    assert Journal(shared_url).lease("crashed") is None


def test_a_sender_whose_lease_was_taken_over_stops(
    shared_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_lease, "LEASE_RENEW_SECONDS", 0.1)
    taken = threading.Event()

    def take_over(server: TimedFaultServer) -> Callable[[], None]:
        def run() -> None:
            wait_until(lambda: len(server.messages) >= 2, timeout=30, what="two messages")
            store_sql(
                shared_url,
                "UPDATE run_leases SET owner = 'thief:99:cafe', home = 'other', "
                "expires_at = expires_at + 600",
            )
            taken.set()

        return run

    with fault_connection(monkeypatch, faults={("DOT", "*"): "delay:0.1"}) as server:
        thread = threading.Thread(target=take_over(server), daemon=True)
        thread.start()
        report = send(people(60), run_id="stolen")
        thread.join(10)
    assert taken.is_set()
    assert report.status == "interrupted", report.message
    assert "process 99 on host thief took over this run" in report.message
    assert len(server.messages) < 60
    journal = Journal(shared_url)
    # what it did send is journaled; the run's status and lease are the new holder's
    sent = {k for k, r in journal_rows("stolen").items() if r.state == "sent"}
    assert {f"user{k}@example.com" for k in sent} == set(deliveries(server.messages))
    assert journal.get_run("stolen").status == "running"
    lease = journal.lease("stolen")
    assert lease is not None and lease.owner == "thief:99:cafe"


def test_the_lease_is_let_go_when_a_run_is_refused_or_stopped(
    shared_url: str, source: Path, cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with fault_connection(monkeypatch, faults={("RCPT", 1): "550 5.1.1 no such user"}):
        paused = cli(*export_args(source, "gone", "--max-errors", "1", "--concurrency", "1"))
        assert paused.code == 1 and Journal().get_run("gone").status == "paused"
        assert Journal().lease("gone") is None

        source.write_text(source.read_text().replace("Person 3", "Someone else"))
        changed = cli("runs", "resume", "gone")
        assert changed.code == 2 and "changed since run gone started" in changed.err
        assert Journal().lease("gone") is None
