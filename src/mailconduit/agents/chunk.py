"""One chunk of a run, sent by one worker under a lease: what a Celery task does.

The chunk is claimed in the journal first (a new fencing epoch); a task whose chunk is
done, stopped or leased by a live worker returns at once, so a redelivered or duplicated
task costs nothing. A thread renews the lease; every outcome and claim is written only
while the epoch still holds, and no message goes out once the lease may have run out
(the limiter's gate), so a worker frozen past its lease neither records nor sends a row
another worker has taken. Rows an earlier holder claimed without an outcome are sent
again with the same Message-ID (the journal's ``uncertain``), as a local resume does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from mailconduit.agents.frozen import FrozenSource, materialize, spec_for_worker
from mailconduit.agents.limiter import SharedLimiter
from mailconduit.agents.settings import AgentSettings
from mailconduit.config import Connection, ExportMode, ExportSpec, ImplementationType
from mailconduit.delivery.execution import rate_for, server_size, session_opener
from mailconduit.delivery.jobs import build_jobs
from mailconduit.delivery.pool import SessionOpener
from mailconduit.delivery.prepare import prepare
from mailconduit.delivery.runner import Job, Runner
from mailconduit.errors import MailconduitError
from mailconduit.journal import Journal, RowState, RowStatus, RunStatus
from mailconduit.journal.agents import (
    DONE,
    FAILED,
    STOPPED,
    AgentStore,
    ChunkClaim,
    FrozenRun,
    RunStop,
    held_briefly,
    live_workers,
    sending_slots,
)
from mailconduit.smtp import SMTPSession

__all__ = ["ChunkLease", "FencedJournal", "run_chunk"]

log = logging.getLogger("mailconduit.agents")
T = TypeVar("T")


class ChunkLease:
    """The lease on one chunk, renewed by a thread; says when sending must stop.

    ``deadline`` is this process's monotonic time until which the lease surely holds
    (renewals measured from before they were asked, less a margin): past it, nothing is
    sent, even before the renewing thread has had a chance to run.
    """

    def __init__(self, store: AgentStore, claim: ChunkClaim, settings: AgentSettings) -> None:
        self.store = store
        self.claim = claim
        self.settings = settings
        self.lost = ""
        self.stop_reason = ""
        self._deadline = time.monotonic() + settings.lease_seconds - settings.lease_margin
        self._done = threading.Event()
        self._on_stop: Any = None
        self._thread = threading.Thread(target=self._keep, name="chunk-lease", daemon=True)

    def __enter__(self) -> ChunkLease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def on_stop(self, callback: Any) -> None:
        """``callback(status, reason)`` from whichever thread learns that the run is asked
        to stop (the renewing one, or the journal's on a write or claim)."""
        self._on_stop = callback

    def halt(self, status: RunStatus, reason: str) -> None:
        """The run is to stop: tell this chunk's runner once."""
        if self.stop_reason:
            return
        self.stop_reason = reason
        if self._on_stop is not None:
            self._on_stop(status, reason)

    def gate(self) -> str:
        """Empty while this worker may send; else why it may not."""
        if self.lost:
            return self.lost
        if time.monotonic() >= self._deadline:
            self.lost = (
                f"stopped: the lease on chunk {self.claim.chunk} ran out before it was renewed "
                "(another worker may take it); nothing more is sent or recorded here"
            )
        return self.lost

    def lose(self) -> None:
        if not self.lost:
            self.lost = (
                f"stopped: another worker took chunk {self.claim.chunk} over; nothing more is "
                "sent or recorded here"
            )

    def _keep(self) -> None:
        every = self.settings.lease_seconds / 3
        while not self._done.wait(every):
            asked = time.monotonic()
            try:
                held, stop = self.store.renew(self.claim, ttl=self.settings.lease_seconds)
            except Exception:  # the journal is unreachable now: the deadline decides
                log.warning("lease on chunk %s not renewed (journal unreachable)", self.claim.chunk)
                continue
            if not held:
                self.lose()
                return
            self._deadline = asked + self.settings.lease_seconds - self.settings.lease_margin
            if stop:
                self.halt(RunStatus.INTERRUPTED, stop)


class FencedJournal(Journal):
    """The journal as one chunk's runner sees it: outcomes and claims land only while the
    chunk's epoch holds; past that they are dropped and the lease is marked lost.

    Kept from chunk to chunk by the process (one per chunk being sent at a time, each with
    its own database connection): :meth:`for_chunk` takes one and points it at the chunk's
    lease, :meth:`release` gives it back.
    """

    _idle: ClassVar[dict[int, list[FencedJournal]]] = {}

    def __init__(self, lease: ChunkLease) -> None:
        super().__init__(held_briefly(lease.store.url, lease.settings.hold_seconds))
        self.chunk_lease = lease
        self.max_errors = 0

    @classmethod
    def for_chunk(cls, lease: ChunkLease, *, max_errors: int = 0) -> FencedJournal:
        """A fenced journal of this process, now for ``lease``'s chunk; ``max_errors`` (0:
        none) is the run's error budget, counted across all its chunks and workers."""
        idle = cls._idle.setdefault(os.getpid(), [])
        journal = idle.pop() if idle else cls(lease)
        journal.chunk_lease = lease
        journal.max_errors = max_errors
        return journal

    def release(self) -> None:
        """Done with this chunk: kept for the next one."""
        self._idle.setdefault(os.getpid(), []).append(self)

    def write_rows(self, run_id: str, rows: Sequence[RowState]) -> None:
        lease = self.chunk_lease
        if lease.lost:
            return
        failed = sum(1 for r in rows if r.state == RowStatus.FAILED) if self.max_errors else 0
        found = self.write_rows_guarded(
            run_id, rows, lease.store.fence_sql(lease.claim, failed=failed)
        )
        if found is None:
            lease.lose()
            return
        self._heed(RunStop.of(found))

    def claim_through(self, run_id: str, seq: int) -> None:
        lease = self.chunk_lease
        found = None if lease.gate() else lease.store.record_claimed(lease.claim, seq)
        if found is None:
            lease.lose()
            return
        self._heed(found)

    def _heed(self, run: RunStop) -> None:
        """Stop this chunk when the run was asked to stop, or when its failed rows (all its
        chunks' together) reached --max-errors: then the whole run is asked to pause."""
        lease = self.chunk_lease
        if run.reason:
            lease.halt(RunStatus.INTERRUPTED, run.reason)
        elif self.max_errors and run.failed_rows >= self.max_errors:
            reason = (
                f"{run.failed_rows} rows failed across the run's chunks (--max-errors "
                f"{self.max_errors}); fix the cause and resume"
            )
            lease.store.request_stop(
                lease.claim.run_id, status=RunStatus.PAUSED.value, reason=reason
            )
            lease.halt(RunStatus.PAUSED, reason)


def _shifted(items: Iterator[Job | RowState], offset: int) -> Iterator[Job | RowState]:
    """The chunk's messages numbered as in the whole run (a chunk counts from 1)."""
    for item in items:
        if isinstance(item, Job):
            item.seq += offset
            yield item
        else:
            yield dataclasses.replace(item, seq=item.seq + offset)


def worker_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


def run_chunk(
    run_id: str,
    chunk: int,
    *,
    settings: AgentSettings,
    connection: Callable[[str], Connection],
    allow_address: Any = None,
) -> str:
    """Claim and send one chunk, then the run's next queued chunks while the task is young
    (see :class:`_Chain`); returns what happened (for the worker's log).

    ``connection`` resolves the run's connection by name on this host: one it cannot use
    (its password does not decrypt with this host's key, say) fails the chunk with why.
    """
    store = AgentStore.shared(hold_seconds=settings.hold_seconds)
    owner = worker_owner()
    claim = store.claim(run_id, chunk, owner=owner, ttl=settings.lease_seconds)
    if claim is None:
        return "skipped: done, stopped or leased by a live worker"
    chain = _Chain(store, settings, connection, allow_address, run_id, owner)
    return "; ".join(asyncio_run(chain.run(claim)))


@dataclasses.dataclass
class _Claimed:
    """A claimed chunk and what the journal holds for sending it."""

    claim: ChunkClaim
    run: FrozenRun | None
    connection: Connection | None = None
    error: Exception | None = None  # why the connection cannot be had here


@dataclasses.dataclass
class _Reading:
    """A chunk read for sending: its spec, connection, checked rows and journal."""

    spec: ExportSpec
    connection: Connection
    journal: FencedJournal
    prepared: Any
    prior: list[RowState]


@dataclasses.dataclass(eq=False)
class _Chain:
    """The chunks one task sends in a row, through the same SMTP sessions.

    A chunk that ends well (finished, lease held, no stop asked) is followed by the run's
    first queued chunk, claimed here, for as long as the task is younger than
    ``chain_seconds``; the untried chunks after it are merged into it (see
    :meth:`AgentStore.claim_next`: at most a half of an even share of the rows left, and what
    this worker sends in ``chunk_seconds`` at the rate it just measured). Their own task
    messages, delivered later, find them taken or gone and return. Sessions a chunk's stream
    ended with (open, nothing in flight) serve the next chunk; a chunk's end is written by a
    thread while the next one starts.

    Measured on loopback (bench/RESULTS.md): a chunk of 1,000 rows takes a fifth of a second;
    one chunk per task left ~75 ms between chunks (the broker's round trip, a new event loop,
    new sessions, the journal's reads and writes in series), ~40 ms with the chain, and
    merging cuts how many boundaries there are (50 chunks sent as ~8). Tried and dropped: two
    chains side by side with half the sessions each (more CPU per row, slower), and a chunk's
    last writes overlapping the next chunk's start (no difference measured).
    """

    #: Sessions kept between chunks, at most.
    MAX_IDLE: ClassVar[int] = 64

    store: AgentStore
    settings: AgentSettings
    connection: Callable[[str], Connection]
    allow_address: Any
    run_id: str
    owner: str
    _idle: list[SMTPSession] = dataclasses.field(default_factory=list)
    _opener: SessionOpener | None = None
    _lease: ChunkLease | None = None  # of the chunk being sent
    _run: FrozenRun | None = None  # read once: a run's input does not change while it runs
    # The end of a chunk is written while the next one starts (in this thread, in order).
    _ender: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-end")
    )
    _ending: asyncio.Future[None] | None = None

    async def run(self, claim: ChunkClaim) -> list[str]:
        started = time.monotonic()
        outcomes: list[str] = []
        try:
            next_claim: ChunkClaim | None = claim
            while next_claim is not None:
                began = time.monotonic()
                outcome, ended_well = await self._one(self._claimed(next_claim))
                outcomes.append(f"chunk {next_claim.chunk} {outcome}")
                if not ended_well or time.monotonic() - started >= self.settings.chain_seconds:
                    break
                rows = next_claim.last_row - next_claim.first_row + 1
                rate = rows / max(time.monotonic() - began, 0.001)
                next_claim = self.store.claim_next(
                    self.run_id, owner=self.owner, ttl=self.settings.lease_seconds,
                    max_rows=int(rate * self.settings.chunk_seconds), workers=self._workers(),
                )  # fmt: skip
        finally:
            try:
                await self._ended()
            finally:
                self._ender.shutdown(wait=True)
                await self._close_idle()
        return outcomes

    def _workers(self) -> int:
        """Chunks the agent's live workers send at once (1 when it cannot be told)."""
        run = self._run
        if run is None:
            return 1
        return sending_slots(live_workers(self.store.workers(run.agent), self.settings.dead_after))

    async def _ended(self) -> None:
        """Wait for the last chunk's end to be written (its errors are raised here)."""
        ending, self._ending = self._ending, None
        if ending is not None:
            await ending

    # -- sessions, kept from chunk to chunk ------------------------------------------------

    def may_send(self) -> bool:
        """Every session's send gate: the lease of the chunk being sent still holds."""
        lease = self._lease
        return lease is not None and not lease.gate()

    async def open_session(self) -> SMTPSession:
        while self._idle:
            session = self._idle.pop()
            if session.is_open:
                return session
            session.close()
        assert self._opener is not None
        return await self._opener()

    def keep(self, session: SMTPSession) -> bool:
        if len(self._idle) >= self.MAX_IDLE:
            return False
        self._idle.append(session)
        return True

    async def _server_size(self) -> int:
        for session in self._idle:
            if session.is_open:
                return int(session.capabilities.size or 0)
        assert self._opener is not None
        return await server_size(self._opener)

    async def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for session in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.quit(wait=False), 5)
            session.close()

    # -- one chunk ---------------------------------------------------------------------------

    def _claimed(self, claim: ChunkClaim) -> _Claimed:
        """The claimed chunk's run and connection (blocking)."""
        run = self._run = self._run or self.store.frozen_run(claim.run_id)
        if run is None:
            return _Claimed(claim, None)
        try:
            return _Claimed(claim, run, self.connection(run.connection))
        except Exception as exc:  # reported as the chunk's failure, see _one
            return _Claimed(claim, run, error=exc)

    async def _one(self, claimed: _Claimed) -> tuple[str, bool]:
        """Send one claimed chunk; (what happened, whether the chain may go on)."""
        store, settings, claim, run = self.store, self.settings, claimed.claim, claimed.run
        run_id, chunk = claim.run_id, claim.chunk
        if claim.attempts > settings.max_attempts:
            reason = (
                f"chunk {chunk} given up: its worker stopped (killed or lost) "
                f"{claim.attempts - 1} times while sending it"
            )
            self._give_up(claim, reason)
            return reason, False
        if run is None:
            self._give_up(claim, "the run's input is gone")
            return "failed: no frozen input", False
        with ChunkLease(store, claim, settings) as lease:
            self._lease = lease
            try:
                if claimed.connection is None:
                    raise claimed.error or MailconduitError("the run's connection is unknown here")
                status, message = await self._send(run, lease, claimed.connection)
            except MailconduitError as exc:
                status, message = "failed", f"on {socket.gethostname()}: {exc}"
            except Exception as exc:  # a bug must end the chunk, not loop it through redeliveries
                log.exception("chunk %s/%s", run_id, chunk)
                status, message = "failed", f"internal error in a worker: {exc!r}"
        if lease.lost:
            log.warning("run %s chunk %s: %s", run_id, chunk, lease.lost)
            return lease.lost, False
        await self._ended()
        self._ending = asyncio.get_running_loop().run_in_executor(
            self._ender, self._end, lease, status, message
        )
        outcome = f"{status}: {message}" if message else status
        return outcome, status == "finished" and not lease.stop_reason

    def _give_up(self, claim: ChunkClaim, reason: str) -> None:
        self.store.fail_chunk(claim.run_id, claim.chunk, epoch=claim.epoch, reason=reason)
        finish_run_if_complete(self.store, claim.run_id)

    def _end(self, lease: ChunkLease, status: str, message: str) -> None:
        store, claim = self.store, lease.claim
        if status == "finished":
            store.end_chunk(claim, state=DONE, status=status, reason="")
        else:
            store.end_chunk(claim, state=FAILED if status == "failed" else STOPPED,
                            status=status, reason=message)  # fmt: skip
            if status in ("aborted", "paused") and not lease.stop_reason:
                store.request_stop(claim.run_id, status=status, reason=message)
        finish_run_if_complete(store, claim.run_id)

    def _read(self, run: FrozenRun, lease: ChunkLease, connection: Connection) -> _Reading:
        """The chunk's rows, checked, and what the journal holds of them (blocking)."""
        store, claim = self.store, lease.claim
        rows = store.frozen_rows(run.run_id, claim.first_row, claim.last_row)
        attach_dir = materialize(store, run.run_id, rows)
        source = FrozenSource(rows, location=run.location, columns=run.columns)
        spec = spec_for_worker(run.spec, source, attach_dir)
        # The checks of celery's own refusal are the coordinator's: here the chunk is sent.
        conn = dataclasses.replace(connection, implementation_type=ImplementationType.DEFAULT)
        # --max-errors counts the whole run (in the journal, see FencedJournal), not this chunk.
        journal = FencedJournal.for_chunk(lease, max_errors=spec.max_errors)
        try:
            prepared = prepare(spec, conn, sending=True)
        except BaseException:
            journal.release()
            raise
        # A chunk claimed for the first time has no rows in the journal yet.
        fresh = claim.attempts == 1 and claim.claimed_seq < claim.first_seq
        try:
            prior = (
                [] if fresh else journal.rows_between(run.run_id, claim.first_seq, claim.last_seq)
            )
        except BaseException:
            prepared.close()
            journal.close()
            raise
        return _Reading(spec, conn, journal, prepared, prior)

    async def _send(
        self, run: FrozenRun, lease: ChunkLease, connection: Connection
    ) -> tuple[str, str]:
        claim = lease.claim
        reading = self._read(run, lease, connection)
        spec, conn, journal = reading.spec, reading.connection, reading.journal
        try:
            # Every chunk opens sessions the same way (its connection and spec are the run's).
            if self._opener is None:
                self._opener = session_opener(conn, spec, self.allow_address, self.may_send)
            size_limit = 0
            if spec.mode is not ExportMode.ROW and spec.oversize != "fail":
                size_limit = await self._server_size()
            offset = claim.first_seq - 1
            jobs = build_jobs(
                reading.prepared, run.run_id,
                states={r.row_key: (r.state, r.attempts) for r in reading.prior},
                retry_failed=run.retry_failed, resend_uncertain=spec.resend_uncertain,
                size_limit=size_limit, claimed_seq=max(0, claim.claimed_seq - offset),
                partial={r.row_key: r for r in reading.prior if r.owed},
            )  # fmt: skip
            runner = Runner(
                run_id=run.run_id,
                spec=dataclasses.replace(spec, max_errors=0),
                connection=conn,
                jobs=_shifted(jobs, offset),
                open_session=self.open_session,
                journal=journal,
                total=None,
                concurrency=spec.concurrency or conn.concurrency,
                limiter=SharedLimiter(
                    rate_for(spec, conn), store=self.store, connection=conn.name, gate=lease.gate
                ),
                resend_uncertain=spec.resend_uncertain,
                keep_session=self.keep,
            )
            result = await _drive(runner, lease)
        except BaseException:
            journal.close()  # its connection may be broken: the next chunk opens a new one
            raise
        finally:
            reading.prepared.close()
        journal.release()
        return result.status, result.message


async def _drive(runner: Runner, lease: ChunkLease) -> Any:
    loop = asyncio.get_running_loop()

    def stop(status: RunStatus, reason: str) -> None:
        loop.call_soon_threadsafe(runner.stop, status, reason)

    lease.on_stop(stop)
    if lease.stop_reason:
        runner.stop(RunStatus.INTERRUPTED, lease.stop_reason)
    return await runner.run()


def asyncio_run(coro: Any) -> Any:
    from mailconduit.delivery import loop

    return loop.run(coro)


#: Run status for a chunk's ending status, worst first.
_WORST = (RunStatus.ABORTED, RunStatus.PAUSED, RunStatus.INTERRUPTED, RunStatus.FAILED)


def finish_run_if_complete(store: AgentStore, run_id: str) -> str:
    """Once every chunk has ended, write the run's status in the journal; returns it ("" while
    chunks are still queued or running)."""
    chunks = store.chunks(run_id)
    if not chunks or any(c.state not in (DONE, STOPPED, FAILED) for c in chunks):
        return ""
    run = store.frozen_run(run_id)
    status, message = RunStatus.FINISHED, ""
    ended = [c for c in chunks if c.state != DONE]
    if ended:
        rank: dict[str, int] = {s: n for n, s in enumerate(_WORST)}
        # Asked to stop: the status asked for counts (a pause for --max-errors stays a pause
        # even when the chunk that reached it had ended).
        statuses = [c.status for c in ended] + (
            [run.stop_status] if run and run.stop_reason else []
        )
        worst = min(statuses, key=lambda s: rank.get(s, len(_WORST)))
        status = RunStatus(worst) if worst in rank else RunStatus.FAILED
        reasons = [c.reason for c in ended if c.status == worst] + [c.reason for c in ended]
        message = (run.stop_reason if run is not None and run.stop_reason else "") or reasons[0]
    with Journal(store.url) as journal:
        journal.set_status(run_id, status, message=message, finished=status is RunStatus.FINISHED)
    return status
