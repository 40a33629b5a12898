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
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

from mailconduit.agents.frozen import FrozenSource, materialize, spec_for_worker
from mailconduit.agents.limiter import SharedLimiter
from mailconduit.agents.settings import AgentSettings
from mailconduit.config import Connection, ExportMode, ImplementationType
from mailconduit.delivery.execution import rate_for, server_size, session_opener
from mailconduit.delivery.jobs import build_jobs
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
    RunStop,
    held_briefly,
)

__all__ = ["ChunkLease", "FencedJournal", "run_chunk"]

log = logging.getLogger("mailconduit.agents")


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

    One per pool process, kept from chunk to chunk (a process sends one chunk at a time):
    :meth:`for_chunk` points it at the next chunk's lease.
    """

    _per_process: ClassVar[dict[int, FencedJournal]] = {}

    def __init__(self, lease: ChunkLease) -> None:
        super().__init__(held_briefly(lease.store.url, lease.settings.hold_seconds))
        self.chunk_lease = lease
        self.max_errors = 0

    @classmethod
    def for_chunk(cls, lease: ChunkLease, *, max_errors: int = 0) -> FencedJournal:
        """The process's fenced journal, now for ``lease``'s chunk; ``max_errors`` (0: none)
        is the run's error budget, counted across all its chunks and workers."""
        journal = cls._per_process.get(os.getpid())
        if journal is None:
            journal = cls._per_process[os.getpid()] = cls(lease)
        journal.chunk_lease = lease
        journal.max_errors = max_errors
        return journal

    @classmethod
    def drop(cls) -> None:
        cls._per_process.pop(os.getpid(), None)

    def write_rows(self, run_id: str, rows: Sequence[RowState]) -> None:
        lease = self.chunk_lease
        if lease.lost:
            return
        failed = sum(1 for r in rows if r.state == RowStatus.FAILED) if self.max_errors else 0
        found = self.write_rows_guarded(run_id, rows, lease.store.fence_sql(lease.claim, failed=failed))
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
            lease.store.request_stop(lease.claim.run_id, status=RunStatus.PAUSED.value, reason=reason)
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
    """Claim and send one chunk; returns what happened (for the worker's log).

    ``connection`` resolves the run's connection by name on this host: one it cannot use
    (its password does not decrypt with this host's key, say) fails the chunk with why.
    """
    store = AgentStore.shared(hold_seconds=settings.hold_seconds)
    claim = store.claim(run_id, chunk, owner=worker_owner(), ttl=settings.lease_seconds)
    if claim is None:
        return "skipped: done, stopped or leased by a live worker"
    if claim.attempts > settings.max_attempts:
        reason = (
            f"chunk {chunk} given up: its worker stopped (killed or lost) "
            f"{claim.attempts - 1} times while sending it"
        )
        store.fail_chunk(run_id, chunk, epoch=claim.epoch, reason=reason)
        finish_run_if_complete(store, run_id)
        return reason
    run = store.frozen_run(run_id)
    if run is None:
        store.fail_chunk(run_id, chunk, epoch=claim.epoch, reason="the run's input is gone")
        return "failed: no frozen input"
    with ChunkLease(store, claim, settings) as lease:
        try:
            conn = connection(run.connection)
            status, message = _send(store, run, claim, lease, conn, allow_address)
        except MailconduitError as exc:
            status, message = "failed", f"on {socket.gethostname()}: {exc}"
        except Exception as exc:  # a bug must end the chunk, not loop it through redeliveries
            log.exception("chunk %s/%s", run_id, chunk)
            status, message = "failed", f"internal error in a worker: {exc!r}"
    if lease.lost:
        log.warning("run %s chunk %s: %s", run_id, chunk, lease.lost)
        return lease.lost
    if status == "finished":
        store.end_chunk(claim, state=DONE, status=status, reason="")
    else:
        store.end_chunk(claim, state=FAILED if status == "failed" else STOPPED,
                        status=status, reason=message)  # fmt: skip
        if status in ("aborted", "paused") and not lease.stop_reason:
            store.request_stop(run_id, status=status, reason=message)
    finish_run_if_complete(store, run_id)
    return f"{status}: {message}" if message else status


def _send(
    store: AgentStore,
    run: Any,
    claim: ChunkClaim,
    lease: ChunkLease,
    connection: Connection,
    allow_address: Any,
) -> tuple[str, str]:
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
        try:
            prior = journal.rows_between(run.run_id, claim.first_seq, claim.last_seq)
            states = {r.row_key: (r.state, r.attempts) for r in prior}
            partial = {r.row_key: r for r in prior if r.owed}
            offset = claim.first_seq - 1
            claimed_local = max(0, claim.claimed_seq - offset)
            size_limit = 0
            opener = session_opener(conn, spec, allow_address, lambda: not lease.gate())
            if spec.mode is not ExportMode.ROW and spec.oversize != "fail":
                size_limit = asyncio_run(server_size(opener))
            jobs = build_jobs(
                prepared, run.run_id, states=states, retry_failed=run.retry_failed,
                resend_uncertain=spec.resend_uncertain, size_limit=size_limit,
                claimed_seq=claimed_local, partial=partial,
            )  # fmt: skip
            limiter = SharedLimiter(
                rate_for(spec, conn), store=store, connection=conn.name, gate=lease.gate
            )
            runner = Runner(
                run_id=run.run_id,
                spec=dataclasses.replace(spec, max_errors=0),
                connection=conn,
                jobs=_shifted(jobs, offset),
                open_session=opener,
                journal=journal,
                total=None,
                concurrency=spec.concurrency or conn.concurrency,
                limiter=limiter,
                resend_uncertain=spec.resend_uncertain,
            )
            result = asyncio_run(_drive(runner, lease))
        finally:
            prepared.close()
    except BaseException:
        journal.close()  # its connection may be broken: the next chunk opens a new one
        FencedJournal.drop()
        raise
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
        statuses = [c.status for c in ended] + ([run.stop_status] if run and run.stop_reason else [])
        worst = min(statuses, key=lambda s: rank.get(s, len(_WORST)))
        status = RunStatus(worst) if worst in rank else RunStatus.FAILED
        reasons = [c.reason for c in ended if c.status == worst] + [c.reason for c in ended]
        message = (run.stop_reason if run is not None and run.stop_reason else "") or reasons[0]
    with Journal(store.url) as journal:
        journal.set_status(
            run_id, status, message=message, finished=status is RunStatus.FINISHED
        )
    return status
