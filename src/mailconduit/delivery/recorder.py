"""Outcomes on their way to the journal: buffered, group-committed, counted once durable,
and reported as progress.

A row's outcome counts (and shows in the progress) only once the journal holds it; the
claims of a batch of rows are durable before any of them reaches a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mailconduit.delivery.control import ErrorBudget
from mailconduit.delivery.events import Progress, ProgressCallback
from mailconduit.journal import Journal, RowState, RowStatus

__all__ = ["FLUSH_INTERVAL", "Counters", "ProgressMeter", "Recorder"]

#: How often buffered outcomes are committed (group commit).
FLUSH_INTERVAL = 0.02


@dataclass
class Counters:
    """A run's counts of rows whose outcome is durable, and of rows on their way."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    uncertain: int = 0
    resumed: int = 0
    uncertain_resent: int = 0
    retrying: int = 0


@dataclass(eq=False)
class ProgressMeter:
    """Owns a run's progress events: the recent send rate and the snapshot handed to the
    display's callback."""

    run_id: str
    total: int | None
    callback: ProgressCallback | None
    counters: Counters
    #: How many messages are with a session now.
    in_flight: Callable[[], int]
    _started: float = field(init=False, default_factory=time.monotonic)
    _rate_window: deque[tuple[float, int]] = field(
        init=False, default_factory=lambda: deque(maxlen=50)
    )

    def sample(self) -> None:
        """Note the count of sent rows now (after a commit), for the rate."""
        self._rate_window.append((time.monotonic(), self.counters.sent))

    def rate(self) -> float:
        """Rows sent per second, over the last samples (since the start before two)."""
        if len(self._rate_window) < 2:
            elapsed = time.monotonic() - self._started
            return self.counters.sent / elapsed if elapsed > 0 else 0.0
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def emit(self, phase: str, message: str = "") -> None:
        """Hand a snapshot to the callback, if there is one."""
        if self.callback is None:
            return
        c = self.counters
        self.callback(
            Progress(
                run_id=self.run_id,
                phase=phase,
                total=self.total,
                sent=c.sent,
                failed=c.failed,
                skipped=c.skipped,
                uncertain=c.uncertain,
                retrying=c.retrying,
                in_flight=self.in_flight(),
                elapsed=time.monotonic() - self._started,
                rate=self.rate(),
                message=message,
                resumed=c.resumed,
            )
        )


class Recorder:
    """Owns the way of outcomes and claims into the journal: the buffer of outcomes, the
    background group commit (or inline writes where the journal's commits are cheap), the
    journal's thread, the counts once durable, and the rows kept when there is no journal."""

    def __init__(
        self,
        run_id: str,
        journal: Journal | None,
        *,
        counters: Counters,
        meter: ProgressMeter,
        budget: ErrorBudget,
    ) -> None:
        self._run_id = run_id
        self._journal = journal
        self._counters = counters
        self._meter = meter
        self._budget = budget
        #: Without a journal: the rows not sent, for the report.
        self.kept: list[RowState] = []
        self._buffer: list[RowState] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._closing = False
        self._closed = asyncio.Event()

    @property
    def journaled(self) -> bool:
        """True when outcomes go to a journal (else failed rows are kept in memory)."""
        return self._journal is not None

    def record(self, row: RowState) -> None:
        """Buffer a row's outcome for the next commit; failed and skipped rows count
        against the error budget at once."""
        self._buffer.append(row)
        state = row.state
        if state == RowStatus.FAILED or state == RowStatus.SKIPPED:
            self._budget.check(row)

    def note(self, row: RowState) -> None:
        """Buffer a row's interim state (counted nowhere), overwritten by its outcome later."""
        self._buffer.append(row)

    async def _write(self, rows: list[RowState]) -> None:
        journal = self._journal
        if journal is None or not rows:
            return
        if journal.commits_are_cheap:
            # No thread: handing a batch to one costs more (GIL hand-offs on every row
            # the driver steps through) than the write itself.
            # Measured: journal cost +14 % -> +9 % of an export, with the store's shortcuts (bench/RESULTS.md).
            journal.write_rows(self._run_id, rows)
            return
        loop = asyncio.get_running_loop()
        # Shielded: once handed to the journal thread, a batch is written even if the
        # awaiting task is cancelled (Ctrl-C), so no outcome is lost on the way.
        await asyncio.shield(
            loop.run_in_executor(self._executor, journal.write_rows, self._run_id, rows)
        )

    async def flush(self) -> None:
        """Commit the buffered outcomes, then count them and report progress."""
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        await self._write(rows)
        c = self._counters
        keep = self._journal is None
        for r in rows:
            if r.state == RowStatus.SENT:
                c.sent += 1
            elif r.state == RowStatus.FAILED:
                c.failed += 1
            elif r.state == RowStatus.SKIPPED:
                c.skipped += 1
            elif r.state == RowStatus.UNCERTAIN:
                c.uncertain += 1
            if keep and r.state != RowStatus.SENT:
                self.kept.append(r)
        self._meter.sample()
        self._meter.emit("sending")

    async def flusher(self) -> None:
        """The group commit: flush every FLUSH_INTERVAL until :meth:`close`."""
        # Never cancelled mid-write: a cancelled executor job that has not started yet
        # would silently drop the outcomes it carried (rows would stay "claimed").
        while not self._closing:
            # Woken early when the run ends: its last rows are not kept waiting a period.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), FLUSH_INTERVAL)
            await self.flush()

    def close(self) -> None:
        """End the group commit: the flusher makes its last flush and returns."""
        self._closing = True
        self._closed.set()

    def shutdown(self) -> None:
        """Wait for the journal's thread to finish its last write, and end it."""
        self._executor.shutdown(wait=True)

    def claim(self, seqs: list[int]) -> asyncio.Future[None]:
        """Claim a batch: move the run's claim mark past it (durable before the jobs go out)."""
        loop = asyncio.get_running_loop()
        journal = self._journal
        if journal is None or journal.commits_are_cheap:
            done: asyncio.Future[None] = loop.create_future()
            if journal is not None:
                try:
                    journal.claim_through(self._run_id, max(seqs))
                except BaseException as exc:  # surfaces where the write is awaited
                    done.set_exception(exc)
                    return done
            done.set_result(None)
            return done
        return loop.run_in_executor(self._executor, journal.claim_through, self._run_id, max(seqs))
