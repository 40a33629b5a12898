"""The coordinator: whichever command, page or call starts a celery run.

It runs every check a local export runs (bad input: nothing sent), freezes the input
into the journal, cuts it into chunks, publishes one task per chunk on the agent's
queue, and (unless detached) follows the run in the journal until every chunk has
ended: the same progress, report and statuses as a local run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from mailconduit.agents.app import publish, warm_up
from mailconduit.agents.chunk import finish_run_if_complete
from mailconduit.agents.frozen import freeze
from mailconduit.agents.settings import AgentSettings
from mailconduit.config import Connection, ExportSpec, ImplementationType, export_spec_to_dict
from mailconduit.delivery.checks import check_connection
from mailconduit.delivery.events import Progress, ProgressCallback
from mailconduit.delivery.execution import rate_for
from mailconduit.delivery.jobs import new_run_id
from mailconduit.delivery.prepare import prepare
from mailconduit.delivery.recorded import seal_spec
from mailconduit.delivery.report import ExportReport, report_from_journal, write_report
from mailconduit.delivery.runner import CANCELLED
from mailconduit.errors import ConfigError, FieldError
from mailconduit.journal import Journal, RunInfo, RunStatus
from mailconduit.journal.agents import (
    RUNNING,
    AgentStore,
    FrozenRun,
    WorkerInfo,
    live_workers,
    sending_slots,
)

__all__ = [
    "AgentSummary",
    "ChunkProgress",
    "chunk_progress",
    "is_celery",
    "list_agents",
    "resume",
    "run",
    "start",
    "stop",
    "wait",
]

T = TypeVar("T")
#: How often an attached coordinator reads the run's progress from the journal (each read
#: counts the run's rows: more often would cost the workers' database time).
POLL_SECONDS = 1.0
#: How often an attached coordinator with no progress to show reads the run's status.
STATUS_POLL_SECONDS = 0.2
#: Longest wait, after a stop, for the workers to end their chunks.
DRAIN_SECONDS = 60.0


def is_celery(conn: Connection) -> bool:
    return conn.implementation_type is ImplementationType.CELERY


def _check_agent(
    store: AgentStore, settings: AgentSettings, agent: str, *, queue: bool
) -> list[WorkerInfo]:
    """The agent's live workers; refused when it has none, unless the run may wait."""
    live = live_workers(store.workers(agent), settings.dead_after)
    if queue or live:
        return live
    raise ConfigError.for_fields(
        "export",
        [FieldError("agent", f"agent {agent!r} has no live worker; start one with 'mailconduit "
                    f"agent run {agent}' on a host that reaches the mail server, or pass --queue "
                    "to queue the run until one starts")],
    )  # fmt: skip


def _local(conn: Connection) -> Connection:
    """``conn`` as the checks before sending see it: celery's own refusal is lifted here."""
    return dataclasses.replace(conn, implementation_type=ImplementationType.DEFAULT)


def _chunk_rows(spec: ExportSpec, conn: Connection, settings: AgentSettings) -> int:
    """Rows per chunk: a chunk must end well within the broker's redelivery timeouts."""
    rate = rate_for(spec, conn)
    per_second = [r for r in (rate.per_second, rate.per_minute / 60, rate.per_hour / 3600) if r]
    if not per_second:
        return settings.chunk_rows
    return max(1, min(settings.chunk_rows, int(min(per_second) * settings.chunk_seconds)))


def _freeze_and_record(
    spec: ExportSpec, conn: Connection, run_id: str, settings: AgentSettings, *, workers: int = 1
) -> tuple[int, list[int], tuple[str, ...]]:
    """Check the export, freeze its input, record the run; (total, chunks, notes). Blocking."""
    prepared = prepare(spec, _local(conn), sending=True)
    store = AgentStore()
    journal = Journal(store.url)
    try:
        frozen = freeze(
            spec,
            prepared.source,
            html=prepared.html,
            attachment_dir=prepared.attachment_dir,
            chunk_rows=_chunk_rows(spec, conn, settings),
            workers=workers,
        )
        total = min(spec.limit, prepared.total) if spec.limit else prepared.total
        # The input first: a coordinator killed meanwhile leaves no run without its input.
        # The rows are read from the source as they are copied (one pass, both at work).
        copied = store.freeze_run(
            FrozenRun(run_id, conn.name, conn.agent, frozen.spec, prepared.source.location,
                      prepared.source.columns, total, 0, False, "", ""),
            frozen.rows,
            frozen.blobs.items(),
        )  # fmt: skip
        fingerprint = prepared.source.fingerprint()
        plans = [(c.first_row, c.last_row, c.first_seq, c.last_seq) for c in frozen.chunks(copied)]
        store.add_chunks(run_id, plans)
        chunks = list(range(1, len(plans) + 1))
        journal.create_run(
            run_id,
            connection=conn.name,
            mode=spec.mode.value,
            spec=seal_spec(export_spec_to_dict(dataclasses.replace(spec, run_id=run_id))),
            fingerprint=fingerprint,
            total=total,
        )
        if not chunks:
            journal.set_status(run_id, RunStatus.FINISHED, finished=True)
        return total, chunks, prepared.notes
    finally:
        prepared.close()
        journal.close()
        store.close()


def start(
    spec: ExportSpec, conn: Connection, *, queue: bool = False
) -> tuple[str, int, tuple[str, ...]]:
    """Check, freeze and publish a celery run (blocking); (run id, total, notes)."""
    # An inactive connection, or one that is not a target, is refused as a local one is.
    check_connection(_local(conn), sending=True)
    if not spec.journal:
        raise ConfigError.for_fields(
            "export",
            [FieldError("journal", f"connection {conn.name!r} sends through agents, which share "
                        "the run through its journal; drop --no-journal")],
        )  # fmt: skip
    settings = AgentSettings.from_env()
    store = AgentStore()
    try:
        live = _check_agent(store, settings, conn.agent, queue=queue)
    finally:
        store.close()
    # Chunks sent at once: the last chunks shrink so that these end together.
    workers = sending_slots(live)
    # Celery's import and the broker connection take a second: made while the input is read.
    warm = threading.Thread(target=warm_up, args=(settings,), name="broker-warm-up", daemon=True)
    warm.start()
    run_id = spec.run_id or new_run_id()
    total, chunks, notes = _freeze_and_record(spec, conn, run_id, settings, workers=workers)
    if chunks:
        _publish(settings, conn.agent, run_id, chunks)
    return run_id, total, notes


def _publish(settings: AgentSettings, agent: str, run_id: str, chunks: list[int]) -> None:
    store = AgentStore()
    try:
        store.mark_published(run_id, chunks)
    finally:
        store.close()
    try:
        publish(settings, agent, run_id, chunks)
    except Exception as exc:  # kombu's OperationalError and friends: the broker is down
        raise ConfigError.for_fields(
            "agents",
            [FieldError("MAILCONDUIT_BROKER_URL", f"the broker cannot be reached ({exc}); the "
                        f"run {run_id} is recorded: 'mailconduit runs resume {run_id}' publishes "
                        "it again")],
        ) from None  # fmt: skip


async def run(
    spec: ExportSpec,
    conn: Connection,
    *,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
    queue: bool = False,
) -> ExportReport:
    """Start a celery run and follow it to its end; returns the report from the journal."""
    started = time.monotonic()
    known: bool = bool(spec.run_id) and await _off_loop(functools.partial(_known, spec.run_id))
    if known:
        # The same run id again: resume it, as a local run does.
        return await resume(spec.run_id, progress=progress, handle_signals=handle_signals)
    stopper = _Stopper(handle_signals)  # from now on: a Ctrl-C during the checks counts too
    try:
        run_id, total, notes = await _off_loop(functools.partial(start, spec, conn, queue=queue))
        stopper.follow(run_id)
        if progress is not None:
            for note in notes:
                progress(Progress(run_id, "note", message=note))
        return await wait(run_id, progress=progress, stopper=stopper, total=total,
                          started=started, spec=spec, notes=notes)  # fmt: skip
    finally:
        stopper.close()


class _Stopper:
    """SIGINT or SIGTERM, for the CLI: the first asks every worker of the run to stop (as
    soon as the run has an id), a second stops waiting for them (they still end cleanly)."""

    def __init__(self, handle_signals: bool) -> None:
        self.stopping = asyncio.Event()
        self.forced = asyncio.Event()
        self.run_id = ""
        self.reason = ""
        self._loop = asyncio.get_running_loop()
        self._installed: list[signal.Signals] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    self._loop.add_signal_handler(sig, self._on_signal, sig)
                    self._installed.append(sig)

    def follow(self, run_id: str) -> None:
        self.run_id = run_id
        if self.stopping.is_set():
            self._stop()

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.stopping.is_set():
            self.forced.set()
            return
        self.stopping.set()
        self.reason = f"stopped by {sig.name}"
        if self.run_id:
            self._stop()

    def _stop(self) -> None:
        threading.Thread(
            target=stop, args=(self.run_id,), kwargs={"reason": self.reason}, daemon=True
        ).start()

    def close(self) -> None:
        for sig in self._installed:
            self._loop.remove_signal_handler(sig)
        self._installed.clear()


async def resume(
    run_id: str,
    *,
    retry_failed: bool = False,
    resend_uncertain: bool | None = None,
    progress: ProgressCallback | None = None,
    handle_signals: bool = False,
) -> ExportReport:
    """Queue again every chunk of the run not done (with --retry-failed, every chunk holding a
    failed row) and follow the run; rows confirmed sent are never sent again. The input is
    the one frozen when the run started."""
    settings = AgentSettings.from_env()

    def requeue() -> tuple[list[int], str, int]:
        store = AgentStore()
        journal = Journal(store.url)
        try:
            frozen = store.frozen_run(run_id)
            if frozen is None:
                raise ConfigError.for_fields(
                    "resume", [FieldError("run_id", f"run {run_id!r} did not run on agents")]
                )
            if resend_uncertain is not None:
                store.set_spec_option(run_id, "resend_uncertain", resend_uncertain)
            chunks = store.requeue(run_id, with_failed_rows=retry_failed)
            journal.set_status(run_id, RunStatus.RUNNING)
            return chunks, frozen.agent, frozen.total
        finally:
            journal.close()
            store.close()

    started = time.monotonic()
    stopper = _Stopper(handle_signals)
    try:
        chunks, agent, total = await _off_loop(requeue)
        stopper.follow(run_id)
        if chunks:
            await _off_loop(functools.partial(_publish, settings, agent, run_id, chunks))
        else:
            await _off_loop(functools.partial(_finish_now, run_id))
        return await wait(run_id, progress=progress, stopper=stopper, total=total,
                          started=started)  # fmt: skip
    finally:
        stopper.close()


def _known(run_id: str) -> bool:
    journal = Journal()
    try:
        return journal.run_exists(run_id)
    finally:
        journal.close()


def _finish_now(run_id: str) -> None:
    store = AgentStore()
    try:
        finish_run_if_complete(store, run_id)
    finally:
        store.close()


def stop(run_id: str, *, reason: str = "stopped by 'mailconduit runs stop'") -> bool:
    """Ask every worker of the run to stop after the messages they are sending; True if the
    run was running on agents."""
    store = AgentStore()
    try:
        if store.frozen_run(run_id) is None:
            return False
        store.request_stop(run_id, status="interrupted", reason=reason)
        finish_run_if_complete(store, run_id)
        return True
    finally:
        store.close()


async def wait(
    run_id: str,
    *,
    progress: ProgressCallback | None = None,
    stopper: _Stopper | None = None,
    total: int | None = None,
    started: float | None = None,
    spec: ExportSpec | None = None,
    notes: tuple[str, ...] = (),
) -> ExportReport:
    """Follow a celery run in the journal until it ends: progress, then its report.

    A first Ctrl-C (or cancelling the task) asks every worker to stop gracefully and waits
    for them; a second one stops waiting (the workers still end their chunks)."""
    started = time.monotonic() if started is None else started
    journal = await _off_loop(Journal)
    follower = _Follower(run_id, journal, stopper.forced if stopper is not None else None)
    try:
        if progress is None:  # --json, --quiet, the Python API without a callback
            await follower.until_status_changes()
        else:
            progress(Progress(run_id, "started", total=total))
            info = await follower.with_progress(progress, started)
        # The report reads its rows from this journal later: it stays open with the report.
        report = await _off_loop(functools.partial(report_from_journal, run_id,
                                                   journal=journal))  # fmt: skip
    except BaseException:
        journal.close()
        raise
    report.elapsed = time.monotonic() - started
    report.notes = notes
    if progress is not None:
        progress(Progress(run_id, "done", total=info.total, sent=report.counts.get("sent", 0),
                          failed=report.counts.get("failed", 0),
                          skipped=report.counts.get("skipped", 0),
                          elapsed=report.elapsed, message=report.message))  # fmt: skip
    if spec is not None and spec.report:
        await _off_loop(functools.partial(write_report, report, spec.report,
                                          fmt=spec.report_format))  # fmt: skip
    if follower.cancelled:
        raise asyncio.CancelledError(f"run {run_id} stopped; resume it to send the rest")
    return report


class _Follower:
    """Polls one celery run in the journal until its status changes. The first cancellation
    of the task following it asks every worker to stop and follows on; a second one goes on
    (the caller's ``except`` re-raises it, as :attr:`cancelled` is then set)."""

    def __init__(self, run_id: str, journal: Journal, forced: asyncio.Event | None) -> None:
        self.run_id = run_id
        self.journal = journal
        #: Set by a second Ctrl-C: stop following.
        self.forced = forced if forced is not None else asyncio.Event()
        #: The task was cancelled once: every worker has been asked to stop.
        self.cancelled = False

    async def _stop_workers(self) -> None:
        """The first cancellation: ask every worker of the run to stop, and follow on."""
        self.cancelled = True
        await _off_loop(functools.partial(stop, self.run_id, reason=CANCELLED))

    async def until_status_changes(self, within: float | None = None) -> None:
        """Look at the run's status alone, often (it costs the workers' database less than
        counting rows), until it changes, or for ``within`` seconds at most."""
        journal, forced = self.journal, self.forced
        deadline = None if within is None else time.monotonic() + within
        while True:
            try:
                status = await _off_loop(functools.partial(journal.run_status, self.run_id))
                if status != RUNNING or forced.is_set():
                    return
                pause = STATUS_POLL_SECONDS
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                    if pause <= 0:
                        return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(forced.wait(), pause)
            except asyncio.CancelledError:
                if self.cancelled:
                    raise
                await self._stop_workers()

    async def with_progress(self, progress: ProgressCallback, started: float) -> RunInfo:
        """Count the run's rows at every poll and report them; the run's last state."""
        journal, forced = self.journal, self.forced
        last = (-1, time.monotonic())
        while True:
            try:
                info = await _off_loop(functools.partial(journal.get_run, self.run_id))
            except asyncio.CancelledError:
                if self.cancelled:
                    raise
                await self._stop_workers()
                continue
            now = time.monotonic()
            progress(_sending(info, last, now, started=started))
            last = (info.counts.get("sent", 0), now)
            if info.status != RUNNING or forced.is_set():
                return info
            # The rows are counted every POLL_SECONDS (sooner once every row has its outcome);
            # in between, the status alone says when the run ends.
            soon = info.total is not None and info.done >= info.total
            await self.until_status_changes(within=POLL_SECONDS / 10 if soon else POLL_SECONDS)


def _sending(info: RunInfo, last: tuple[int, float], now: float, *, started: float) -> Progress:
    """The progress of a run at a poll; ``last``: the sent count and the time at the one
    before (-1 at the first)."""
    counts = info.counts
    sent = counts.get("sent", 0)
    rate = (sent - last[0]) / (now - last[1]) if last[0] >= 0 and now > last[1] else 0.0
    return Progress(
        info.run_id, "sending", total=info.total, sent=sent,
        failed=counts.get("failed", 0), skipped=counts.get("skipped", 0),
        uncertain=counts.get("uncertain", 0), elapsed=now - started,
        rate=max(rate, 0.0),
    )  # fmt: skip


async def _off_loop(call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, call)


@dataclasses.dataclass(frozen=True, slots=True)
class AgentSummary:
    """One agent as ``agents list`` shows it."""

    name: str
    workers: tuple[WorkerInfo, ...]
    queued: int
    running: int
    last_seen: float | None  # seconds since the freshest heartbeat

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "workers": [
                {"worker": w.worker, "host": w.host, "pid": w.pid, "concurrency": w.concurrency,
                 "heartbeat_age": round(w.heartbeat_age, 1)}
                for w in self.workers
            ],
            "queued_chunks": self.queued,
            "running_chunks": self.running,
            "last_seen": None if self.last_seen is None else round(self.last_seen, 1),
        }


def list_agents() -> list[AgentSummary]:
    """Every agent the journal knows: live workers, queued and running chunks, last seen."""
    settings = AgentSettings.from_env(require_broker=False)
    store = AgentStore()
    try:
        workers = store.workers()
        counts = store.chunk_counts()
    finally:
        store.close()
    names = sorted({w.agent for w in workers} | set(counts))
    out = []
    for name in names:
        mine = [w for w in workers if w.agent == name]
        ages = [w.heartbeat_age for w in mine]
        out.append(
            AgentSummary(
                name=name,
                workers=tuple(live_workers(mine, settings.dead_after)),
                queued=counts.get(name, {}).get("queued", 0),
                running=counts.get(name, {}).get("running", 0),
                last_seen=min(ages) if ages else None,
            )
        )
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkProgress:
    """One chunk of a celery run: its rows, who holds or held it, and its rows' outcomes."""

    chunk: int
    first_row: int
    last_row: int
    state: str
    worker: str  # host:pid of the pool process that holds (or last held) it
    attempts: int
    counts: dict[str, int]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def chunk_progress(run_id: str) -> list[ChunkProgress]:
    """Progress per chunk of a celery run (empty for a run sent by its own process)."""
    store = AgentStore()
    try:
        if store.frozen_run(run_id) is None:
            return []
        outcomes = store.chunk_outcomes(run_id)
        chunks = store.chunks(run_id)
    finally:
        store.close()
    return [
        ChunkProgress(
            chunk=c.chunk,
            first_row=c.first_row,
            last_row=c.last_row,
            state=c.state,
            worker=":".join(c.owner.split(":")[:2]),
            attempts=c.attempts,
            counts=outcomes.get(c.chunk, {}),
            reason=c.reason,
        )
        for c in chunks
    ]
