"""Helpers shared by the delivery tests: a fault server that timestamps what it hears and
counts simultaneous sessions, a named connection to it, rows, journal reads, the CLI."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email import policy
from pathlib import Path
from typing import Any

import pytest

from export_support import write_csv as write_csv  # one helper, imported from either module
from mailconduit import api
from mailconduit.delivery.report import ExportReport
from mailconduit.journal import Journal, RowState
from mailconduit.testing import FaultServer, ReceivedMessage

#: Retries that keep a test fast: three attempts, a few milliseconds apart.
FAST_RETRY: Mapping[str, float] = {"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.02}
#: The connection name the tests export through (MAILCONDUIT_CONN_FAULT).
CONNECTION = "fault"
FINAL = frozenset({"sent", "failed", "skipped"})
MAILCONDUIT = str(Path(sys.executable).with_name("mailconduit"))


@dataclass(frozen=True, slots=True)
class Heard:
    """One command the server received: when (monotonic), which, and the line itself.

    ``line`` is only trustworthy while a single session is open (concurrency 1).
    """

    at: float
    command: str
    line: str


class TimedFaultServer(FaultServer):
    """The fault server, also noting when each command arrived and how many sessions
    were open at once (the peak)."""

    def __init__(self, *, hold_dot: int = 0, **options: Any) -> None:
        super().__init__(**options)
        self.heard: list[Heard] = []
        self.open_sessions: set[object] = set()
        self.peak_sessions = 0
        #: With ``hold_dot=N``, the N-th message's "." is answered only after release():
        #: a sender is kept busy for as long as a test needs, whatever the machine's load.
        self._hold_dot = hold_dot
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def next_fault(self, command: str) -> Any:
        line = ""
        if self.sessions and self.sessions[-1].commands:
            line = self.sessions[-1].commands[-1]
        self.heard.append(Heard(time.monotonic(), command, line))
        if command == "DOT" and self.count("DOT") + 1 == self._hold_dot:
            # Blocks the server's loop: meant for one session (concurrency 1).
            self._released.wait(timeout=120)
        return super().next_fault(command)

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        super().__exit__(*exc)

    def new_session(self, protocol: Any, peer: Any) -> Any:
        self.open_sessions.add(protocol)
        self.peak_sessions = max(self.peak_sessions, len(self.open_sessions))
        return super().new_session(protocol, peer)

    def forget(self, protocol: Any) -> None:
        self.open_sessions.discard(protocol)
        super().forget(protocol)

    def times(self, command: str) -> list[float]:
        return [h.at for h in self.heard if h.command == command]

    def count(self, command: str) -> int:
        return int(self.occurrences[command])


def connection_url(port: int, **query: object) -> str:
    """An smtp:// URL for 127.0.0.1:port with a sender and any extra connection fields."""
    params = {"from_address": "sender@example.com", **query}
    user = params.pop("userinfo", "")
    text = "&".join(f"{k}={v}" for k, v in params.items())
    at = f"{user}@" if user else ""
    return f"smtp://{at}127.0.0.1:{port}?{text}"


def use_server(monkeypatch: pytest.MonkeyPatch, port: int, **query: object) -> None:
    """Make connection ``fault`` point at 127.0.0.1:port (through the environment)."""
    monkeypatch.setenv(f"MAILCONDUIT_CONN_{CONNECTION.upper()}", connection_url(port, **query))


@contextmanager
def fault_connection(
    monkeypatch: pytest.MonkeyPatch, **server_options: Any
) -> Iterator[TimedFaultServer]:
    """A :class:`TimedFaultServer` (``faults``, ``hold_dot``...) that connection ``fault``
    points at until the block ends."""
    with TimedFaultServer(**server_options) as server:
        use_server(monkeypatch, server.port)
        yield server


def people(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Rows ``id``, ``email`` (user<id>@example.com), ``name``."""
    return [
        {"id": i, "email": f"user{i}@example.com", "name": f"Person {i}"}
        for i in range(start, start + count)
    ]


def people_csv(folder: Path, count: int) -> Path:
    """``count`` :func:`people` written to people.csv in ``folder``."""
    return write_csv(folder / "people.csv", people(count))


MESSAGE: Mapping[str, Any] = {
    "to": "{{ email }}",
    "subject": "Hello {{ name }}",
    "body": "Dear {{ name }},\nrow {{ id }}.\n",
    "key": "id",
}


def send(source: Any, *, handle_signals: bool = False, **options: Any) -> ExportReport:
    """Export ``source`` through connection ``fault`` with fast retries (options override).

    ``handle_signals``: SIGINT/SIGTERM stop the run, as in the CLI (never in a library call).
    """
    settings: dict[str, Any] = {
        "connection": CONNECTION,
        **MESSAGE,
        "retry": dict(FAST_RETRY),
        "concurrency": 1,
        **options,
    }
    if handle_signals:
        return api.run_export(api.export_spec({"source": source, **settings}), handle_signals=True)
    return api.export(source, **settings)


def send_with_faults(
    monkeypatch: pytest.MonkeyPatch, faults: Mapping[tuple[str, Any], str], source: Any,
    **options: Any,
) -> tuple[TimedFaultServer, ExportReport, dict[str, RowState]]:
    """Send ``source`` through a fresh server answering with ``faults``: the server (closed,
    with what it heard), the report and the journal's rows."""
    with TimedFaultServer(faults=faults) as server:
        use_server(monkeypatch, server.port)
        report = send(source, **options)
    return server, report, journal_rows(report.run_id)


def journal_rows(run_id: str) -> dict[str, RowState]:
    """row key → the row's journal entry."""
    return {row.row_key: row for row in Journal().rows(run_id)}


def final_rows(run_id: str, keys: Iterable[object]) -> dict[str, RowState]:
    """:func:`journal_rows`, once :func:`assert_final` has checked them against ``keys``."""
    rows = journal_rows(run_id)
    assert_final(rows, keys)
    return rows


def message_id(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=policy.SMTP)["Message-ID"])


def deliveries(messages: Iterable[ReceivedMessage]) -> dict[str, list[str]]:
    """recipient → the Message-IDs of every copy the server accepted for it, in order."""
    out: dict[str, list[str]] = {}
    for m in messages:
        for rcpt in m.rcpt_tos:
            out.setdefault(rcpt, []).append(message_id(m.data))
    return out


def assert_final(rows: Mapping[str, RowState], keys: Iterable[object]) -> None:
    """Every key has exactly one journal entry, in a final state."""
    wanted = sorted(str(k) for k in keys)
    assert sorted(rows) == wanted, (sorted(rows), {k: (r.state, r.reply) for k, r in rows.items()})
    left = {k: (r.state, r.attempts, r.reply) for k, r in rows.items() if r.state not in FINAL}
    assert left == {}, left


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a ``mailconduit`` subprocess: this test's home and connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fault_env(port: int, **query: object) -> dict[str, str]:
    """:func:`cli_env` with connection ``fault`` pointing at 127.0.0.1:port."""
    return cli_env(MAILCONDUIT_CONN_FAULT=connection_url(port, **query))


def run_cli(*args: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the ``mailconduit`` console script to completion."""
    return subprocess.run(
        [MAILCONDUIT, *args],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def cli_process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``mailconduit ARGS`` running in a subprocess (stderr folded into stdout); killed if it
    still runs when the block ends."""
    proc = subprocess.Popen(
        [MAILCONDUIT, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def stop(proc: subprocess.Popen[str], signum: int, *, timeout: float = 30) -> str:
    """Send ``signum`` to a :func:`cli_process`, wait for it to end and return its output."""
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=timeout)
    return out


def export_args(source: Path, run_id: str, *extra: str) -> list[str]:
    """``mailconduit export`` arguments for the standard message through ``fault``."""
    return [
        "export",
        str(source),
        "--connection",
        CONNECTION,
        "--to",
        MESSAGE["to"],
        "--subject",
        MESSAGE["subject"],
        "--body",
        MESSAGE["body"],
        "--key",
        MESSAGE["key"],
        "--run-id",
        run_id,
        *extra,
    ]


def wait_until(predicate: Any, *, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 10 ms; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)
