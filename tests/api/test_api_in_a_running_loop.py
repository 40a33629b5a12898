"""The Python API where a loop already runs: a notebook cell, an async web handler.

``await mailconduit.aexport(...)`` runs on the caller's loop; ``mailconduit.export(...)``
called from inside a running loop (a cell without ``await``) runs on a loop of its own in
a worker thread while the cell waits. Neither installs a signal handler. Cancelling the
awaiting task, or Ctrl-C in the cell, stops the run gracefully: the journal says so and
a resume sends the rest, each row once. The server is the fault-injecting aiosmtpd
server of ``mailconduit.testing``, in a thread of its own.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVarTuple

import pytest

import mailconduit
from delivery_support import (
    CONNECTION,
    MESSAGE,
    TimedFaultServer,
    deliveries,
    final_rows,
    journal_rows,
    people,
    use_server,
)
from mailconduit.delivery import export as delivery
from mailconduit.delivery.runner import CANCELLED
from mailconduit.journal import Journal

#: The standard message of the delivery tests, as typed keyword arguments.
OPTIONS: dict[str, Any] = {"connection": CONNECTION, **MESSAGE}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[TimedFaultServer]:
    """A fault server behind connection ``fault``; every reply to "." comes a little late,
    so a run of a few dozen rows is still sending when a test stops it."""
    with TimedFaultServer(faults={("DOT", "*"): "delay:0.02"}) as running:
        use_server(monkeypatch, running.port)
        yield running


def assert_each_row_delivered_once(server: TimedFaultServer, run_id: str, count: int) -> None:
    rows = final_rows(run_id, range(count))
    assert {r.state for r in rows.values()} == {"sent"}
    got = deliveries(server.messages)
    assert sorted(got) == sorted(f"user{i}@example.com" for i in range(count))
    assert all(got[f"user{k}@example.com"] == [r.message_id] for k, r in rows.items())


def test_aexport_runs_on_the_callers_loop(server: TimedFaultServer) -> None:
    async def cell() -> tuple[Any, mailconduit.ExportReport, set[Any], int]:
        loop = asyncio.get_running_loop()
        loops: set[Any] = set()
        ticks = 0

        async def heartbeat() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        beating = asyncio.create_task(heartbeat())
        report = await mailconduit.aexport(
            people(30), **OPTIONS, concurrency=2,
            progress=lambda _: loops.add(asyncio.get_running_loop()),
        )  # fmt: skip
        beating.cancel()
        return loop, report, loops, ticks

    loop, report, loops, ticks = asyncio.run(cell())
    assert (report.status, report.sent) == ("finished", 30)
    assert loops == {loop}  # every progress call came from the caller's loop: no loop of its own
    assert ticks > 0  # the caller's other tasks ran while it sent
    assert_each_row_delivered_once(server, report.run_id, 30)


def test_export_called_inside_a_running_loop_works_like_a_notebook_cell(
    server: TimedFaultServer,
) -> None:
    """The cell calls the sync function without ``await``: it blocks the cell and returns
    the report (before, it failed with "Cannot run the event loop while another loop is
    running")."""
    caller = threading.get_ident()
    threads: set[int] = set()

    async def cell() -> mailconduit.ExportReport:
        return mailconduit.export(
            people(20), **OPTIONS, progress=lambda _: threads.add(threading.get_ident())
        )

    loop = asyncio.new_event_loop()  # as a notebook kernel runs a cell: on its own loop
    try:
        report = loop.run_until_complete(cell())
        assert (
            not loop.is_closed() and loop.run_until_complete(asyncio.sleep(0, "alive")) == "alive"
        )
    finally:
        loop.close()
    assert (report.status, report.sent) == ("finished", 20)
    assert threads and caller not in threads  # it ran on a worker thread's loop
    assert_each_row_delivered_once(server, report.run_id, 20)


def test_resume_and_aresume_work_inside_a_running_loop(server: TimedFaultServer) -> None:
    rows = people(12)

    async def cell() -> tuple[mailconduit.ExportReport, mailconduit.ExportReport]:
        first = await mailconduit.aexport(rows, **OPTIONS, run_id="nb-run", limit=5)
        again = mailconduit.resume("nb-run", source=rows)  # sync, inside the running loop
        return first, again

    first, again = asyncio.run(cell())
    assert first.sent == 5
    # the limit is part of the run: nothing more to send, and nothing was sent twice
    assert (again.status, again.sent, again.sent_before) == ("finished", 5, 5)
    final = asyncio.run(mailconduit.aresume("nb-run", source=rows))
    assert final.sent_before == 5 and len(server.messages) == 5


def test_a_dry_run_through_aexport(tmp_path: Path, server: TimedFaultServer) -> None:
    out = tmp_path / "eml"
    report = asyncio.run(mailconduit.aexport(people(3), **OPTIONS, dry_run=out))
    assert report.status == "dry-run" and report.counts["written"] == 3
    assert len(list(out.glob("*.eml"))) == 3 and server.messages == []


def test_connection_is_required_and_checked_at_call_time(server: TimedFaultServer) -> None:
    without = {k: v for k, v in OPTIONS.items() if k != "connection"}
    with pytest.raises(TypeError, match=r"export\(\): missing a required argument: 'connection'"):
        mailconduit.export(people(1), **without)
    with pytest.raises(TypeError, match="connection"):
        _ = mailconduit.aexport(people(1), **without)  # raised by the call, before any await
    with pytest.raises(TypeError, match="from_address"):
        # one spelling of each option: the call refuses another
        mailconduit.export(people(1), **OPTIONS, from_address="a@example.com")  # type: ignore[call-arg]
    assert server.messages == [] and Journal().list_runs() == []


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda o: mailconduit.export(people(1), **{**o, "connection": None}), "connection must"),
        (lambda o: mailconduit.export(people(1), **{**o, "connection": 5}), "not int"),
        (lambda o: asyncio.run(mailconduit.aexport(people(1), **{**o, "connection": None})),
         "connection must"),
        (lambda o: mailconduit.export(people(1), **o, progress=5),  # type: ignore[arg-type]
         "progress must be callable"),
        (lambda o: mailconduit.resume(None), "run_id must"),  # type: ignore[arg-type]
        (lambda o: asyncio.run(mailconduit.aresume(7)), "run_id must"),  # type: ignore[arg-type]
        (lambda o: mailconduit.test_connection(None), "conn must"),  # type: ignore[arg-type]
        (lambda o: mailconduit.test_connection(o["connection"], send_to=5),  # type: ignore[arg-type]
         "send_to must"),
    ],
)  # fmt: skip
def test_wrong_typed_arguments_are_type_errors_before_anything_is_sent(
    server: TimedFaultServer, call: Any, words: str
) -> None:
    """``connection=None`` meant "the default", which sent through the embedded server; a
    non-callable progress failed only once the run had begun; Test Connection raised
    AttributeError."""
    with pytest.raises(TypeError, match=words):
        call(OPTIONS)
    assert server.messages == [] and Journal().list_runs() == []


# --------------------------------------------------------------------------- signals


_Ts = TypeVarTuple("_Ts")


class RecordingLoop(asyncio.SelectorEventLoop):
    """asyncio's loop, noting every signal handler asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[int] = []

    def add_signal_handler(
        self, sig: int, callback: Callable[[*_Ts], object], *args: *_Ts
    ) -> None:
        self.signals.append(sig)
        super().add_signal_handler(sig, callback, *args)


@pytest.fixture
def own_handlers() -> Iterator[dict[signal.Signals, Any]]:
    """Handlers of the host program for SIGINT and SIGTERM, restored afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def host_handler(signum: int, frame: object) -> None:
        raise AssertionError(f"signal {signum} came during the test")

    for sig in saved:
        signal.signal(sig, host_handler)
    yield {sig: host_handler for sig in saved}
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_library_call_leaves_the_signal_handlers_alone(
    server: TimedFaultServer, own_handlers: dict[signal.Signals, Any]
) -> None:
    assert threading.current_thread() is threading.main_thread()  # where handlers could be set
    during: list[dict[signal.Signals, Any]] = []

    def look(_: object) -> None:
        during.append({sig: signal.getsignal(sig) for sig in own_handlers})

    report = mailconduit.export(people(5), **OPTIONS, progress=look)
    assert report.sent == 5 and during
    assert all(seen == own_handlers for seen in during)
    assert {sig: signal.getsignal(sig) for sig in own_handlers} == own_handlers

    with asyncio.Runner(loop_factory=RecordingLoop) as runner:
        report = runner.run(mailconduit.aexport(people(5, start=5), **OPTIONS, progress=look))
        loop = runner.get_loop()
        assert isinstance(loop, RecordingLoop)
        assert report.sent == 5 and loop.signals == []
        # the CLI's way, on the same loop: the recording would have seen a library call's
        spec = mailconduit.api.export_spec({"source": people(1, start=10), **OPTIONS})
        conn = mailconduit.api.get_connection(CONNECTION)
        runner.run(delivery.execute(spec, conn, handle_signals=True))
        assert loop.signals == [signal.SIGINT, signal.SIGTERM]
    assert all(seen == own_handlers for seen in during)


# --------------------------------------------------------------------------- stopping


def test_cancelling_the_awaiting_task_stops_gracefully_and_resume_sends_the_rest(
    server: TimedFaultServer,
) -> None:
    rows = people(60)

    async def cell() -> None:
        ten_sent = asyncio.Event()

        def progress(p: mailconduit.Progress) -> None:
            if p.sent >= 10:
                ten_sent.set()

        task = asyncio.create_task(
            mailconduit.aexport(
                rows, **OPTIONS, run_id="cancelled", concurrency=2, progress=progress
            )
        )
        await ten_sent.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()  # asyncio's contract: the cancellation went on

    asyncio.run(cell())
    info = Journal().get_run("cancelled")
    assert (info.status, info.message) == ("interrupted", CANCELLED)
    journaled = journal_rows("cancelled")
    # the transactions in flight finished: nothing claimed or uncertain is left behind
    assert {r.state for r in journaled.values()} <= {"sent", "retry"}
    sent = {f"user{k}@example.com" for k, r in journaled.items() if r.state == "sent"}
    assert sent == set(deliveries(server.messages)) and 10 <= len(sent) < 60

    report = asyncio.run(mailconduit.aresume("cancelled", source=rows))
    assert report.status == "finished" and report.sent_before == len(sent)
    assert_each_row_delivered_once(server, "cancelled", 60)


def test_ctrl_c_in_a_cell_stops_the_export_gracefully(server: TimedFaultServer) -> None:
    """A notebook interrupts a cell with SIGINT; the kernel lets it raise KeyboardInterrupt
    in the cell's code, which is waiting for the export's worker thread."""
    assert threading.current_thread() is threading.main_thread()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    main = threading.main_thread().ident
    assert main is not None
    rows = people(60)
    interrupted = threading.Event()

    def progress(p: mailconduit.Progress) -> None:
        if p.sent >= 10 and not interrupted.is_set():
            interrupted.set()
            signal.pthread_kill(main, signal.SIGINT)

    async def cell() -> mailconduit.ExportReport:
        return mailconduit.export(
            rows, **OPTIONS, run_id="ctrl-c", concurrency=2, progress=progress
        )

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    info = Journal().get_run("ctrl-c")
    assert (info.status, info.message) == ("interrupted", CANCELLED)
    journaled = journal_rows("ctrl-c")
    assert {r.state for r in journaled.values()} <= {"sent", "retry"}
    assert 10 <= sum(r.state == "sent" for r in journaled.values()) < 60

    report = mailconduit.resume("ctrl-c", source=rows)
    assert report.status == "finished"
    assert_each_row_delivered_once(server, "ctrl-c", 60)


def test_a_cancel_while_the_data_is_read_lets_the_reading_finish_and_sends_nothing(
    server: TimedFaultServer,
) -> None:
    """The data is read (and checked) in a worker thread, so the caller's loop is free
    meanwhile; a cancellation then waits for the reading, closes it and records the stop."""
    reading, go_on = threading.Event(), threading.Event()

    def rows() -> Iterator[dict[str, Any]]:
        yield from people(3)
        reading.set()
        go_on.wait(60)  # a safety net only: the test sets it at once
        yield from people(3, start=3)

    async def cell() -> None:
        task = asyncio.create_task(mailconduit.aexport(rows(), **OPTIONS, run_id="early"))
        await asyncio.to_thread(reading.wait, 60)  # the loop runs while the data is read
        assert not task.done()
        task.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cell())
    assert server.messages == []
    info = Journal().get_run("early")
    assert (info.status, info.message, info.total) == ("interrupted", CANCELLED, 6)
    assert journal_rows("early") == {}
    report = mailconduit.resume("early", source=people(6))
    assert report.status == "finished"
    assert_each_row_delivered_once(server, "early", 6)


def test_test_connection_works_inside_a_running_loop(server: TimedFaultServer) -> None:
    async def cell() -> mailconduit.ProbeResult:
        return mailconduit.test_connection(CONNECTION)

    result = asyncio.run(cell())
    assert result.ok, result.summary()
    assert server.session_count >= 1
