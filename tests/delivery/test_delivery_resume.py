"""Stopping a run and resuming it: every unconfirmed row is sent, no confirmed row again.

Runs are stopped by --max-errors, by SIGINT/SIGTERM (to a ``mailconduit export``
subprocess, and in-process while a reply hangs or the rate limiter holds the next
message) and by an unreachable server; then resumed through the API, ``runs resume``
and by running ``export`` again with the same run id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from delivery_support import (
    MAILCONDUIT,
    TimedFaultServer,
    cli_process,
    deliveries,
    export_args,
    fault_connection,
    fault_env,
    final_rows,
    journal_rows,
    people_csv,
    send,
    stop,
    wait_until,
)
from mailconduit import api
from mailconduit.delivery import runner
from mailconduit.delivery.report import ExportReport
from mailconduit.journal import Journal

#: ``(condition, source, **options)`` → the report of a :func:`send` stopped by SIGINT once
#: ``condition()`` holds, and how many seconds the send took.
InterruptedSend = Callable[..., tuple[ExportReport, float]]


@pytest.fixture
def send_interrupted() -> Iterator[InterruptedSend]:
    """Send, and SIGINT this process once a condition holds (the run's loop catches it, as
    the CLI asks it to: ``send(..., handle_signals=True)``)."""
    threads: list[threading.Thread] = []

    def run(
        condition: Callable[[], bool], source: Path, **options: Any
    ) -> tuple[ExportReport, float]:
        def watch() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if condition():
                    time.sleep(0.05)
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                time.sleep(0.01)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        threads.append(thread)
        started = time.monotonic()
        report = send(source, handle_signals=True, **options)
        return report, time.monotonic() - started

    yield run
    for thread in threads:
        thread.join(25)


def test_max_errors_pauses_the_run_and_resume_sends_the_rest(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = people_csv(tmp_path, 100)
    with fault_connection(monkeypatch, faults={("RCPT", "*"): "550 5.1.1 no such user"}) as server:
        report = send(source, max_errors=5, concurrency=2)
        assert report.status == "paused"
        assert "--max-errors 5" in report.message
        # stopped at once: only what was already in the sessions' hands was attempted
        assert 5 <= report.failed <= 9
        assert server.count("RCPT") == report.failed
        rows = journal_rows(report.run_id)
        assert {r.state for r in rows.values()} <= {"failed", "retry"}
        assert Journal().get_run(report.run_id).status == "paused"
        failed_before = {k for k, r in rows.items() if r.state == "failed"}

        server.clear_faults()
        resumed = api.resume(report.run_id)
    assert resumed.status == "finished"
    assert resumed.sent == 100 - len(failed_before)
    rows = final_rows(report.run_id, range(100))
    assert {k for k, r in rows.items() if r.state == "failed"} == failed_before
    got = deliveries(server.messages)
    assert sorted(got) == sorted(f"user{k}@example.com" for k in set(rows) - failed_before)
    assert all(len(v) == 1 for v in got.values())
    assert server.count("RCPT") == 100  # the failed rows were not tried again


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_export_gracefully_and_resume_sends_every_unconfirmed_row(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, signum: signal.Signals
) -> None:
    source = people_csv(tmp_path, 150)
    with TimedFaultServer() as server:
        env = fault_env(server.port)
        args = export_args(source, "sig", "--rate", "40/s", "--concurrency", "2")
        with cli_process(args, env) as proc:
            wait_until(lambda: len(server.messages) >= 50, timeout=60, what="50 messages")
            out = stop(proc, signum)
        assert proc.returncode == 1, out
        assert "resume with: mailconduit runs resume sig" in out
        assert f"stopped by {signum.name}" in out
        info = Journal().get_run("sig")
        assert info.status == "interrupted"
        rows = journal_rows("sig")
        # flushed: nothing left "claimed"; what the server confirmed is journaled sent
        assert {r.state for r in rows.values()} <= {"sent", "retry"}
        delivered = {rcpt for m in server.messages for rcpt in m.rcpt_tos}
        assert {f"user{k}@example.com" for k, r in rows.items() if r.state == "sent"} == delivered
        assert 50 <= len(delivered) < 150

        resumed = subprocess.run(
            [MAILCONDUIT, "runs", "resume", "sig"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = final_rows("sig", range(150))
    assert {r.state for r in rows.values()} == {"sent"}
    got = deliveries(server.messages)
    assert len(got) == 150 and all(len(v) == 1 for v in got.values())
    assert all(got[f"user{k}@example.com"] == [r.message_id] for k, r in rows.items())


def test_a_stop_waits_for_a_hung_reply_only_so_long_and_marks_it_uncertain(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    send_interrupted: InterruptedSend,
) -> None:
    monkeypatch.setattr(runner, "DRAIN_SECONDS", 1.0)
    source = people_csv(tmp_path, 5)
    with fault_connection(monkeypatch, faults={("DOT", 3): "hang"}) as server:
        report, elapsed = send_interrupted(lambda: server.count("DOT") >= 3, source)
        assert report.status == "interrupted" and "SIGINT" in report.message
        assert elapsed < 8
        rows = journal_rows(report.run_id)
        assert (rows["0"].state, rows["1"].state) == ("sent", "sent")
        assert rows["2"].state == "uncertain"  # its "." went out; no reply came
        assert {r.state for k, r in rows.items() if k not in "012"} <= {"retry"}
        server.clear_faults()
        resumed = api.resume(report.run_id)
    assert resumed.status == "finished" and resumed.uncertain_resent == 1
    rows = final_rows(report.run_id, range(5))
    got = deliveries(server.messages)
    assert all(got[f"user{k}@example.com"] == [r.message_id] for k, r in rows.items())


def test_a_stop_does_not_wait_for_the_rate_limiter(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    send_interrupted: InterruptedSend,
) -> None:
    source = people_csv(tmp_path, 5)
    with fault_connection(monkeypatch) as server:
        # the 2nd message may go in a minute
        report, elapsed = send_interrupted(lambda: len(server.messages) >= 1, source, rate="1/min")
    assert report.status == "interrupted"
    assert elapsed < 10
    rows = journal_rows(report.run_id)
    assert rows["0"].state == "sent"
    assert {r.state for k, r in rows.items() if k != "0"} <= {"retry"}
    assert len(server.messages) == 1


def test_retry_failed_resends_only_the_failed_rows_of_a_finished_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 6)
    faults = {("RCPT", 2): "550 5.1.1 no such user", ("RCPT", 5): "554 5.7.1 refused"}
    with fault_connection(monkeypatch, faults=faults) as server:
        first = cli(*export_args(source, "rf", "--concurrency", "1"))
        assert first.code == 1
        rows = journal_rows("rf")
        assert {k for k, r in rows.items() if r.state == "failed"} == {"1", "4"}
        assert Journal().get_run("rf").status == "finished"

        again = cli("runs", "resume", "rf")  # a finished run: nothing is sent again
        assert again.code == 1
        assert len(server.messages) == 4 and server.count("RCPT") == 6

        retried = cli("runs", "resume", "rf", "--retry-failed")
        assert retried.code == 0, retried.output
    rows = final_rows("rf", range(6))
    assert {r.state for r in rows.values()} == {"sent"}
    assert (rows["1"].attempts, rows["4"].attempts) == (2, 2)
    got = deliveries(server.messages)
    assert len(got) == 6 and all(len(v) == 1 for v in got.values())
    assert server.count("RCPT") == 8  # the two failed rows, once each


def test_no_resend_uncertain_holds_rows_on_resume_until_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 4)
    # the last row's "." gets no reply (nothing is pipelined behind it), and with one
    # attempt allowed the run ends with it uncertain
    with fault_connection(monkeypatch, faults={("DOT", 4): "drop"}) as server:
        first = cli(*export_args(source, "unc", "--max-attempts", "1", "--concurrency", "1"))
        assert first.code == 1
        assert journal_rows("unc")["3"].state == "uncertain"
        assert "3 sent" in first.out and "1 uncertain" in first.out

        held = cli("runs", "resume", "unc", "--no-resend-uncertain")
        assert held.code == 1 and "1 uncertain" in held.out
        assert journal_rows("unc")["3"].state == "uncertain"
        assert server.count("MAIL") == 4  # nothing was sent

        resent = cli("runs", "resume", "unc")
        assert resent.code == 0, resent.output
        assert "1 row(s) whose confirmation was lost were sent again" in resent.out
    rows = final_rows("unc", range(4))
    got = deliveries(server.messages)
    assert all(got[f"user{k}@example.com"] == [r.message_id] for k, r in rows.items())


def test_a_changed_source_refuses_to_resume(
    monkeypatch: pytest.MonkeyPatch, cli: Any, tmp_path: Path
) -> None:
    source = people_csv(tmp_path, 5)
    with fault_connection(monkeypatch, faults={("RCPT", 1): "550 5.1.1 no such user"}) as server:
        first = cli(*export_args(source, "fp", "--max-errors", "1", "--concurrency", "1"))
        assert first.code == 1 and Journal().get_run("fp").status == "paused"
        sent_before = len(server.messages)

        kept = tmp_path / "original.csv"
        kept.write_bytes(source.read_bytes())
        source.write_text(source.read_text().replace("Person 3", "Someone else"))
        refused = cli("runs", "resume", "fp")
        assert refused.code == 2
        assert "changed since run fp started" in refused.err
        assert len(server.messages) == sent_before

        # the same data under another name is accepted
        resumed = cli("runs", "resume", "fp", "--source", str(kept))
        assert resumed.code == 1  # row 0 stays failed
    final_rows("fp", range(5))
    assert sorted(len(v) for v in deliveries(server.messages).values()) == [1, 1, 1, 1]


def test_export_again_with_the_same_run_id_resumes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli: Any
) -> None:
    source = people_csv(tmp_path, 20)
    with fault_connection(monkeypatch, faults={("RCPT", 1): "550 5.1.1 no such user"}) as server:
        args = export_args(source, "again", "--max-errors", "1", "--concurrency", "1")
        first = cli(*args)
        assert first.code == 1, first.output
        assert Journal().get_run("again").status == "paused"
        assert len(server.messages) < 19

        second = cli(*args)
        assert second.code == 1, second.output  # row 0 stays failed
    rows = final_rows("again", range(20))
    assert rows["0"].state == "failed" and rows["0"].attempts == 1
    got = deliveries(server.messages)
    assert len(got) == 19 and all(len(v) == 1 for v in got.values())
    assert Journal().get_run("again").status == "finished"
