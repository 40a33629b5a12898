"""The send loop: claim rows, hand messages to a pool of SMTP sessions, record outcomes.

    producer ──► claim (journal, durable) ──► queue ──► N sessions (pipelined) ──► outcome
       ▲                                                                         │
       └──── retry later (back-off) / slow down (throttle) ◄─────────────────────┘
                                          outcomes ──► journal (group commit) ──► progress

A row is reported ``sent`` only after the server's 250 to the final "." AND after that
outcome is durable in the journal. Rows handed to a session whose fate is unknown when
the run stops are ``uncertain``; by default they are sent again with the same
Message-ID on resume, as an MTA would.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mailconduit.config import Connection, ExportSpec
from mailconduit.delivery.events import Progress, ProgressCallback
from mailconduit.delivery.feed import Feed, Job, Work
from mailconduit.delivery.outcome import Outcome, outcome_of
from mailconduit.delivery.ratelimit import RateLimiter
from mailconduit.delivery.report import ExportReport
from mailconduit.delivery.retry import next_delay
from mailconduit.errors import (
    AuthenticationError,
    MailconduitError,
    SMTPError,
)
from mailconduit.journal import Journal, RowState, RowStatus, RunStatus
from mailconduit.smtp import (
    DeliveryStatus,
    RecipientStatus,
    SendOutcome,
    SMTPSession,
    StreamEnd,
)

__all__ = ["CANCELLED", "Job", "Outcome", "RunResult", "Runner", "SessionOpener", "outcome_of"]

#: How often buffered outcomes are committed (group commit).
FLUSH_INTERVAL = 0.02
#: Most rows claimed in one journal transaction.
CLAIM_BATCH = 512
#: The producer lets the sessions write after building this many bytes of messages (or 64
#: messages), so a batch of large messages does not hold the loop while the server waits.
#: Receipt (2,000 invoices of 135 KB, 4 runs each, bench/RESULTS.md): 2.68 s -> 2.15 s wall.
YIELD_BYTES = 256 * 1024
#: Longest wait for in-flight transactions when a run is stopped.
DRAIN_SECONDS = 30.0
#: Why a run stopped when the task awaiting it was cancelled.
CANCELLED = "stopped: the task running it was cancelled"
#: Consecutive failed connection attempts (with back-off) before the run gives up.
MAX_CONNECT_FAILURES = 5


SessionOpener = Callable[[], Awaitable[SMTPSession]]


@dataclass
class RunResult:
    """How a runner's run ended, and why (empty when it finished)."""

    status: RunStatus
    message: str = ""


@dataclass
class _Counters:
    sent: int = 0
    failed: int = 0
    skipped: int = 0
    uncertain: int = 0
    resumed: int = 0
    uncertain_resent: int = 0
    retrying: int = 0


@dataclass
class Runner:
    """Runs one export's delivery; built by :mod:`mailconduit.delivery.execution`."""

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
    counters: _Counters = field(default_factory=_Counters)
    kept: list[RowState] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._work = Work()
        # The same objects under short names: the runner's hot paths use them directly.
        self._ready = self._work.ready
        self._open = self._work.open
        self._in_flight = self._work.in_flight
        self._wakeup = self._work.wakeup
        self._source = Feed(self._work, self.limiter, self)
        self._crash: BaseException | None = None
        self._closing = False
        self._forced = asyncio.Event()
        self._no_more = ""  # set: produce nothing more, let claimed rows finish
        self.duplicate_outcomes = 0
        self._retry_handles: dict[asyncio.TimerHandle, Job] = {}
        self._buffer: list[RowState] = []
        self._stop_reason: tuple[RunStatus, str] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._started = time.monotonic()
        self._rate_window: deque[tuple[float, int]] = deque(maxlen=50)
        self._window = max(64, self.concurrency * 16)
        # The producer, once the window is full, waits until it is this empty: it then
        # builds a batch in one go instead of one message per finished one.
        # Measured: ~120 -> ~90 us of client CPU per message, with Feed's pull (bench/RESULTS.md).
        self._low_water = self._window // 2
        self._space = asyncio.Event()
        self._space.set()
        self._connect_failures = 0
        self._last_error = ""
        self._failed_seen = 0
        self._skipped_seen = 0
        self._halted = asyncio.Event()
        self._closed = asyncio.Event()
        # The first session logs in alone: bad credentials then cost one refused AUTH,
        # not one per session (providers lock accounts after a few). Without credentials
        # there is nothing to protect: every session connects at once.
        self._first_login = asyncio.Event()
        if not self.connection.logs_in:
            self._first_login.set()

    # ---------------------------------------------------------------- control

    def stop(self, status: RunStatus, message: str) -> None:
        """Stop taking new rows; first reason wins. In-flight transactions still finish."""
        if self._stop_reason is None:
            self._stop_reason = (status, message)
        self._halted.set()
        self._wakeup.set()
        self._space.set()

    @property
    def stopping(self) -> bool:
        return self._stop_reason is not None

    # ---------------------------------------------------------------- journal

    async def _write(self, rows: list[RowState]) -> None:
        if self.journal is None or not rows:
            return
        if self.journal.commits_are_cheap:
            # No thread: handing a batch to one costs more (GIL hand-offs on every row
            # the driver steps through) than the write itself.
            # Measured: journal cost +14 % -> +9 % of an export, with the store's shortcuts (bench/RESULTS.md).
            self.journal.write_rows(self.run_id, rows)
            return
        loop = asyncio.get_running_loop()
        # Shielded: once handed to the journal thread, a batch is written even if the
        # awaiting task is cancelled (Ctrl-C), so no outcome is lost on the way.
        await asyncio.shield(
            loop.run_in_executor(self._executor, self.journal.write_rows, self.run_id, rows)
        )

    def _record(self, row: RowState) -> None:
        self._buffer.append(row)
        if row.state == RowStatus.FAILED:
            self._failed_seen += 1
        elif row.state == RowStatus.SKIPPED:
            self._skipped_seen += 1
        else:
            return
        # Checked as each outcome is known, not at the next flush: a broken server must not
        # get a whole pipeline's worth of rows more than --max-errors allows.
        max_errors = self.spec.max_errors
        if max_errors and self._failed_seen >= max_errors:
            self.stop(
                RunStatus.PAUSED,
                f"{self._failed_seen} rows failed (--max-errors {max_errors}); "
                "fix the cause and resume",
            )
        if self.spec.fail_fast and row.state == RowStatus.SKIPPED:
            # A row that cannot be built: take no more rows, but the rows before it
            # (already claimed) still go out, so the run stops exactly at this row.
            self._no_more = f"stopped at row {row.row_number}, which cannot be sent (--fail-fast)"
            self._space.set()
        elif self.spec.fail_fast:
            self.stop(RunStatus.ABORTED, "stopped at the first failed row (--fail-fast)")

    async def _flush(self) -> None:
        rows, self._buffer = self._buffer, []
        if not rows:
            return
        await self._write(rows)
        c = self.counters
        now = time.monotonic()
        for r in rows:
            if r.state == RowStatus.SENT:
                c.sent += 1
            elif r.state == RowStatus.FAILED:
                c.failed += 1
            elif r.state == RowStatus.SKIPPED:
                c.skipped += 1
            elif r.state == RowStatus.UNCERTAIN:
                c.uncertain += 1
            if self.journal is None and r.state != RowStatus.SENT:
                self.kept.append(r)
        self._rate_window.append((now, c.sent))
        self._emit("sending")

    async def _flusher(self) -> None:
        # Never cancelled mid-write: a cancelled executor job that has not started yet
        # would silently drop the outcomes it carried (rows would stay "claimed").
        while not self._closing:
            # Woken early when the run ends: its last rows are not kept waiting a period.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), FLUSH_INTERVAL)
            await self._flush()

    def _rate(self) -> float:
        if len(self._rate_window) < 2:
            elapsed = time.monotonic() - self._started
            return self.counters.sent / elapsed if elapsed > 0 else 0.0
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def _emit(self, phase: str, message: str = "") -> None:
        if self.progress is None:
            return
        c = self.counters
        self.progress(
            Progress(
                run_id=self.run_id,
                phase=phase,
                total=self.total,
                sent=c.sent,
                failed=c.failed,
                skipped=c.skipped,
                uncertain=c.uncertain,
                retrying=c.retrying,
                in_flight=len(self._in_flight),
                elapsed=time.monotonic() - self._started,
                rate=self._rate(),
                message=message,
                resumed=c.resumed,
            )
        )

    # ---------------------------------------------------------------- producer

    async def _produce(self) -> None:
        """Build messages and claim them in batches; a batch's claim is written while the
        next batch is being built, and its jobs reach the sessions once it is durable."""
        claims: list[int] = []  # positions of the jobs built since the last claim
        ready: list[Job] = []
        writing: asyncio.Future[None] | None = None
        written: list[Job] = []
        count = 0
        built = 0  # bytes built since the loop last ran the sessions

        async def hand_over() -> None:
            nonlocal writing, written
            if writing is not None:
                await writing
                self._ready.extend(written)
                self._wakeup.set()
                writing, written = None, []

        try:
            for item in self.jobs:
                if self.stopping or self._no_more:
                    break
                if isinstance(item, RowState):
                    if item.state is RowStatus.RESUMED:
                        self.counters.resumed += 1
                    else:
                        self._record(item)  # skipped (invalid) or held uncertain
                    continue
                job = item
                if job.uncertain_before:
                    self.counters.uncertain_resent += 1
                    job.counted_uncertain = True
                job.attempts += 1
                job.first_try = time.monotonic()
                claims.append(job.seq)
                ready.append(job)
                self._open.add(id(job))
                count += 1
                idle = not self._ready and (writing is None or writing.done())
                if len(claims) >= CLAIM_BATCH or (idle and len(claims) >= 8):
                    await hand_over()
                    writing, written = self._start_write(claims), ready
                    claims, ready = [], []
                elif writing is not None and writing.done():
                    await hand_over()
                if len(self._open) >= self._window:
                    await hand_over()
                    if claims:
                        writing, written = self._start_write(claims), ready
                        claims, ready = [], []
                        await hand_over()
                    while len(self._open) > self._low_water and not (
                        self.stopping or self._no_more
                    ):
                        self._space.clear()
                        await self._space.wait()
                built += len(job.data)
                if count % 64 == 0 or built >= YIELD_BYTES:
                    built = 0
                    await asyncio.sleep(0)
            await hand_over()
            if claims and not self.stopping:
                writing, written = self._start_write(claims), ready
                await hand_over()
        finally:
            # A batch whose claim was being written when the run stopped is journaled as
            # claimed: hand it over so the run's end records it as not sent (retry).
            if writing is not None:
                with contextlib.suppress(Exception):
                    await writing
                self._ready.extend(written)
            self._work.producer_done = True
            self._wakeup.set()

    def _start_write(self, seqs: list[int]) -> asyncio.Future[None]:
        """Claim a batch: move the run's claim mark past it (durable before the jobs go out)."""
        loop = asyncio.get_running_loop()
        if self.journal is None or self.journal.commits_are_cheap:
            done: asyncio.Future[None] = loop.create_future()
            if self.journal is not None:
                try:
                    self.journal.claim_through(self.run_id, max(seqs))
                except BaseException as exc:  # surfaces where the write is awaited
                    done.set_exception(exc)
                    return done
            done.set_result(None)
            return done
        return loop.run_in_executor(
            self._executor, self.journal.claim_through, self.run_id, max(seqs)
        )

    # ---------------------------------------------------------------- sessions

    def _on_send(self, outcome: SendOutcome) -> None:
        job = outcome.token
        assert isinstance(job, Job)
        if isinstance(outcome.error, AuthenticationError):
            self.stop(
                RunStatus.ABORTED,
                f"the server refused the credentials: {outcome.error}; nothing more was sent",
            )
        if (
            outcome.status is DeliveryStatus.SENT
            and not job.refused
            and all(r.status is RecipientStatus.ACCEPTED for r in outcome.recipients)
        ):  # the common case: no refused or deferred recipient to sort out
            # Measured: 0.55-0.8 us against 5.6-8 us through outcome_of (bench/delivery_bench.py).
            self._finish(job, self._state(job, RowStatus.SENT, Outcome(DeliveryStatus.SENT, outcome.code, outcome.enhanced, outcome.text)))
            return
        self._on_outcome(job, outcome_of(outcome))

    async def _session_worker(self, index: int) -> None:
        try:
            if index > 0 and not await self._until(self._first_login):
                return
            await self._session_loop()
        except Exception as exc:
            self._crash = exc
            self.stop(RunStatus.FAILED, f"internal error in a session: {exc!r}")
            raise
        finally:
            if index == 0:
                self._first_login.set()  # e.g. nothing to send: never keep the others waiting

    async def _session_loop(self) -> None:
        while not self.stopping:
            if self._source_closed():
                return
            try:
                session = await self.open_session()
            except AuthenticationError as exc:
                self.stop(
                    RunStatus.ABORTED, f"the server refused the credentials: {exc}; nothing more was sent"
                )
                return
            except (SMTPError, OSError) as exc:
                self._first_login.set()  # not a credentials problem: the others may try
                self._connect_failures += 1
                self._last_error = str(exc)
                if self._connect_failures >= MAX_CONNECT_FAILURES:
                    self.stop(RunStatus.INTERRUPTED, f"cannot open an SMTP session: {exc}")
                    return
                await self._pause(min(30.0, 0.25 * 2 ** min(self._connect_failures, 7)))
                continue
            except MailconduitError as exc:
                self.stop(RunStatus.ABORTED, str(exc))
                return
            self._connect_failures = 0
            self._first_login.set()
            try:
                result = await session.stream(self._source, self._on_send)
            finally:
                if session.is_open and self._source_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(session.quit(wait=False), 5)
                session.close()
            if result.reason is StreamEnd.SOURCE_EXHAUSTED:
                return
            if result.reason is StreamEnd.SERVER_CLOSING:
                if self.limiter is not None:
                    self.limiter.throttle()
                await self._pause(1.0)
            elif result.reason is StreamEnd.CONNECTION_LOST:
                await self._pause(0.2)

    async def _pause(self, seconds: float) -> None:
        """Sleep before reconnecting, but no longer than until the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._halted.wait(), seconds)

    async def _until(self, event: asyncio.Event) -> bool:
        """Wait for ``event``; False if the run stopped first."""
        if not event.is_set():
            waiters = {
                asyncio.ensure_future(event.wait()),
                asyncio.ensure_future(self._halted.wait()),
            }
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        return event.is_set() and not self.stopping

    def _source_closed(self) -> bool:
        """True once nothing more will be handed to a session (see :class:`_Feed`)."""
        return self._source.ended

    def _finish(self, job: Job, state: RowState) -> None:
        self._in_flight.pop(id(job), None)
        if id(job) not in self._open:
            self.duplicate_outcomes += 1  # a second outcome for the same job: keep the first
            return
        self._open.discard(id(job))
        # Job and envelope refer to each other: unlinked, the message's bytes are freed now,
        # not at the next full garbage collection (hundreds of messages later: 100 MB of
        # invoices with their PDFs).
        job.envelope = None
        self._record(state)
        if len(self._open) <= self._low_water:
            self._space.set()
        if self._work.producer_done and not self._open:
            self._wakeup.set()

    def _state(
        self, job: Job, state: RowStatus, outcome: Outcome, *, owed: tuple[str, ...] | None = None
    ) -> RowState:
        refused = job.refused
        if outcome.refused:
            known = {r[0] for r in outcome.refused}
            refused = tuple(r for r in refused if r[0] not in known) + outcome.refused
        if not job.narrowed or state == RowStatus.SENT:
            owed = ()
        elif state == RowStatus.FAILED:
            # What --retry-failed sends to: every recipient not served yet, and only those.
            unserved = {*job.owed, *(r[0] for r in refused)}
            owed = tuple(r for r in job.recipients if r in unserved)
        elif owed is None:
            answered = {r[0] for r in refused}
            owed = tuple(r for r in job.owed if r not in answered)
        return RowState(
            row_key=job.row_key,
            seq=job.seq,
            row_number=job.row_number,
            state=state,
            attempts=job.attempts,
            recipients=tuple(job.recipients),
            message_id=job.message_id,
            code=outcome.code,
            enhanced=outcome.enhanced,
            reply=outcome.text,
            detail=refused,
            owed=owed,
        )

    def _on_outcome(self, job: Job, outcome: Outcome) -> None:
        status = outcome.status
        if outcome.refused:
            # Refused in this transaction for good; a later one (452 deferrals) must not drop them.
            known = {r[0] for r in outcome.refused}
            job.refused = tuple(r for r in job.refused if r[0] not in known) + outcome.refused
        if status is DeliveryStatus.SENT:
            if outcome.deferred:
                # 452 for some recipients: the accepted ones got it; the rest go again alone.
                self._retry(job, outcome, recipients=list(outcome.deferred))
                return
            self._finish(job, self._state(job, RowStatus.SENT, outcome))
            return
        if status is DeliveryStatus.FAILED:
            self._finish(job, self._state(job, RowStatus.FAILED, outcome))
            return
        if outcome.throttled and self.limiter is not None:
            self.limiter.throttle()
        if status is DeliveryStatus.UNCERTAIN and not self.resend_uncertain:
            self._finish(job, self._state(job, RowStatus.UNCERTAIN, outcome))
            return
        if status is DeliveryStatus.UNCERTAIN:
            job.uncertain_before = True
            if self.stopping:  # not resent in this run: the journal must say uncertain
                self._finish(job, self._state(job, RowStatus.UNCERTAIN, outcome))
                return
        if outcome.refused and outcome.deferred:
            # Some refused for good, the rest deferred: only the deferred ones go again.
            self._retry(job, outcome, recipients=list(outcome.deferred))
            return
        self._retry(job, outcome)

    def _retry(self, job: Job, outcome: Outcome, *, recipients: list[str] | None = None) -> None:
        """Try the job again after a back-off, or give up on it (failed) when the policy says so.

        ``recipients``: only these are tried again (the others were served or refused); the
        journal learns it at once, so a run stopped or killed before they are served
        resends to them only.
        """
        if recipients is not None:
            job.narrow(recipients)
        delay = next_delay(self.spec.retry, job.attempts, elapsed=time.monotonic() - job.first_try)
        if delay is None or self.stopping:
            if delay is None:
                text = f"gave up after {job.attempts} attempt(s): {outcome.text}".strip()
                if job.uncertain_before and outcome.status is not DeliveryStatus.UNCERTAIN:
                    text += "; an earlier attempt may have been delivered"
                # When other recipients already had their answer, the ones still deferred
                # are listed too: the row's detail then accounts for every recipient.
                answered = {r[0] for r in outcome.refused}
                left = tuple(
                    r for r in (job.owed if job.narrowed else job.recipients) if r not in answered
                )
                gave_up = (
                    tuple((r, outcome.code, outcome.text) for r in left) if job.narrowed else ()
                )
                final = Outcome(
                    outcome.status, outcome.code, outcome.enhanced, text, outcome.refused + gave_up
                )
                # A row one of whose attempts may have been delivered is not "failed": it
                # stays uncertain (resume resends it with the same Message-ID, or holds it).
                state = self._pending_state(job, RowStatus.FAILED)
                self._finish(job, self._state(job, state, final, owed=left))
            else:  # stopping: not final, resume sends it (to the recipients still owed)
                self._finish(job, self._state(job, self._pending_state(job, RowStatus.RETRY), outcome))
            return
        if recipients is not None and self.journal is not None:
            # Partly delivered: journaled as in progress with the recipients still owed (one
            # more write, for such rows only), overwritten by the row's outcome later.
            self._buffer.append(self._state(job, RowStatus.CLAIMED, outcome))
        if job.uncertain_before and not job.counted_uncertain:
            job.counted_uncertain = True
            self.counters.uncertain_resent += 1
        self._in_flight.pop(id(job), None)
        if not job.narrowed:
            job.envelope = None
        self.counters.retrying += 1
        loop = asyncio.get_running_loop()

        def again() -> None:
            self._retry_handles.pop(handle, None)
            self.counters.retrying -= 1
            job.attempts += 1
            self._ready.appendleft(job)
            self._wakeup.set()

        handle = loop.call_later(delay, again)
        self._retry_handles[handle] = job

    @staticmethod
    def _pending_state(job: Job, otherwise: RowStatus) -> RowStatus:
        """How a row given up or left over is journaled: uncertain once an attempt may have
        delivered it (so --no-resend-uncertain holds it), else ``otherwise``."""
        return RowStatus.UNCERTAIN if job.uncertain_before else otherwise

    # ---------------------------------------------------------------- run

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        self._emit("started")
        flusher = asyncio.create_task(self._flusher())
        producer = asyncio.create_task(self._produce())
        workers = [asyncio.create_task(self._session_worker(i)) for i in range(self.concurrency)]
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
            self._source.close()
            for h, job in list(self._retry_handles.items()):
                h.cancel()
                self._ready.append(job)
            self._retry_handles.clear()
            self._settle_leftovers()
            self._closing = True
            self._closed.set()
            await flusher
            await self._flush()
            for sig in installed:
                loop.remove_signal_handler(sig)
            self._executor.shutdown(wait=True)
        if self._stop_reason is not None:
            status, message = self._stop_reason
        elif self._no_more:
            status, message = RunStatus.ABORTED, self._no_more
        else:
            status, message = RunStatus.FINISHED, ""
        self._emit("done", message)
        return RunResult(status, message)

    def _on_signal(self, sig: signal.Signals) -> None:
        """First Ctrl-C/SIGTERM: stop gracefully. A second one: stop waiting for the server."""
        if self.stopping:
            self._forced.set()
            return
        self.stop(RunStatus.INTERRUPTED, f"stopped by {signal.Signals(sig).name}")

    async def _drain(self, workers: list[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        """Wait for the sessions to finish; after a stop, for at most DRAIN_SECONDS more.

        Returns the sessions still busy then (their rows are uncertain).
        """
        pending: set[asyncio.Task[None]] = set(workers)
        halted = asyncio.ensure_future(self._halted.wait())
        try:
            while pending and not self.stopping:
                await asyncio.wait({*pending, halted}, return_when=asyncio.FIRST_COMPLETED)
                pending = {w for w in pending if not w.done()}
        finally:
            halted.cancel()
        if pending:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_SECONDS
            forced = asyncio.ensure_future(self._forced.wait())
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

    def _settle_leftovers(self) -> None:
        """Rows never written to a server go back to pending; in-flight ones are uncertain."""
        for job in list(self._ready):
            self._record(
                self._state(
                    job,
                    self._pending_state(job, RowStatus.RETRY),
                    Outcome(DeliveryStatus.RETRY, text="not sent before the run stopped"),
                )
            )
        self._ready.clear()
        for handle_job in list(self._in_flight.values()):
            self._record(
                self._state(
                    handle_job,
                    RowStatus.UNCERTAIN,
                    Outcome(
                        DeliveryStatus.UNCERTAIN, text="the run stopped while this message was with the server"
                    ),
                )
            )
        self._in_flight.clear()


def report_for(runner: Runner, result: RunResult, *, elapsed: float) -> ExportReport:
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
