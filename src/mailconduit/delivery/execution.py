"""Running an export: the journal and lease set up, the checks off the loop, the runner
fed with the run's jobs, and the run's end recorded and reported."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mailconduit.config import Connection, ExportMode, ExportSpec, RateLimit, export_spec_to_dict
from mailconduit.delivery.dryrun import dry_run
from mailconduit.delivery.events import Progress, ProgressCallback
from mailconduit.delivery.jobs import build_jobs, new_run_id
from mailconduit.delivery.lease import RunLease, run_lock
from mailconduit.delivery.prepare import Prepared, prepare
from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.delivery.recorded import seal_spec
from mailconduit.delivery.report import ExportReport, report_from_journal, write_report
from mailconduit.delivery.runner import CANCELLED, Runner, RunResult, SessionOpener, report_for
from mailconduit.errors import ConfigError, FieldError
from mailconduit.journal import Journal, RowState, RowStatus, RunStatus
from mailconduit.smtp import SMTPSession

__all__ = ["execute", "off_loop", "rate_for", "server_size", "session_opener"]

T = TypeVar("T")


async def execute(
    spec: ExportSpec,
    conn: Connection,
    *,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    allow_address: Any = None,
    resume_of: str = "",
    retry_failed: bool = False,
    journal: Journal | None = None,
) -> ExportReport:
    """Run an export (or resume ``resume_of``) on the running loop; returns its report.

    Blocking steps (reading the source to check it, journal set-up, the report) run in a
    worker thread, so the loop goes on serving others. Cancelling the awaiting task stops
    the run as a first Ctrl-C does; the journal then says so, and the CancelledError goes
    on once it is written. ``handle_signals`` is for the CLI alone: SIGINT/SIGTERM stop it.
    ``journal``: the caller's open journal (it stays open); else the run opens and closes one.
    """
    if spec.dry_run is not None:
        return await off_loop(functools.partial(dry_run, spec, conn, spec.dry_run))
    run_id = resume_of or spec.run_id or new_run_id()
    call = functools.partial(
        _execute, spec, conn, run_id, progress=progress, handle_signals=handle_signals,
        allow_address=allow_address, retry_failed=retry_failed,
    )  # fmt: skip
    if not spec.journal:
        return await call(None)
    with contextlib.ExitStack() as stack:
        home_id = stack.enter_context(run_lock(run_id))
        if journal is None:
            journal = stack.enter_context(Journal())
        lease = stack.enter_context(RunLease(journal, run_id, home_id))
        return await call(journal, lease=lease)


async def off_loop(call: Callable[[], T], cleanup: Callable[[T], object] | None = None) -> T:
    """``call()`` in a worker thread. If the awaiting task is cancelled meanwhile, the call
    still finishes (it may be writing the journal) and ``cleanup`` gets its result before
    the cancellation goes on."""
    future = asyncio.get_running_loop().run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await future
            if cleanup is not None:
                cleanup(result)
        raise


@dataclasses.dataclass
class _Start:
    """A run checked and recorded in its journal, ready to send."""

    prepared: Prepared
    states: dict[str, tuple[RowStatus, int]]
    partial: dict[str, RowState]
    claimed_seq: int


def _start(spec: ExportSpec, conn: Connection, run_id: str, journal: Journal | None) -> _Start:
    """Read what an earlier attempt did, check the export, record the run (blocking)."""
    states: dict[str, tuple[RowStatus, int]] = {}
    partial: dict[str, RowState] = {}
    claimed_seq = 0
    resuming = False
    if journal is not None and journal.run_exists(run_id):
        resuming = True
        states = journal.states(run_id)
        partial = journal.partial_rows(run_id)
        claimed_seq = journal.get_run(run_id).claimed_seq
    prepared = prepare(spec, conn, sending=True)
    try:
        if journal is not None:
            _record_start(spec, conn, run_id, journal, prepared, resuming=resuming)
    except BaseException:
        prepared.close()
        raise
    return _Start(prepared, states, partial, claimed_seq)


def _record_start(
    spec: ExportSpec,
    conn: Connection,
    run_id: str,
    journal: Journal,
    prepared: Prepared,
    *,
    resuming: bool,
) -> None:
    """Create the run in the journal, or mark it running again (same data only)."""
    fingerprint = prepared.source.fingerprint()
    if not resuming:
        journal.create_run(
            run_id,
            connection=conn.name,
            mode=spec.mode.value,
            spec=seal_spec(export_spec_to_dict(dataclasses.replace(spec, run_id=run_id))),
            fingerprint=fingerprint,
            total=prepared.total,
        )
        return
    if journal.get_run(run_id).fingerprint != fingerprint:
        raise ConfigError.for_fields(
            "resume",
            [FieldError("source", f"the data of {prepared.source.location} changed since run "
                        f"{run_id} started; resuming would mix two data sets (start a new run, "
                        "or give the original data with --source)")],
        )  # fmt: skip
    journal.set_status(run_id, RunStatus.RUNNING, total=prepared.total)


def _stopped_early(exc: BaseException) -> tuple[RunStatus, str]:
    """The journal's status and message for a run ended by ``exc`` before its runner did."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return RunStatus.INTERRUPTED, CANCELLED
    return RunStatus.FAILED, "stopped by an error before finishing"


async def _execute(
    spec: ExportSpec,
    conn: Connection,
    run_id: str,
    journal: Journal | None,
    *,
    progress: ProgressCallback | None,
    handle_signals: bool,
    allow_address: Any,
    retry_failed: bool,
    lease: RunLease | None = None,
) -> ExportReport:
    """Check and record the run, deliver it, then record its end and report it."""
    try:
        start = await off_loop(
            functools.partial(_start, spec, conn, run_id, journal), lambda s: s.prepared.close()
        )
        if progress is not None:
            for note in start.prepared.notes:
                progress(Progress(run_id, "note", message=note))
        started = time.monotonic()
        try:
            runner, result = await _deliver(
                spec, conn, run_id, journal, start, progress=progress,
                handle_signals=handle_signals, opener=session_opener(conn, spec, allow_address),
                retry_failed=retry_failed, lease=lease,
            )  # fmt: skip
        finally:
            start.prepared.close()
    except BaseException as exc:
        if journal is not None and journal.run_exists(run_id) and not (lease and lease.lost):
            status, message = _stopped_early(exc)
            journal.set_status(run_id, status, message=message)
        raise
    report = await off_loop(
        functools.partial(
            _finish, spec, conn, run_id, journal, runner, result,
            elapsed=time.monotonic() - started, states=start.states, lease=lease,
            notes=start.prepared.notes,
        )
    )  # fmt: skip
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        # The run stopped gracefully and its journal is written: now the cancellation
        # goes on, as asyncio's contract wants (timeouts and task groups rely on it).
        raise asyncio.CancelledError(f"run {run_id} stopped; resume it to send the rest")
    return report


async def _deliver(
    spec: ExportSpec,
    conn: Connection,
    run_id: str,
    journal: Journal | None,
    start: _Start,
    *,
    progress: ProgressCallback | None,
    handle_signals: bool,
    opener: SessionOpener,
    retry_failed: bool,
    lease: RunLease | None,
) -> tuple[Runner, RunResult]:
    """Send the run's messages through a pool of sessions."""
    resend = spec.resend_uncertain
    size_limit = 0
    if spec.mode is not ExportMode.ROW and spec.oversize != "fail":
        size_limit = await server_size(opener)
    jobs = build_jobs(
        start.prepared, run_id, states=start.states, retry_failed=retry_failed,
        resend_uncertain=resend, size_limit=size_limit, claimed_seq=start.claimed_seq,
        partial=start.partial,
    )  # fmt: skip
    daily = journal.daily_usage(conn.name) if journal is not None else None
    runner = Runner(
        run_id=run_id,
        spec=spec,
        connection=conn,
        jobs=jobs,
        open_session=opener,
        journal=journal,
        total=start.prepared.total if spec.mode is ExportMode.ROW else None,
        concurrency=spec.concurrency or conn.concurrency,
        limiter=RateLimiter(rate_for(spec, conn), daily_usage=daily),
        progress=progress,
        handle_signals=handle_signals,
        resend_uncertain=resend,
    )
    if lease is not None:
        loop = asyncio.get_running_loop()
        lease.on_lost(lambda reason: _stop_soon(loop, runner, reason))
    return runner, await runner.run()


def _finish(
    spec: ExportSpec,
    conn: Connection,
    run_id: str,
    journal: Journal | None,
    runner: Runner,
    result: RunResult,
    *,
    elapsed: float,
    states: dict[str, tuple[RowStatus, int]],
    lease: RunLease | None,
    notes: tuple[str, ...],
) -> ExportReport:
    """Record how the run ended and make its report (blocking)."""
    if journal is not None:
        taken_over = lease is not None and bool(lease.lost)
        if not taken_over:  # else the run's status is its new sender's to write
            journal.set_status(
                run_id, result.status, message=result.message,
                finished=result.status is RunStatus.FINISHED,
            )  # fmt: skip
        if runner.limiter is not None:
            journal.save_daily_usage(conn.name, runner.limiter.daily_usage())
        report = report_from_journal(run_id, journal=journal)
        if taken_over:
            report.status, report.message = result.status, result.message
        report.elapsed = elapsed
        report.uncertain_resent = runner.counters.uncertain_resent
        report.sent_before = sum(1 for state, _ in states.values() if state == RowStatus.SENT)
    else:
        report = report_for(runner, result, elapsed=elapsed)
    report.notes = notes
    if spec.report:
        write_report(report, spec.report, fmt=spec.report_format)
    return report


def _stop_soon(loop: asyncio.AbstractEventLoop, runner: Runner, reason: str) -> None:
    """Stop ``runner`` from another thread (the lease's), unless its loop is already gone."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(runner.stop, RunStatus.INTERRUPTED, reason)


def rate_for(spec: ExportSpec, conn: Connection) -> RateLimit:
    """The export's rates, each falling back to the connection's."""
    r = spec.rate
    return RateLimit(
        per_second=r.per_second or conn.rate_per_second,
        per_minute=r.per_minute or conn.rate_per_minute,
        per_hour=r.per_hour or conn.rate_per_hour,
        per_day=r.per_day or conn.daily_cap,
    )


def session_opener(
    conn: Connection,
    spec: ExportSpec,
    allow_address: Any,
    send_gate: Callable[[], bool] | None = None,
) -> SessionOpener:
    """What the runner calls to open one more connected session (``send_gate``: see
    :attr:`SMTPSession.send_gate`; an agent's worker passes its lease)."""
    data_timeout = spec.data_timeout_ms / 1000 if spec.data_timeout_ms else None
    per_conn = spec.messages_per_connection

    async def open_session() -> SMTPSession:
        session = SMTPSession(
            conn,
            data_timeout=data_timeout,
            allow_address=allow_address,
            messages_per_connection=per_conn,
            send_gate=send_gate,
        )
        try:
            await session.connect()
        except BaseException:
            session.close()
            raise
        return session

    return open_session


async def server_size(opener: SessionOpener) -> int:
    """The server's SIZE limit (0: none), from one session opened for it alone."""
    session = await opener()
    try:
        return int(session.capabilities.size or 0)
    finally:
        try:
            await asyncio.wait_for(session.quit(), 5)
        except Exception:
            session.close()
