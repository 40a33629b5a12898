"""The send loop: claim rows, hand messages to a pool of SMTP sessions, record outcomes.

    producer ──► claim (journal, durable) ──► queue ──► N sessions (pipelined) ──► outcome
       ▲                                                                         │
       └──── retry later (back-off) / slow down (throttle) ◄─────────────────────┘
                                          outcomes ──► journal (group commit) ──► progress

A row is reported ``sent`` only after the server's 250 to the final "." AND after that
outcome is durable in the journal. Rows handed to a session whose fate is unknown when
the run stops are ``uncertain``; by default they are sent again with the same
Message-ID on resume, as an MTA would.

The :class:`Runner` wires the parts, each in its own module and each owning its state:
the :class:`~mailconduit.delivery.producer.Producer` (claims), the
:class:`~mailconduit.delivery.pool.SessionPool` (sessions, fed by the
:class:`~mailconduit.delivery.feed.Feed`), the :class:`~mailconduit.delivery.settler.Settler`
(final state or retry), the :class:`~mailconduit.delivery.recorder.Recorder` (journal,
counts, progress) and the :class:`~mailconduit.delivery.control.Control` (why it stops),
sharing the in-flight books of :class:`~mailconduit.delivery.feed.Work`.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mailconduit.config import Connection, ExportSpec
from mailconduit.delivery.control import Control, ErrorBudget
from mailconduit.delivery.events import ProgressCallback
from mailconduit.delivery.feed import Feed, Job, Work
from mailconduit.delivery.outcome import Outcome, outcome_of
from mailconduit.delivery.parts import RunParts
from mailconduit.delivery.pool import SessionOpener, SessionPool
from mailconduit.delivery.producer import Producer
from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.delivery.recorder import Counters, ProgressMeter, Recorder
from mailconduit.delivery.report import ExportReport
from mailconduit.delivery.settler import Settler
from mailconduit.journal import Journal, RowState, RunStatus
from mailconduit.smtp import SMTPSession

__all__ = ["CANCELLED", "Job", "Outcome", "RunResult", "Runner", "SessionOpener", "outcome_of"]

#: Longest wait for in-flight transactions when a run is stopped.
DRAIN_SECONDS = 30.0
#: Why a run stopped when the task awaiting it was cancelled.
CANCELLED = "stopped: the task running it was cancelled"


@dataclass
class RunResult:
    """How a runner's run ended, and why (empty when it finished)."""

    status: RunStatus
    message: str = ""


@dataclass
class Runner:
    """Runs one export's delivery; built by :mod:`mailconduit.delivery.execution`.

    Owns the run's lifetime (start, signals, drain, wind-up); the work itself is done by
    the parts wired in ``__post_init__`` (see the module docstring).
    """

    run_id: str
    spec: ExportSpec
    connection: Connection
    jobs: Iterator[Job | RowState]
    open_session: SessionOpener
    journal: Journal | None
    total: int | None = None
    concurrency: int = 4
    limiter: RateLimiter | None = None
    progress: ProgressCallback | None = None
    handle_signals: bool = False
    resend_uncertain: bool = True
    counters: Counters = field(default_factory=Counters)
    #: Offered each session whose stream ran out of messages, still open; True if it took
    #: it (an agent's worker keeps them for its next chunk). None: every session is closed.
    keep_session: Callable[[SMTPSession], bool] | None = None

    def __post_init__(self) -> None:
        window = max(64, self.concurrency * 16)
        work = self._work = Work(window=window, low_water=window // 2)
        control = self._control = Control(work)
        counters = self.counters
        self._meter = ProgressMeter(
            self.run_id, self.total, self.progress, counters, lambda: len(work.in_flight)
        )
        recorder = self._recorder = Recorder(
            self.run_id,
            self.journal,
            counters=counters,
            meter=self._meter,
            budget=ErrorBudget(self.spec, control),
        )
        parts = RunParts(work, control, counters, recorder, self.limiter)
        self._settler = Settler(self.spec, parts, resend_uncertain=self.resend_uncertain)
        self._feed = Feed(work, self.limiter, control)
        self._producer = Producer(self.jobs, parts)
        self._pool = SessionPool(
            self.open_session,
            parts,
            feed=self._feed,
            on_send=self._settler.on_send,
            logs_in=self.connection.logs_in,
            keep=self.keep_session,
        )

    # ---------------------------------------------------------------- control

    def stop(self, status: RunStatus, message: str) -> None:
        """Stop taking new rows; first reason wins. In-flight transactions still finish."""
        self._control.stop(status, message)

    @property
    def stopping(self) -> bool:
        return self._control.stopping

    @property
    def kept(self) -> list[RowState]:
        """Without a journal: the rows not sent, for the report."""
        return self._recorder.kept

    @property
    def duplicate_outcomes(self) -> int:
        """Second outcomes reported for a job already final (the first one was kept)."""
        return self._work.duplicates

    # ---------------------------------------------------------------- run

    async def run(self) -> RunResult:
        """Deliver every row (or until stopped) and say how the run ended."""
        installed = self._install_signals()
        self._meter.emit("started")
        flusher = asyncio.create_task(self._recorder.flusher())
        producer = asyncio.create_task(self._producer.run())
        workers = self._pool.start(self.concurrency)
        try:
            await producer
            pending = await self._drain(workers)
            if pending:
                # Still waiting on the server after a stop: stop waiting; those rows are uncertain.
                for w in pending:
                    w.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            for w in workers:
                if w.done() and not w.cancelled() and w.exception() is not None:
                    raise w.exception()  # type: ignore[misc]
        except asyncio.CancelledError:
            # Cancelled as by a first Ctrl-C: no more rows, the transactions in flight may
            # finish (DRAIN_SECONDS at most); a second cancellation stops waiting for them.
            self.stop(RunStatus.INTERRUPTED, CANCELLED)
            producer.cancel()
            try:
                await asyncio.gather(producer, return_exceptions=True)
                pending = await self._drain(workers)
            except asyncio.CancelledError:
                pending = set(workers)
            for w in pending:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        finally:
            await self._wind_up(flusher, installed)
        status, message = self._control.result()
        self._meter.emit("done", message)
        return RunResult(status, message)

    def _install_signals(self) -> list[signal.Signals]:
        """With ``handle_signals``, in the main thread: Ctrl-C and SIGTERM stop the run."""
        installed: list[signal.Signals] = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        return installed

    async def _wind_up(self, flusher: asyncio.Task[None], installed: list[signal.Signals]) -> None:
        """The run is over: every row left gets its state, and every outcome is durable."""
        self._feed.close()
        self._settler.cancel_retries()
        self._settler.settle_leftovers()
        self._recorder.close()
        await flusher
        await self._recorder.flush()
        loop = asyncio.get_running_loop()
        for sig in installed:
            loop.remove_signal_handler(sig)
        self._recorder.shutdown()

    def _on_signal(self, sig: signal.Signals) -> None:
        """First Ctrl-C/SIGTERM: stop gracefully. A second one: stop waiting for the server."""
        if self.stopping:
            self._control.forced.set()
            return
        self.stop(RunStatus.INTERRUPTED, f"stopped by {signal.Signals(sig).name}")

    async def _drain(self, workers: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Wait for the sessions to finish; after a stop, for at most DRAIN_SECONDS more.

        Returns the sessions still busy then (their rows are uncertain).
        """
        pending: set[asyncio.Task[None]] = set(workers)
        halted = asyncio.ensure_future(self._control.halted.wait())
        try:
            while pending and not self.stopping:
                await asyncio.wait({*pending, halted}, return_when=asyncio.FIRST_COMPLETED)
                pending = {w for w in pending if not w.done()}
        finally:
            halted.cancel()
        if pending:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_SECONDS
            forced = asyncio.ensure_future(self._control.forced.wait())
            try:
                while pending and not forced.done():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    await asyncio.wait(
                        {*pending, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    pending = {w for w in pending if not w.done()}
            finally:
                forced.cancel()
        return pending


def report_for(runner: Runner, result: RunResult, *, elapsed: float) -> ExportReport:
    """The report of a run that ``runner`` carried to its end."""
    c = runner.counters
    counts = {"sent": c.sent, "failed": c.failed, "skipped": c.skipped}
    if c.uncertain:
        counts["uncertain"] = c.uncertain
    return ExportReport(
        run_id=runner.run_id,
        status=result.status,
        connection=runner.connection.name,
        counts=counts,
        total=runner.total or 0,
        elapsed=elapsed,
        message=result.message,
        uncertain_resent=c.uncertain_resent,
        kept_rows=runner.kept,
    )
